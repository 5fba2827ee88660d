import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { type Duplex, Transform, type TransformCallback } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Dispatcher } from 'undici';
import { type ErrorCode, ProblemError } from '../errors.ts';
import { writeProblem } from '../lifecycle/answer.ts';
import type { Logger } from '../logger.ts';
import type { CidrMatcher } from '../net/cidr.ts';
import { hasBody, readWholeThen } from '../net/read-body.ts';
import type { RequestTarget } from '../net/target.ts';
import { runResponseStages, throughStages } from '../pipeline/response.ts';
import type { RequestContext } from '../pipeline/types.ts';
import type { RetryOn, ServiceSettings } from '../registry/types.ts';
import { REQUEST_ID_HEADER, type RequestRecord } from '../telemetry/record.ts';
import { failedOnReusedSocket, type Upstream, type UpstreamGroup, type Waiting } from './group.ts';
import type { Upgrade } from './websocket.ts';

/**
 * Request headers never forwarded: hop-by-hop (RFC 9110 §7.6.1), HTTP/2 pseudo and connection
 * headers, `host` (set to the upstream's), and `expect` (the gateway answers 100-continue itself).
 */
const DROP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
  'expect',
]);
/**
 * Forwarding headers the gateway owns: a client's copies are kept only from trusted proxies
 * (`trustProxy`); from anyone else they are dropped, as is every other `X-Forwarded-*` (port,
 * prefix, server...), which upstreams use to build URLs and decide who called.
 */
const FORWARDING = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
  'x-real-ip',
]);
/**
 * undici errors about the request as built from the client's input (a header value it refuses, a
 * body shorter or longer than declared): the client's fault, answered 400, never counted against
 * the upstream's health and never retried.
 */
const CLIENT_FAULTS = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_NOT_SUPPORTED',
]);
/** Response headers never passed back: hop-by-hop ones. */
export const DROP_RESPONSE = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'trailer',
]);
/** Upstream identity headers, removed when `headers.hideUpstreamIdentity` (default). */
export const IDENTITY = new Set(['server', 'x-powered-by']);
const UNDERSCORES = /_/g;
/** A Connection header that lists no other header (by far the most common values). */
const PLAIN_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i;
/** Methods safe to send twice (RFC 9110 §9.2.2); retried only when they carry no body. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** undici's code for "no response headers within timeoutMs" (retryOn `timeout`). */
const HEADERS_TIMEOUT = 'UND_ERR_HEADERS_TIMEOUT';
/** undici error codes that mean "the upstream did not answer in time". */
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * The client response. HTTP/2 compat responses (Http2ServerResponse) have the same writeHead /
 * write / end / drain surface used here; callers pass them cast to this type.
 */
type RawResponse = ServerResponse;

/** What the forwarder needs from the incoming request (lifecycle/wire.ts; a FastifyRequest fits too). */
export interface IncomingForForward {
  method: string;
  headers: IncomingHttpHeaders;
  /** Client address after trustProxy (lifecycle/wire.ts `ip`). */
  ip: string;
  raw: NodeJS.ReadableStream & {
    url?: string;
    headers: IncomingHttpHeaders;
    socket: { remoteAddress?: string; encrypted?: boolean } | TLSSocket;
    stream?: { endAfterHeaders?: boolean };
  };
}

export interface ForwardTarget {
  service: string;
  group: UpstreamGroup;
  settings: ServiceSettings;
  /** Public prefix stripped before forwarding ('' for basePath "/"). */
  basePath: string;
  /**
   * Request headers that an auth policy of this service sets from the verified identity
   * (`forwardSubject`): a client's own copies are stripped from every request to the service, on
   * every route, so no sibling route forwards a spoofed identity. Lower-case.
   */
  identityHeaders?: ReadonlySet<string>;
}

/** Bodies of a declared length up to this are read whole before forwarding (see `forward`). */
const BUFFERED_BODY_BYTES = 64 * 1024;

export interface ForwarderOptions {
  trustProxy: CidrMatcher;
  hideUpstreamIdentity: boolean;
  /** Largest request body in bytes; larger ones get 413. */
  bodyBytes: number;
  logger: Logger;
}

