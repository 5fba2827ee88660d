/**
 * Read a request body whole, for the policies that inspect it (pipeline/chain.ts `readBody`) and
 * for the forwarder's small bodies (upstream/forward.ts). Settles exactly once: with the bytes, or
 * with why not — past the limit (the rest is drained so an answer can still be written), a
 * stream error, or the client closing before the body ended.
 */

/** Why a body could not be read. */
export class BodyReadError extends Error {
  readonly reason: 'too-large' | 'error' | 'aborted';
  constructor(reason: BodyReadError['reason'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** The readable side of a request (IncomingMessage or an HTTP/2 compat request). */
export type BodyStream = NodeJS.ReadableStream & { readableEnded?: boolean };

/** What `hasBody` reads of a request (IncomingMessage or Http2ServerRequest). */
export interface BodyHeaders {
  headers: Record<string, string | string[] | undefined>;
  /** HTTP/2 compat requests: the stream, ended with the headers when there is no body. */
  stream?: { endAfterHeaders?: boolean };
  /** A WebSocket upgrade (HTTP/1.1, or an HTTP/2 extended CONNECT the gateway marked so). */
  upgrade?: boolean;
}

/**
 * Whether a request carries a body, decided the same way for every protocol: HTTP/1.1 by
 * `Transfer-Encoding` or a non-zero `Content-Length` (RFC 9112 §6.3); HTTP/2 by the stream staying
 * open after the headers, since DATA frames need no `content-length` (RFC 9113 §8.1). A policy that
 * inspects bodies and a forwarder that sends them must agree on this, or a body goes unchecked.
 * A WebSocket upgrade has none: what follows its headers (an h2 CONNECT's open stream too) are
 * frames, which no policy may read as a body.
 */
export function hasBody(req: BodyHeaders): boolean {
  if (req.upgrade === true) return false;
  const stream = req.stream;
  if (stream) return stream.endAfterHeaders !== true;
  const h = req.headers;
  const cl = h['content-length'];
  return h['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/** All of `stream`'s bytes, at most `maxBytes`. */
export function readWhole(stream: BodyStream, maxBytes: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => readWholeThen(stream, maxBytes, resolve, reject));
}

/**
 * readWhole with callbacks: exactly one of them is called, from the stream's own events (no
 * promise, no microtask: the forwarder's small bodies and the WAF's read take this path).
 */
export function readWholeThen(
  stream: BodyStream,
  maxBytes: number,
  onBody: (body: Buffer) => void,
  onError: (err: BodyReadError) => void,
): void {
  if (stream.readableEnded) {
    onError(new BodyReadError('aborted', 'the request body was already read'));
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const onData = (c: Buffer) => {
    size += c.length;
    if (size > maxBytes) {
      cleanup();
      stream.resume(); // drain the rest so the 413 can be written
      onError(new BodyReadError('too-large', `the request body is over ${maxBytes} bytes`));
      return;
    }
    chunks.push(c);
  };
  const onEnd = () => {
    cleanup();
    onBody(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
  };
  const onStreamError = (err: Error) => {
    cleanup();
    onError(new BodyReadError('error', 'the request body could not be read', { cause: err }));
  };
  const onClose = () => {
    cleanup();
    onError(new BodyReadError('aborted', `the client went away after ${size} bytes of the body`));
  };
  const cleanup = () => {
    stream.removeListener('data', onData);
    stream.removeListener('end', onEnd);
    stream.removeListener('error', onStreamError);
    stream.removeListener('close', onClose);
  };
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onStreamError);
  stream.on('close', onClose);
}
