/**
 * The one module that writes answers: a problem, a mock, a CORS preflight, a redirect, or the
 * hand-over to the forwarder (which streams the upstream's answer itself, see upstream/forward.ts,
 * and writes its own failures with `writeProblem`). Each answer records its outcome on the
 * exchange's record, so metrics, the access log and the span see every answer the same way.
 *
 * Non-forwarded answers go through the reply (wire.ts: `send` handles HEAD, Content-Length and
 * bodiless statuses); forwarded ones hijack the reply and write the raw response.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ProblemError } from '../errors.ts';
import { runResponseStages, throughStages } from '../pipeline/response.ts';
import { CACHE_STATUS_NAME, type CacheIO, type RouteCache, serveCached } from '../policies/cache/serve.ts';
import { PROBLEM_CONTENT_TYPE, problemBody, sendProblem, toProblem } from '../problem.ts';
import { REQUEST_ID_HEADER, type RequestRecord } from '../telemetry/record.ts';
import type { Forward, ForwardTarget } from '../upstream/forward.ts';
import type { Exchange } from './exchange.ts';

/** Answer with a problem (RFC 9457); policy response headers (CORS, rate limit) go with it. */
export function answerProblem(ex: Exchange, err: ProblemError): undefined {
  const { reply, rec } = ex;
  rec.problem = err;
  if (reply.sent || reply.raw.headersSent) return;
  const headers = ex.ctx?.responseHeaders;
  if (headers) reply.headers(headers);
  // A cached route's every answer says what the cache did: here, nothing (a policy answered first).
  if (ex.entry?.chain.applied.some((a) => a.kind === 'cache'))
    reply.header('cache-status', `${CACHE_STATUS_NAME}; fwd=bypass; detail=${err.code}`);
  sendProblem(ex.req, reply, err, ex.target.path);
}

/** 405 with Allow when the path is routed for other methods, else 404. */
export function answerNotRouted(ex: Exchange, allowed: readonly string[]): undefined {
  answerProblem(
    ex,
    allowed.length > 0
      ? new ProblemError('PC_METHOD_NOT_ALLOWED', undefined, { headers: { allow: allowed.join(', ') } })
      : new ProblemError('PC_ROUTE_NOT_FOUND'),
  );
}

/** Answer from the route's mock responder (examples of the spec), with the policies' header edits. */
export function answerMock(ex: Exchange): undefined {
  const entry = ex.entry;
  const mock = entry?.mock;
  if (!mock || !ex.match) return answerProblem(ex, new ProblemError('PC_INTERNAL'));
  const res = mock({ params: ex.match.params, query: ex.req.query as Record<string, unknown> });
  const ctx = ex.ctx;
  if (!ctx) {
    ex.reply.code(res.status).headers(res.headers).send(res.body);
    return;
  }
  const headers: OutgoingHttpHeaders = { ...res.headers, ...ctx.responseHeaders };
  for (const edit of ctx.responseEdits) edit(res.status, headers);
  if (!ctx.responseStages) {
    ex.reply.code(res.status).headers(headers).send(res.body);
    return;
  }
  // The stages see the length the answer would have (HEAD included, so its headers match GET's)
  // and drop it when they change the body.
  const bodyless = res.status === 204 || res.status === 304;
  if (!bodyless) headers['content-length'] = String(Buffer.byteLength(res.body));
  const head = { status: res.status, headers, method: ex.req.method, requestHeaders: ex.req.headers };
  const streams = runResponseStages(ctx.responseStages, head);
  ex.reply.code(head.status).headers(headers);
  if (ex.req.method === 'HEAD' || bodyless) {
    for (const s of streams ?? []) s.destroy();
    ex.reply.send();
  } else if (streams) {
    const first = throughStages(streams, undefined, ex.req.log, ex.rec);
    ex.reply.send(streams[streams.length - 1]);
    first.end(res.body);
  } else {
    ex.reply.send(res.body);
  }
}

/**
 * Answer a policy's own response (a CORS preflight): status, headers and an optional
 * body, sent as built (no response stages).
 */
export function answerDirect(
  ex: Exchange,
  status: number,
  headers: Record<string, string>,
  body?: Buffer | NodeJS.ReadableStream,
): undefined {
  ex.reply.code(status).headers(headers).send(body);
}

/** 308 to `location` (HTTP to HTTPS). */
export function answerRedirect(ex: Exchange, location: string): undefined {
  ex.reply.redirect(location, 308);
}

/** Hand the request to the forwarder; from here the raw response is the forwarder's. */
export function answerForward(ex: Exchange, forward: Forward, to: ForwardTarget): undefined {
  ex.reply.hijack();
  forward(ex, to);
}