/** What policies changed about a request (see RequestContext); absent on policy-free routes. */
export type ForwardExtras = Pick<
  RequestContext,
  | 'setUpstreamHeaders'
  | 'removeUpstreamHeaders'
  | 'responseHeaders'
  | 'responseEdits'
  | 'responseStages'
  | 'body'
  | 'upstream'
>;

/**
 * One request to forward, as the lifecycle holds it (lifecycle/exchange.ts): the client request and
 * response, the canonical target (the only source of the upstream path), the policies' changes and
 * the record.
 */
export interface Forwarding {
  readonly req: IncomingForForward;
  /** The client response; the reply is hijacked before forwarding. */
  readonly res: RawResponse;
  /** The canonical target: the upstream path is cut from it, never from the raw URL. */
  readonly target: RequestTarget;
  /** What policies changed; absent on policy-free routes. */
  readonly ctx: ForwardExtras | undefined;
  /** With a record, each attempt is recorded (upstream, timing, bytes, CLIENT span) and the request id travels both ways. */
  readonly rec: RequestRecord | undefined;
  /** `res` is the cache's stand-in (policies/cache/tap.ts): the client's bytes are counted where the cache writes them. */
  readonly tapped?: boolean;
  /** A WebSocket upgrade: sent upstream as one, its 101 handed to it (upstream/websocket.ts). */
  readonly upgrade?: Upgrade | undefined;
}

/** Forward one request to `to`; the response is written straight to `ex.res`. */
export type Forward = (ex: Forwarding, to: ForwardTarget) => void;

/**
 * Build the forwarder. It speaks to undici's dispatcher API directly and writes the upstream's
 * status, headers and body chunks straight into the client response, with backpressure both ways:
 * no intermediate Readable, no header re-parsing. That is the gateway's hot path.
 *
 * Why not @fastify/reply-from (what @fastify/http-proxy uses): it wraps every response body in a
 * Readable and pipes it through reply.send. Measured with `npm run bench` (proxy pinned alone on
 * one core): reply-from via http-proxy 50.6 µs CPU per request, this forwarder 37.7 µs, with the
 * route match, balancer and forwarding headers included (1.29x the requests/s).
 */
