import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { BodyReadError, readWhole } from './read-body.ts';

describe('readWhole', () => {
  test('joins the chunks', async () => {
    const s = new PassThrough();
    const p = readWhole(s, 100);
    s.write('{"a":');
    s.end('1}');
    expect((await p).toString()).toBe('{"a":1}');
  });

  test('past the limit: too-large, and the rest is drained so an answer can still be written', async () => {
    const s = new PassThrough();
    const p = readWhole(s, 4);
    s.write('12345');
    await expect(p).rejects.toMatchObject({ reason: 'too-large' });
    s.end('more');
    await new Promise((r) => s.once('end', r)); // drained: 'end' is reached with no reader left
  });

  test('the client going away before the end: aborted', async () => {
    const s = new PassThrough();
    const p = readWhole(s, 100);
    s.write('{"a":');
    s.destroy();
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BodyReadError);
    expect((err as BodyReadError).reason).toBe('aborted');
  });

  test('a stream error: error, with the cause', async () => {
    const s = new PassThrough();
    const p = readWhole(s, 100);
    s.destroy(new Error('boom'));
    const err = (await p.catch((e: unknown) => e)) as BodyReadError;
    expect(err.reason).toBe('error');
    expect((err.cause as Error).message).toBe('boom');
  });

  test('an already read body is refused, not waited for', async () => {
    const s = new PassThrough();
    s.end('x');
    s.resume();
    await new Promise((r) => s.once('end', r));
    await expect(readWhole(s, 100)).rejects.toMatchObject({ reason: 'aborted' });
  });
});
