import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { ProblemError } from '../errors.ts';
import { readBody, readBodyThen } from './body.ts';
import type { RequestContext } from './types.ts';

/** A context whose request streams `body` with `headers`. */
function ctxWith(body: Buffer, headers: Record<string, string>): RequestContext {
  const raw = Readable.from([body]) as Readable & { headers: Record<string, string> };
  raw.headers = headers;
  return { req: { headers, raw }, removeUpstreamHeaders: new Set<string>() } as unknown as RequestContext;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err instanceof ProblemError ? err.code : String(err);
  }
}

const TEXT = Buffer.from(`{"q":"${'x'.repeat(500)}"}`);

describe('readBody', () => {
  test.each<[string, (b: Buffer) => Buffer]>([
    ['gzip', zlib.gzipSync],
    ['x-gzip', zlib.gzipSync],
    ['deflate', zlib.deflateSync],
    ['br', zlib.brotliCompressSync],
    ...(typeof zlib.zstdCompressSync === 'function'
      ? [['zstd', zlib.zstdCompressSync] as [string, (b: Buffer) => Buffer]]
      : []),
  ])('decodes %s, keeps the decoded bytes and drops Content-Encoding upstream', async (coding, encode) => {
    const ctx = ctxWith(encode(TEXT), { 'content-encoding': coding });
    const body = await readBody(ctx, 10_000);
    expect(body.equals(TEXT)).toBe(true);
    expect(ctx.body).toBe(body);
    expect(ctx.removeUpstreamHeaders.has('content-encoding')).toBe(true);
  });

  test('a list of codings is undone last to first', async () => {
    const ctx = ctxWith(zlib.brotliCompressSync(zlib.gzipSync(TEXT)), { 'content-encoding': 'gzip, br' });
    expect((await readBody(ctx, 10_000)).equals(TEXT)).toBe(true);
  });

  test('identity is no coding', async () => {
    const ctx = ctxWith(TEXT, { 'content-encoding': 'identity' });
    expect((await readBody(ctx, 10_000)).equals(TEXT)).toBe(true);
  });

  test('a zip bomb is 413 once decoded past the limit', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(5_000_000));
    expect(bomb.length).toBeLessThan(10_000);
    expect(await codeOf(readBody(ctxWith(bomb, { 'content-encoding': 'gzip' }), 10_000))).toBe(
      'PC_BODY_TOO_LARGE',
    );
  });

  test.each(['compress', 'x-unknown', 'gzip, lzma'])('Content-Encoding %s is 415', async (coding) => {
    expect(await codeOf(readBody(ctxWith(TEXT, { 'content-encoding': coding }), 10_000))).toBe(
      'PC_UNSUPPORTED_ENCODING',
    );
  });

  test('a body that does not decode is 400', async () => {
    expect(await codeOf(readBody(ctxWith(TEXT, { 'content-encoding': 'gzip' }), 10_000))).toBe(
      'PC_BAD_REQUEST',
    );
  });
});

describe('readBodyThen', () => {
  test('reads into ctx.body and calls back; a later readBody gets the same buffer', async () => {
    const ctx = ctxWith(TEXT, { 'content-length': String(TEXT.length) });
    await new Promise<void>((resolve) => readBodyThen(ctx, 10_000, resolve));
    expect(ctx.body?.equals(TEXT)).toBe(true);
    expect(await readBody(ctx, 10_000)).toBe(ctx.body);
  });

  test('a failed read is kept: every later reader gets the same error (the stream is spent)', async () => {
    const ctx = ctxWith(zlib.gzipSync(Buffer.alloc(100_000)), { 'content-encoding': 'gzip' });
    await new Promise<void>((resolve) => readBodyThen(ctx, 10_000, resolve));
    expect(ctx.body).toBeUndefined();
    expect(ctx.bodyError).toBeInstanceOf(ProblemError);
    expect(await codeOf(readBody(ctx, 10_000_000))).toBe('PC_BODY_TOO_LARGE');
  });

  test('a body refused before it is read is left unread, for the reader to refuse', async () => {
    const ctx = ctxWith(TEXT, { 'content-length': String(TEXT.length) });
    let called = false;
    readBodyThen(ctx, 10, () => {
      called = true;
    });
    expect(called).toBe(true);
    expect(ctx.body).toBeUndefined();
    expect(ctx.bodyError).toBeUndefined();
    expect(await codeOf(readBody(ctx, 10))).toBe('PC_BODY_TOO_LARGE');
    // Unread: a reader with a larger limit still gets the bytes.
    expect((await readBody(ctx, 10_000)).equals(TEXT)).toBe(true);
  });
});