export function createForwarder(opts: ForwarderOptions): Forward {
  const { trustProxy, hideUpstreamIdentity, bodyBytes, logger } = opts;

  function upstreamHeaders(
    req: IncomingForForward,
    upstream: Upstream,
    extras: ForwardExtras | undefined,
    identity: ReadonlySet<string> | undefined,
  ): Record<string, string | string[]> {
    const src = req.headers;
    const peer = stripMapped(req.raw.socket.remoteAddress ?? '');
    const trusted = trustProxy(peer);
    const listed = src.connection ? connectionTokens(src.connection) : undefined;
    const out: Record<string, string | string[]> = {};
    for (const name in src) {
      const value = src[name];
      if (value === undefined || name.charCodeAt(0) === 58 /* ':' */ || DROP_REQUEST.has(name)) continue;
      if (listed?.has(name)) continue;
      // CGI, PHP, WSGI and Rack read `X_User` as `X-User` (both become HTTP_X_USER): the checks
      // below compare that reading, so an underscore spelling cannot pass a header we drop.
      const key = name.indexOf('_') === -1 ? name : name.replace(UNDERSCORES, '-');
      if (!trusted && (FORWARDING.has(key) || key.startsWith('x-forwarded-'))) continue;
      if (extras?.removeUpstreamHeaders.has(key) || identity?.has(key)) continue;
      out[name] = value;
    }
    const proto = (req.raw.socket as TLSSocket).encrypted ? 'https' : 'http';
    const host = src.host ?? (src[':authority'] as string | undefined) ?? '';
    const prevFor = trusted ? src['x-forwarded-for'] : undefined;
    out['x-forwarded-for'] = prevFor ? `${String(prevFor)}, ${peer}` : peer;
    if (!(trusted && src['x-forwarded-proto'])) out['x-forwarded-proto'] = proto;
    if (!(trusted && src['x-forwarded-host'])) out['x-forwarded-host'] = host;
    const element = `for=${forwardedNode(peer)};host=${quoteIfNeeded(host)};proto=${proto}`;
    const prevForwarded = trusted ? src.forwarded : undefined;
    out.forwarded = prevForwarded ? `${prevForwarded}, ${element}` : element;
    // The client address as the gateway decided it (after trustProxy), like nginx's X-Real-IP.
    out['x-real-ip'] = req.ip;
    out.host = upstream.host;
    if (extras) {
      for (const name in extras.setUpstreamHeaders) out[name] = extras.setUpstreamHeaders[name] as string;
      if (extras.body) {
        out['content-length'] = String(extras.body.length);
        delete out['transfer-encoding'];
      }
    }
    return out;
  }

  const core: ForwarderCore = { hideUpstreamIdentity, logger, upstreamHeaders };
  const forward: Forward = (ex, to) => {
    const cl = ex.req.headers['content-length'];
    // A small body with a declared length is read first and sent as one buffer: streaming it
    // through undici cost about 60% more CPU per request and put a p99 of ~28 ms on small POSTs
    // (bench: portcullis-post). A buffered body can also be resent when the method is idempotent.
    if (cl !== undefined && cl !== '0' && !ex.ctx?.body) {
      const length = Number(cl);
      if (length <= BUFFERED_BODY_BYTES && length <= bodyBytes) {
        readWholeThen(
          ex.req.raw,
          length,
          (body) => send(ex, to, body),
          () => {
            // The client went away or sent less than it declared: nobody is left to answer.
            if (!ex.res.headersSent) ex.res.destroy();
          },
        );
        return;
      }
    }
    send(ex, to, undefined);
  };
  return forward;

  function send(ex: Forwarding, target: ForwardTarget, buffered: Buffer | undefined): void {
    const { req, res, ctx: extras, rec } = ex;
    const instance = ex.target.path;
    const h = req.headers;
    const cl = h['content-length'];
    let body: NodeJS.ReadableStream | Buffer | null = null;
    if (extras?.body) body = extras.body;
    else if (buffered) body = buffered;
    else if (!ex.upgrade && hasBody(req.raw)) {
      if (cl !== undefined && Number(cl) > bodyBytes) {
        writeProblem(res, new ProblemError('PC_BODY_TOO_LARGE'), instance, undefined, rec);
        return;
      }
      body = cl === undefined ? req.raw.pipe(new BodyLimit(bodyBytes)) : req.raw;
    }
    new UpstreamExchange(core, ex, target, body).attempt(undefined, undefined);
  }
}

/** What every exchange of one forwarder shares (its options and header builder). */
interface ForwarderCore {
  readonly hideUpstreamIdentity: boolean;
  readonly logger: Logger;
  readonly upstreamHeaders: (
    req: IncomingForForward,
    upstream: Upstream,
    extras: ForwardExtras | undefined,
    identity: ReadonlySet<string> | undefined,
  ) => Record<string, string | string[]>;
}

const EXCHANGE = Symbol('portcullis.upstreamExchange');
type ExchangeResponse = RawResponse & { [EXCHANGE]?: UpstreamExchange };

/** The client response's 'close' listener (`this` is the response). */
function onClientClose(this: ExchangeResponse): void {
  this[EXCHANGE]?.clientClosed();
}

/**
 * One request being forwarded, across its attempts (retries, a resend on a fresh connection). A
 * class rather than closures: the forwarder is the hot path, and an exchange and its attempt are
 * two objects per request where the closures were about fifteen (heap sample of the forwarder's
 * own allocations per request: 1.36 -> 0.56 KB).
 */
class UpstreamExchange {
  readonly core: ForwarderCore;
  readonly ex: Forwarding;
  readonly target: ForwardTarget;
  readonly body: NodeJS.ReadableStream | Buffer | null;
  /** The record's `bytes` are what the client got: counted here, or after the stages that change the body. */
  readonly counted: RequestRecord | undefined;
  /** The upstream path: from the canonical target only (decoded once, no dot segments, no encoded slashes). */
  readonly suffix: string;
  readonly pickContext: { clientIp: string };
  attemptsLeft: number;
  /** One resend on a fresh connection when a reused keep-alive one failed under the request. */
  freshLeft: boolean;
  /** Upstreams that failed this request (allocated on the first retry only). */
  tried: Upstream[] | undefined = undefined;
  controller: Dispatcher.DispatchController | undefined = undefined;
  done = false;
  /** Waiting for a circuit-breaker slot (see UpstreamGroup.admit). */
  waiting: Waiting | undefined = undefined;

