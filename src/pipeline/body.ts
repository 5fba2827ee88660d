/**
 * The request body as the policies see it (WAF, validate): read once, bounded, decoded from its
 * Content-Encoding, and kept on the context so every policy and the forwarder use the same bytes.
 *
 * A body with a `Content-Encoding` (gzip, x-gzip, deflate, br, zstd; a list is undone last to
 * first) is decoded here, with the decoded size bounded by the same limit as the read (a zip bomb
 * gets 413). The decoded bytes are what is forwarded: `Content-Encoding` is removed from the
 * upstream request and the forwarder sends `ctx.body` with its own `Content-Length`. Forwarding
 * the original instead would let an upstream whose decoder differs (several gzip members, trailing
 * bytes, raw deflate) read something the policies never saw. Other encodings are refused with 415.
 */
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { ProblemError } from '../errors.ts';
import { type BodyReadError, readWholeThen } from '../net/read-body.ts';
import type { RequestContext } from './types.ts';

type Decoder = (buf: Buffer, options: { maxOutputLength: number }) => Promise<Buffer>;

/** Content codings a request body may use, by lower-case token (`identity` is no coding). */
const DECODERS: ReadonlyMap<string, Decoder> = new Map<string, Decoder>([
  ['gzip', promisify(zlib.gunzip)],
  ['x-gzip', promisify(zlib.gunzip)],
  ['deflate', promisify(zlib.inflate)],
  ['br', promisify(zlib.brotliDecompress)],
  ...(typeof zlib.zstdDecompress === 'function'
    ? ([['zstd', promisify(zlib.zstdDecompress) as Decoder]] as const)
    : []),
]);

/** The content codings `readBody` decodes (docs and tests). */
export const DECODED_ENCODINGS: readonly string[] = [...DECODERS.keys()];

/**
 * Read the request body once, up to `maxBytes` (413 past it, before or after decoding), decode its
 * Content-Encoding, and keep it on the context so every policy and the forwarder use the same
 * buffer. An unknown encoding is 415 PC_UNSUPPORTED_ENCODING, a body that does not decode 400.
 * A read that failed once fails the same way for every later reader (the stream is spent).
 */
export function readBody(ctx: RequestContext, maxBytes: number): Promise<Buffer> {
  if (ctx.body) return Promise.resolve(ctx.body);
  if (ctx.bodyError !== undefined) return Promise.reject(ctx.bodyError);
  const refused = refusal(ctx, maxBytes);
  if (refused) return Promise.reject(refused);
  return new Promise<Buffer>((resolve, reject) =>
    readInto(ctx, maxBytes, () => (ctx.body ? resolve(ctx.body) : reject(ctx.bodyError))),
  );
}

/**
 * readBody with a callback and no promise: reads the body into `ctx.body` (or records why not in
 * `ctx.bodyError`), then calls `then`. A body refused before it is read (declared past `maxBytes`,
 * an unknown encoding) is left unread: the reader's own `readBody` then rejects it. The chain reads
 * ahead this way for the hooks that read every body (pipeline/chain.ts `Hook.readAhead`), so that
 * they judge it synchronously.
 */
export function readBodyThen(ctx: RequestContext, maxBytes: number, then: () => void): void {
  if (ctx.body || ctx.bodyError !== undefined || refusal(ctx, maxBytes)) then();
  else readInto(ctx, maxBytes, then);
}

/** Why the body is refused before it is read, if it is: its declared length, its encoding. */
function refusal(ctx: RequestContext, maxBytes: number): ProblemError | undefined {
  const headers = ctx.req.headers;
  const declared = headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) return new ProblemError('PC_BODY_TOO_LARGE');
  const encoding = headers['content-encoding'];
  // Refused before the body is read: nothing is decoded that cannot be.
  if (encoding !== undefined)
    for (const c of codingsOf(encoding)) if (!DECODERS.has(c)) return unsupported(c);
  return undefined;
}

/** Read and decode the body into ctx.body or ctx.bodyError, then call `then` (once). */
function readInto(ctx: RequestContext, maxBytes: number, then: () => void): void {
  const encoding = ctx.req.headers['content-encoding'];
  const codings = encoding === undefined ? undefined : codingsOf(encoding);
  const failed = (err: unknown): void => {
    ctx.bodyError = err;
    then();
  };
  readWholeThen(
    ctx.req.raw,
    maxBytes,
    (raw) => {
      if (codings === undefined || codings.length === 0) {
        // `identity` too: the buffer is forwarded with its own length, no coding named.
        if (encoding !== undefined) ctx.removeUpstreamHeaders.add('content-encoding');
        ctx.body = raw;
        then();
        return;
      }
      decode(raw, codings, maxBytes).then((body) => {
        ctx.removeUpstreamHeaders.add('content-encoding');
        ctx.body = body;
        then();
      }, failed);
    },
    (err: BodyReadError) =>
      failed(
        err.reason === 'too-large'
          ? new ProblemError('PC_BODY_TOO_LARGE')
          : new ProblemError('PC_BAD_REQUEST', 'Request body could not be read', { cause: err }),
      ),
  );
}

/** The codings of a Content-Encoding header in the order they were applied, `identity` left out. */
function codingsOf(header: string | string[]): string[] {
  const out: string[] = [];
  for (const part of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const c = part.trim().toLowerCase();
    if (c !== '' && c !== 'identity') out.push(c);
  }
  return out;
}

function unsupported(coding: string): ProblemError {
  return new ProblemError(
    'PC_UNSUPPORTED_ENCODING',
    `Content-Encoding "${coding.slice(0, 32)}" is not accepted`,
    {
      headers: { 'accept-encoding': DECODED_ENCODINGS.join(', ') },
      extensions: { accepted: DECODED_ENCODINGS },
    },
  );
}

/** Undo the codings last to first, each output bounded by `maxBytes`. */
async function decode(raw: Buffer, codings: string[], maxBytes: number): Promise<Buffer> {
  let body = raw;
  for (let i = codings.length - 1; i >= 0; i--) {
    const decoder = DECODERS.get(codings[i] as string) as Decoder;
    try {
      body = await decoder(body, { maxOutputLength: maxBytes });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError)
        throw new ProblemError('PC_BODY_TOO_LARGE', 'Request body too large once decoded', {
          extensions: { decoded: true },
        });
      throw new ProblemError('PC_BAD_REQUEST', `Request body is not valid ${codings[i]}`, { cause: err });
    }
  }
  return body;
}