/**
 * Write a problem straight to a raw (hijacked) response whose headers are not yet sent; with
 * `rec`, the rejection is recorded there and the response carries the request id.
 */
export function writeProblem(
  res: ServerResponse,
  err: ProblemError,
  instance: string,
  extraHeaders?: Record<string, string>,
  rec?: RequestRecord,
): undefined {
  if (rec) rec.problem = err;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = problemBody(err, instance);
  const length = Buffer.byteLength(body);
  // An unread request body (too large) must not be drained: close the connection after the answer.
  const unread = err.code === 'PC_BODY_TOO_LARGE';
  if (unread) res.shouldKeepAlive = false;
  res.writeHead(err.status, {
    ...extraHeaders,
    ...err.headers,
    ...(rec ? { [REQUEST_ID_HEADER]: rec.id } : {}),
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': length,
    'cache-control': 'no-store',
  });
  // Counted on a client's response only (the cache's stand-in has no `req`: the cache counts what it writes).
  const method = res.req?.method;
  if (rec && method !== undefined && method !== 'HEAD') rec.bytes += length;
  res.end(body);
  if (unread) {
    // HTTP/1: Node closes the socket after this response; HTTP/2: end just this stream.
    const stream = (res as unknown as { stream?: { close?: (code?: number) => void } }).stream;
    stream?.close?.(0);
  }
}

/**
 * Answer through the route's cache (the `cache` policy, policies/cache/serve.ts): from a stored
 * response, or by forwarding through the cache, which stores what it may. The cache hands every
 * answer back here (CACHE_IO) to be written, with the policies' response headers and edits.
 */
export function answerCached(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  cache: RouteCache,
): undefined {
  ex.reply.hijack();
  serveCached(ex, forward, to, cache, CACHE_IO);
}

/**
 * The head of a cache answer as the client gets it: the policies' response headers and edits, then
 * the response stages (compression: the cache keeps the upstream's bytes and each answer is encoded
 * for its client), then the request id. Returns the stages' body streams, if any.
 */
function cacheHead(
  ex: Exchange,
  status: number,
  headers: OutgoingHttpHeaders,
): { status: number; streams: Duplex[] | undefined } {
  const ctx = ex.ctx;
  let streams: Duplex[] | undefined;
  if (ctx) {
    for (const name in ctx.responseHeaders) headers[name] = ctx.responseHeaders[name];
    for (const edit of ctx.responseEdits) edit(status, headers);
    if (ctx.responseStages) {
      const head = { status, headers, method: ex.req.method, requestHeaders: ex.req.headers };
      streams = runResponseStages(ctx.responseStages, head);
      status = head.status;
    }
  }
  headers[REQUEST_ID_HEADER] = ex.rec.id;
  return { status, streams };
}

const NO_BODY_STATUSES = new Set([204, 304]);

const CACHE_IO: CacheIO = {
  complete(ex, status, headers, body) {
    const res = ex.res;
    if (res.headersSent || res.destroyed) return undefined;
    const head = cacheHead(ex, status, headers);
    res.writeHead(head.status, headers);
    const bodyless = !body || ex.req.method === 'HEAD' || NO_BODY_STATUSES.has(head.status);
    if (bodyless) {
      for (const s of head.streams ?? []) s.destroy();
      res.end();
      return undefined;
    }
    if (!head.streams) {
      ex.rec.bytes += body.length;
      res.end(body);
      return undefined;
    }
    throughStages(head.streams, res, ex.req.log, ex.rec).end(body);
  },
  open(ex, status, headers) {
    const res = ex.res;
    const head = cacheHead(ex, status, headers);
    res.writeHead(head.status, headers);
    // The client's bytes are counted here, or by the stages' join when they change the body; a
    // HEAD answer sends none (a problem written to it has a body Node drops).
    const counted = ex.req.method === 'HEAD' ? undefined : ex.rec;
    const staged = head.streams ? throughStages(head.streams, res, ex.req.log, counted) : undefined;
    const out: NodeJS.WritableStream = staged ?? res;
    return {
      write(chunk) {
        if (!staged && counted) counted.bytes += chunk.length;
        return out.write(chunk);
      },
      onDrain: (fn) => out.once('drain', fn),
      end: () => out.end(),
      destroy: (err) => res.destroy(err),
      onClose: (fn) => res.once('close', fn),
    };
  },
  fail(ex, err) {
    if (ex.res.headersSent) {
      ex.res.destroy();
      return;
    }
    writeProblem(ex.res, toProblem(err), ex.target.path, ex.ctx?.responseHeaders, ex.rec);
  },
};