  constructor(
    core: ForwarderCore,
    ex: Forwarding,
    target: ForwardTarget,
    body: NodeJS.ReadableStream | Buffer | null,
  ) {
    this.core = core;
    this.ex = ex;
    this.target = target;
    this.body = body;
    this.counted = ex.tapped ? undefined : ex.rec;
    const rest = ex.target.path.slice(target.basePath.length);
    const query = ex.target.query;
    this.suffix = (rest === '' ? '/' : rest) + (query === '' ? '' : `?${query}`);
    this.pickContext = { clientIp: ex.req.ip };
    // A buffered body can be sent again; a stream cannot.
    const retryable = (body === null || Buffer.isBuffer(body)) && IDEMPOTENT.has(ex.req.method);
    const { settings, group } = target;
    group.earnRetry(settings.retryBudget);
    this.attemptsLeft = retryable ? settings.retries : 0;
    this.freshLeft = retryable;
    // One listener function for every response (a closure here cost more: a heap sample counted
    // ~100 bytes more per request); `on`: a response closes once (once() costs a wrapper and a
    // removal per request).
    (ex.res as ExchangeResponse)[EXCHANGE] = this;
    ex.res.on('close', onClientClose);
  }

  /** The client response closed: a request waiting for a slot leaves, one in flight is aborted. */
  clientClosed(): void {
    this.waiting?.cancel();
    if (!this.done) this.controller?.abort(new Error('client closed the connection'));
  }

  /** Answer with a problem (nothing was sent yet). */
  problem(err: ProblemError): void {
    this.done = true;
    const { ex } = this;
    writeProblem(ex.res, err, ex.target.path, ex.ctx?.responseHeaders, ex.rec);
  }

  /** The circuit breaker of the chosen upstream refused the request: 503 with Retry-After. */
  overloaded(): void {
    this.problem(new ProblemError('PC_UPSTREAM_OVERLOADED', undefined, { headers: { 'retry-after': '1' } }));
  }

  /**
   * One attempt: to `fresh` on a new connection, else to an upstream the balancer picks; a retry
   * when `failed` (the upstream that just failed) is given.
   */
  attempt(fresh: Upstream | undefined, failed: Upstream | undefined): void {
    const { group } = this.target;
    if (failed) {
      this.attemptsLeft--;
      if (this.tried) this.tried.push(failed);
      else this.tried = [failed];
    }
    const preferred = this.ex.ctx?.upstream;
    let upstream: Upstream | null | undefined = fresh;
    if (!upstream && preferred?.upstreamId && !this.tried) {
      upstream = group.eligible().find((u) => u.id === preferred.upstreamId);
    }
    upstream ??= group.pick(this.pickContext, this.tried);
    if (!upstream) {
      const seconds = Math.max(1, Math.ceil(group.retryAfterMs() / 1000));
      this.problem(
        new ProblemError('PC_UPSTREAM_UNAVAILABLE', undefined, {
          headers: { 'retry-after': String(seconds) },
        }),
      );
      return;
    }
    preferred?.onChosen?.(upstream.id);
    const a = new Attempt(this, upstream, fresh !== undefined);
    // The usual case: a free slot now, no callbacks to allocate.
    if (group.tryAdmit(upstream)) {
      a.dispatch();
      return;
    }
    const admitted = group.admit(
      upstream,
      () => a.dispatch(),
      () => this.overloaded(),
    );
    if (admitted === null) this.overloaded();
    else if (admitted !== true) this.waiting = admitted;
  }
}

/** One attempt of an exchange: undici's handler for it (its methods are called on it). */
class Attempt implements Dispatcher.DispatchHandler {
  readonly x: UpstreamExchange;
  readonly upstream: Upstream;
  /** On a new connection (a resend after a keep-alive race). */
  readonly fresh: boolean;
  /** The request went out on a connection (else it failed to connect). */
  sent = false;
  started = false;
  /** A 502/503/504 answer to be retried: its body is drained, not passed on. */
  discard = false;
  finished = false;
  status = 0;
  /** The first response stage's body stream, when a stage transforms the body (pipeline/response.ts). */
  sink: Duplex | undefined = undefined;

  constructor(x: UpstreamExchange, upstream: Upstream, fresh: boolean) {
    this.x = x;
    this.upstream = upstream;
    this.fresh = fresh;
  }

