import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createAccessLog, milliseconds } from './access-log.ts';
import { RequestRecord } from './record.ts';

/** A pino logger whose destination keeps the lines (what the access log hands to stdout). */
function capture(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ name: 'portcullis' }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

/** The record's metrics hooks run per upstream attempt, which these tests do not make. */
const NO_METRICS = {} as ConstructorParameters<typeof RequestRecord>[4];

describe('access-log durations', () => {
  it('are written as JSON writes the duration rounded to the µs', () => {
    const samples = [
      0, 0.0004, 0.0005, 0.001, 0.01, 0.1, 0.5, 0.999, 0.9995, 1, 1.1, 1.01, 1.001, 12.345, 999.999,
    ];
    for (let i = 0; i < 2000; i++) samples.push(Math.random() * 10 ** ((i % 7) - 1));
    samples.push(2147483.647, 2147483.648, 5e6 + 0.25); // around and past 2^31 µs
    for (const ms of samples) {
      expect(milliseconds(ms), String(ms)).toBe(JSON.stringify(Math.round(ms * 1000) / 1000));
    }
  });
});

describe('access-log line', () => {
  it('is the line pino would write for its fields, with a time within the request', () => {
    const { logger, lines } = capture();
    const log = createAccessLog(logger);
    const before = Date.now();
    const rec = new RequestRecord('id-1', 'GET', '/p/ä "q"', '203.0.113.9', NO_METRICS, undefined);
    rec.attempts = 2;
    rec.upstreamMs = 1.5;
    rec.upstream = 'http://127.0.0.1:1';
    log(rec, 200, 12, performance.now() - rec.start, false);
    const after = Date.now();
    expect(lines).toHaveLength(1);
    const line = lines[0] as string;
    expect(line.endsWith('}\n')).toBe(true);
    const entry = JSON.parse(line) as Record<string, unknown>;
    // The same fields, in the same order, as pino's own line for them (its time aside).
    const fields = { ...entry };
    for (const k of ['level', 'time', 'name', 'msg']) delete fields[k];
    logger.info(fields, 'request');
    const pinos = JSON.parse(lines[1] as string) as Record<string, unknown>;
    expect(Object.keys(entry)).toEqual(Object.keys(pinos));
    expect({ ...entry, time: 0 }).toEqual({ ...pinos, time: 0 });
    expect(entry).toMatchObject({
      level: 30,
      name: 'portcullis',
      reqId: 'id-1',
      clientIp: '203.0.113.9',
      method: 'GET',
      path: '/p/ä "q"',
      status: 200,
      bytes: 12,
      upstreamMs: 1.5,
      upstream: 'http://127.0.0.1:1',
      retries: 1,
      msg: 'request',
    });
    // The wall clock is read once per millisecond of the monotonic clock: at most 1 ms early.
    expect(entry.time as number).toBeGreaterThanOrEqual(before - 1);
    expect(entry.time as number).toBeLessThanOrEqual(after);
  });

  it('reads the wall clock again when the request ends in a later millisecond', async () => {
    const { logger, lines } = capture();
    const log = createAccessLog(logger);
    const first = new RequestRecord('a', 'GET', '/', '::1', NO_METRICS, undefined);
    log(first, 200, 0, performance.now() - first.start, false);
    await new Promise((resolve) => setTimeout(resolve, 30));
    const later = Date.now();
    const second = new RequestRecord('b', 'GET', '/', '::1', NO_METRICS, undefined);
    log(second, 200, 0, performance.now() - second.start, false);
    const [a, b] = lines.map((l) => (JSON.parse(l) as { time: number }).time) as [number, number];
    // Not the first line's reading again: the clock as it was when the second request ended.
    expect(b).toBeGreaterThan(a);
    expect(b).toBeGreaterThanOrEqual(later - 1);
  });
});
