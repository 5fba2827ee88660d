import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createLogger } from '../logger.ts';
import { LogSink } from './log-sink.ts';

describe('LogSink', () => {
  let dir: string;
  let file: string;
  let fd: number;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-sink-'));
    file = join(dir, 'out.log');
    fd = openSync(file, 'w');
  });
  afterEach(async () => {
    closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  });

  test('writes every line, in order, once flushed', async () => {
    const sink = new LogSink({ fd });
    const lines = Array.from({ length: 500 }, (_, i) => `{"n":${i},"pad":"${'p'.repeat(i % 50)}"}\n`);
    for (const line of lines) expect(sink.write(line)).toBe(true);
    // Nothing written synchronously: the lines wait for the thread pool.
    expect(await sink.flush(5000)).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(lines.join(''));
    expect(sink.pendingBytes).toBe(0);
    expect(sink.dropped).toBe(0);
  });

  test('a buffer past maxBufferBytes drops new lines and counts them', async () => {
    const sink = new LogSink({ fd, maxBufferBytes: 1000, maxDelayMs: 10_000 });
    const line = `${'x'.repeat(99)}\n`;
    const kept = Array.from({ length: 30 }, () => sink.writeDeferred(line)).filter(Boolean).length;
    expect(kept).toBe(10);
    expect(sink.dropped).toBe(20);
    expect(await sink.flush(5000)).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(line.repeat(10));
  });

  test('flushSync writes what is buffered (process exit)', () => {
    const sink = new LogSink({ fd, maxDelayMs: 10_000 });
    sink.writeDeferred('a\n');
    sink.write('b\n');
    sink.flushSync();
    expect(readFileSync(file, 'utf8')).toBe('a\nb\n');
  });

  test('a plain write goes out at the end of the event-loop turn; a deferred one waits for its timer', async () => {
    const sink = new LogSink({ fd, maxDelayMs: 10_000 });
    sink.writeDeferred('access\n');
    await new Promise((r) => setTimeout(r, 50));
    expect(readFileSync(file, 'utf8')).toBe('');
    sink.write('reloaded\n');
    await expect
      .poll(() => readFileSync(file, 'utf8'), { timeout: 5000, interval: 5 })
      .toBe('access\nreloaded\n');
  });

  test('a descriptor that refuses writes (EBADF) drops and counts every line instead of throwing', async () => {
    const readOnly = openSync(file, 'r');
    const sink = new LogSink({ fd: readOnly, maxDelayMs: 1 });
    sink.write('a\n');
    sink.write('b\n');
    expect(await sink.flush(5000)).toBe(false);
    expect(sink.write('c\n')).toBe(false);
    expect(sink.dropped).toBe(3);
    closeSync(readOnly);
  });
});

describe('createLogger format: pretty', () => {
  test('writes human-readable lines, not JSON', () => {
    const out: string[] = [];
    const logger = createLogger('info', { write: (s: string) => void out.push(s) }, { format: 'pretty' });
    logger.info({ status: 403, reqId: 'r-1' }, 'request');
    expect(out).toHaveLength(1);
    const text = out[0]!;
    expect(() => JSON.parse(text)).toThrow();
    expect(text).toMatch(/INFO/);
    expect(text).toContain('request');
    expect(text).toMatch(/status: 403/);
    expect(text).toMatch(/reqId: "r-1"/);
  });
});