  dispatch(): void {
    const { x, upstream } = this;
    x.waiting = undefined;
    const { ex } = x;
    const path = upstream.pathPrefix + x.suffix;
    const headers = x.core.upstreamHeaders(ex.req, upstream, ex.ctx, x.target.identityHeaders);
    ex.rec?.upstreamStart(upstream, path, headers);
    const timeoutMs = x.target.settings.timeoutMs;
    const opts: Dispatcher.DispatchOptions = {
      origin: upstream.origin,
      path,
      method: ex.req.method as Dispatcher.HttpMethod,
      headers,
      body: x.body as Dispatcher.DispatchOptions['body'],
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    };
    if (ex.upgrade) opts.upgrade = 'websocket';
    if (this.fresh) x.target.group.dispatchFresh(upstream, opts, this);
    else upstream.pool.dispatch(opts, this);
  }

  /** The attempt's end (answer, error or upgrade): its breaker slot is released once. */
  settle(): boolean {
    if (this.finished) return false;
    this.finished = true;
    this.x.target.group.release(this.upstream);
    return true;
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.x.controller = c;
    this.sent = true;
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // 1xx: the client's own 100-continue was answered by Node
    const { x, upstream } = this;
    const { group, settings } = x.target;
    this.started = true;
    this.status = statusCode;
    group.reportAnswer(upstream, statusCode);
    if (
      statusCode >= 502 &&
      statusCode <= 504 &&
      mayRetry(statusCode as RetryOn, x.attemptsLeft, settings.retryOn, group)
    ) {
      this.discard = true;
      return;
    }
    const { ex, core } = x;
    const { req, res, rec } = ex;
    const extras = ex.ctx;
    const hideUpstreamIdentity = core.hideUpstreamIdentity;
    const out: OutgoingHttpHeaders = {};
    const listed = headers.connection ? connectionTokens(headers.connection) : undefined;
    for (const name in headers) {
      if (DROP_RESPONSE.has(name) || (hideUpstreamIdentity && IDENTITY.has(name)) || listed?.has(name))
        continue;
      out[name] = headers[name];
    }
    let sent = statusCode;
    if (extras) {
      for (const name in extras.responseHeaders) out[name] = extras.responseHeaders[name];
      for (const edit of extras.responseEdits) edit(statusCode, out);
      if (extras.responseStages) {
        const head = { status: statusCode, headers: out, method: req.method, requestHeaders: req.headers };
        const streams = runResponseStages(extras.responseStages, head);
        sent = head.status;
        if (streams) this.sink = throughStages(streams, res, core.logger, x.counted);
      }
    }
    if (rec) out[REQUEST_ID_HEADER] = rec.id;
    res.writeHead(sent, out);
  }

  onRequestUpgrade(
    _c: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    socket: Duplex,
  ): void {
    const { x, upstream } = this;
    const { ex } = x;
    if (!this.settle() || !ex.upgrade) return void socket.destroy();
    x.done = true;
    x.target.group.reportAnswer(upstream, statusCode);
    ex.rec?.upstreamEnd(x.target.service, upstream, statusCode);
    const invalid = ex.upgrade.upgraded(ex.res, ex.req.headers, headers, socket, ex.ctx, ex.rec);
    if (invalid) writeProblem(ex.res, invalid, ex.target.path, ex.ctx?.responseHeaders, ex.rec);
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.discard) return;
    const sink = this.sink;
    const counted = this.x.counted;
    if (counted && !sink) counted.bytes += chunk.length;
    // Backpressure: pause the upstream until the client drained (a listener only when needed).
    if (sink) {
      if (!sink.write(chunk)) {
        c.pause();
        sink.once('drain', () => c.resume());
      }
    } else {
      const res = this.x.ex.res;
      if (!res.write(chunk)) {
        c.pause();
        res.once('drain', () => c.resume());
      }
    }
  }

  onResponseEnd(): void {
    if (!this.settle()) return;
    const { x, upstream } = this;
    const res = x.ex.res;
    x.ex.rec?.upstreamEnd(x.target.service, upstream, this.status);
    if (this.discard) {
      if (!x.done && !res.destroyed) x.attempt(undefined, upstream);
      return;
    }
    x.done = true;
    if (this.sink) this.sink.end();
    else res.end();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (!this.settle()) return;
    const { x, upstream } = this;
    const { ex, target } = x;
    const { res, rec } = ex;
    const code = (err as { code?: string }).code ?? '';
    // A client that went away aborted the attempt: not the upstream's failure.
    rec?.upstreamEnd(target.service, upstream, this.status, res.destroyed ? undefined : code || err.name);
    if (x.done || res.destroyed) return; // the client went away: nothing to report
    if (this.discard) {
      x.attempt(undefined, upstream); // the retry was decided on the answer's status
      return;
    }
    const logger = x.core.logger;
    if (this.started) {
      // Headers are out: all we can do is cut the connection so the client sees a truncated body.
      x.done = true;
      logger.warn(
        {
          code: 'PC_UPSTREAM_ERROR',
          cause: code,
          reqId: rec?.id,
          service: target.service,
          upstream: upstream.url,
        },
        'upstream failed mid-response',
      );
      res.destroy(err);
      return;
    }
    if (CLIENT_FAULTS.has(code)) {
      x.problem(
        new ProblemError('PC_BAD_REQUEST', 'The request cannot be forwarded as sent', { cause: err }),
      );
      return;
    }
    if (err instanceof ProblemError) {
      x.problem(err); // e.g. body over the limit
      return;
    }
    // A keep-alive race (the upstream closed the idle connection as the request went out) is
    // not the upstream's failure: resend once on a fresh connection, outside retries and budget.
    if (x.freshLeft && this.sent && failedOnReusedSocket(err)) {
      x.freshLeft = false;
      x.attempt(upstream, undefined);
      return;
    }
    const { group, settings } = target;
    group.reportFailure(upstream, code || err.name);
    const reason: RetryOn = !this.sent ? 'connect-failure' : code === HEADERS_TIMEOUT ? 'timeout' : 'reset';
    if (mayRetry(reason, x.attemptsLeft, settings.retryOn, group)) {
      x.attempt(undefined, upstream);
      return;
    }
    const errCode: ErrorCode = TIMEOUTS.has(code) ? 'PC_UPSTREAM_TIMEOUT' : 'PC_UPSTREAM_ERROR';
    logger.warn(
      { code: errCode, cause: code, reqId: rec?.id, service: target.service, upstream: upstream.url },
      'upstream request failed',
    );
    x.problem(new ProblemError(errCode, undefined, { cause: err }));
  }
}

/**
 * Whether a failure of kind `reason` gets another attempt; spends the retry budget if so. A
 * connect failure costs the upstream nothing, so only retries it may have seen are budgeted.
 */
function mayRetry(
  reason: RetryOn,
  attemptsLeft: number,
  retryOn: readonly RetryOn[],
  group: UpstreamGroup,
): boolean {
  return attemptsLeft > 0 && retryOn.includes(reason) && (reason === 'connect-failure' || group.spendRetry());
}

/** The header names a Connection header lists (hop-by-hop for this message), or undefined when it lists none. */
export function connectionTokens(value: string | string[]): Set<string> | undefined {
  // What nearly every client and upstream sends is compared before the (case-insensitive) pattern.
  if (
    typeof value === 'string' &&
    (value === 'keep-alive' || value === 'close' || PLAIN_CONNECTION.test(value))
  )
    return undefined;
  const s = new Set<string>();
  for (const v of Array.isArray(value) ? value : [value])
    for (const t of v.split(',')) s.add(t.trim().toLowerCase());
  return s;
}

function stripMapped(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** RFC 7239 node: IPv6 in brackets and quotes. */
function forwardedNode(ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip;
}

/** RFC 7239 value: a token as is, anything else quoted. The last answer is kept: hosts repeat. */
let lastHost = '';
let lastQuoted = '';
function quoteIfNeeded(v: string): string {
  if (v === lastHost) return lastQuoted;
  lastQuoted = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
  lastHost = v;
  return lastQuoted;
}

/** Counts a chunked (length-less) body and fails it past the limit. */
class BodyLimit extends Transform {
  private seen = 0;
  private readonly limit: number;
  constructor(limit: number) {
    super();
    this.limit = limit;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) cb(new ProblemError('PC_BODY_TOO_LARGE'));
    else cb(null, chunk);
  }
}
