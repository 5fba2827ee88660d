/**
 * Serving a request of a cached route (the lifecycle calls `serveCached` once every other policy
 * accepted the request, see lifecycle/answer.ts `answerCached`):
 *
 * - GET / HEAD: look the canonical URL up; a fresh stored response (or a stale one the rules allow:
 *   `max-stale`, `stale-while-revalidate`) answers, HEAD from the GET entry, a single byte Range
 *   from a stored full response, a client's If-None-Match / If-Modified-Since with 304; a stale one
 *   is validated upstream with its ETag / Last-Modified (a 304 refreshes its headers); a miss is
 *   forwarded without the client's validators (to get a storable full answer) and stored when RFC
 *   9111 allows. Concurrent misses of one URL wait for the first one's fetch (bounded by
 *   `coalesceTimeout`) and then look up again.
 * - other safe methods pass through; an unsafe one that succeeds (2xx, 3xx) invalidates the URL and
 *   the same-origin Location / Content-Location before its answer is sent.
 *
 * Every answer carries Cache-Status (RFC 9211); every answer from the store carries Age.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Exchange } from '../../lifecycle/exchange.ts';
import { hasBody } from '../../net/read-body.ts';
import { canonicalTarget, type RequestTarget } from '../../net/target.ts';
import type { Decision } from '../../pipeline/types.ts';
import type { Forward, ForwardExtras, Forwarding, ForwardTarget } from '../../upstream/forward.ts';
import type { Directives } from './directives.ts';
import { deltaSeconds } from './directives.ts';
import {
  dateValue,
  freshnessLifetime,
  headersToStore,
  initialAge,
  noneMatch,
  requestControl,
  responseControl,
  type StoredResponse,
  unstorableReason,
  updateHeaders,
  varyNames,
  varyValue,
} from './semantics.ts';
import type { CacheStore } from './store.ts';
import { type ClientSink, Tap, type TapHandler } from './tap.ts';

/** The name this cache gives itself in Cache-Status. */
export const CACHE_STATUS_NAME = 'Portcullis';
/** Methods that never invalidate (RFC 9110 §9.2.1 safe methods). */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH', 'REPORT']);
/** Client validators and ranges the cache answers itself instead of passing them upstream. */
const CLIENT_CONDITIONALS = ['if-none-match', 'if-modified-since', 'range', 'if-range'];
/** The forwarder's problems that mean no upstream answered (RFC 9111 §4.2.4 "disconnected"). */
const UNREACHABLE = new Set(['PC_UPSTREAM_ERROR', 'PC_UPSTREAM_TIMEOUT', 'PC_UPSTREAM_UNAVAILABLE']);
/** Upstream answers a stored response may stand in for under stale-if-error. */
const ERROR_STATUSES = new Set([500, 502, 503, 504]);
/** Headers never sent with a 304 built from a stored response. */
const NOT_IN_304 = new Set([
  'content-length',
  'content-range',
  'content-type',
  'content-encoding',
  'transfer-encoding',
]);
const EMPTY = Buffer.alloc(0);
const NO_DIRECTIVES: Directives = new Map();

/** How one cached route behaves (built once per route by the policy). */
export interface RouteCache {
  readonly store: CacheStore;
  /**
   * Every store the cached routes of this route's service use: a successful unsafe request to any
   * route of the service (cached or not) drops its URL from each.
   */
  readonly serviceStores: ReadonlySet<CacheStore>;
  /** In-flight fetches per URL, shared by every route of the store (request coalescing). */
  readonly inflight: Map<string, Promise<void>>;
  readonly targeted: readonly string[];
  /** Surrogate-Control device token (announced upstream in Surrogate-Capability); undefined: off. */
  readonly surrogate: string | undefined;
  /** Headers the cache adds to every upstream request of the route (`upstreamHeadersOf`, built once). */
  readonly upstreamHeaders: Readonly<Record<string, string>>;
  /** Freshness in seconds for responses that carry none; undefined: heuristics only. */
  readonly ttl: number | undefined;
  readonly maxEntryBytes: number;
  readonly coalesceTimeoutMs: number;
  /** Extra time a stale entry with validators is kept for revalidation, ms. */
  readonly keepStaleMs: number;
  /** Answer with a stale response when no upstream can be reached, unless it forbids that. */
  readonly staleIfUnreachable: boolean;
  /** dry-run: look up and record what would have been served, but always forward. */
  readonly dryRun: boolean;
  readonly logger: { warn(obj: object, msg: string): void };
}

/**
 * The headers a route's cache adds to its upstream requests: Surrogate-Capability when it honours
 * Surrogate-Control (a surrogate announces itself, W3C Edge Architecture, so the origin may target it).
 */
export function upstreamHeadersOf(surrogate: string | undefined): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  if (surrogate !== undefined) headers['surrogate-capability'] = `${surrogate}="Surrogate/1.0"`;
  return Object.freeze(headers);
}

/** The outcome recorded on the request (metrics label, span event, access log). */
export type CacheResult = 'hit' | 'stale' | 'revalidated' | 'miss' | 'bypass' | 'uncacheable';

/** Serve `ex` through the route's cache; the reply is already hijacked. */
/** Whether `method` may change state upstream (RFC 9110 §9.2.1): its success invalidates. */
export function isUnsafe(method: string): boolean {
  return !SAFE.has(method);
}

export function serveCached(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  rc: RouteCache,
  io: CacheIO,
): undefined {
  const method = ex.req.method;
  // A GET or HEAD with a body is forwarded uncached: the key has no body, and an upstream that reads
  // it (parameters merged from the body) would answer differently under the same key.
  if (method === 'GET' || method === 'HEAD') {
    if (ex.ctx?.body !== undefined || hasBody(ex.req.raw))
      return passThrough(ex, forward, to, rc, io, 'bypass', undefined);
    lookup(ex, forward, to, rc, io, false).catch((err: unknown) => failed(ex, io, rc, err));
    return;
  }
  if (SAFE.has(method)) return passThrough(ex, forward, to, rc, io, 'method', undefined);
  return passThrough(ex, forward, to, rc, io, 'method', (status, headers) =>
    status >= 200 && status < 400 ? invalidate(ex, rc, headers) : undefined,
  );
}

/** What the cache needs from the lifecycle to write answers (lifecycle/answer.ts). */
export interface CacheIO {
  /** Write a complete answer (a stored response, a 304, a 206, a 416). */
  complete(ex: Exchange, status: number, headers: OutgoingHttpHeaders, body: Buffer | undefined): undefined;
  /** Write a head and return the sink for the body. */
  open(ex: Exchange, status: number, headers: OutgoingHttpHeaders): ClientSink;
  /** Write an internal failure as a problem. */
  fail(ex: Exchange, err: unknown): void;
}

function failed(ex: Exchange, io: CacheIO, rc: RouteCache, err: unknown): void {
  rc.logger.warn({ err, reqId: ex.rec.id }, 'cache failed');
  io.fail(ex, err);
}

/** The cache key of a request: its canonical path and query (never the raw URL). */
export function cacheKey(target: RequestTarget): string {
  return target.query === '' ? target.path : `${target.path}?${target.query}`;
}

/** The variant id of a request among responses that vary on `names`. */
function variantOf(origin: string, headers: IncomingHttpHeaders, names: readonly string[]): string {
  const h = createHash('sha256');
  h.update(origin);
  for (const n of names) h.update(`\u0001${n}\u0000${varyValue(headers, n)}`);
  return h.digest('base64url').slice(0, 22);
}

/**
 * The scheme and Host a request came with: part of every variant, because the upstream sees them
 * (X-Forwarded-Proto / -Host, Forwarded) and may build links from them. A request with a forged
 * Host gets its own entry and can never poison the one other clients are served.
 */
function originOf(req: Exchange['req'] | Forwarding['req']): string {
  const h = req.headers;
  const host = (h.host ?? (h[':authority'] as string | undefined) ?? '').toLowerCase();
  return `${(req.raw.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'}://${host}`;
}

async function lookup(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  rc: RouteCache,
  io: CacheIO,
  followed: boolean,
): Promise<void> {
  const headers = ex.req.headers;
  const url = cacheKey(ex.target);
  const reqcc = requestControl(headers);
  // A fetch of this URL in flight (a miss or a validation) is about to store it: wait for it first.
  const inflight = followed || rc.dryRun ? undefined : rc.inflight.get(url);
  if (inflight) {
    await Promise.race([inflight, delay(rc.coalesceTimeoutMs)]);
    if (ex.res.destroyed) return;
    followed = true;
  }
  const origin = originOf(ex.req);
  const entry = await rc.store.get(url, (names) => variantOf(origin, headers, names));
  if (ex.res.destroyed) return;
  const now = Date.now();
  if (entry) {
    const v = evaluate(entry, reqcc, rc, now);
    if (rc.dryRun) {
      record(ex, 'bypass', { wouldServe: v.use });
    } else if (v.use === 'fresh') {
      record(ex, 'hit');
      return answerStored(ex, rc, io, entry, v, `hit; ttl=${Math.round(v.lifetime - v.age)}`);
    } else if (v.use === 'stale-while-revalidate') {
      record(ex, 'stale');
      revalidateInBackground(ex, forward, to, rc, url, entry);
      return answerStored(
        ex,
        rc,
        io,
        entry,
        v,
        `hit; ttl=${Math.round(v.lifetime - v.age)}; detail=stale-while-revalidate`,
      );
    } else if (v.use === 'max-stale') {
      record(ex, 'stale');
      return answerStored(
        ex,
        rc,
        io,
        entry,
        v,
        `hit; ttl=${Math.round(v.lifetime - v.age)}; detail=max-stale`,
      );
    }
  }
  const ranged = headers.range !== undefined && entry === undefined;
  // Concurrent misses of one URL: followers wait for the leader's fetch, then look up again.
  if (!followed && !ranged && !rc.dryRun) {
    const pending = rc.inflight.get(url);
    if (pending) {
      await Promise.race([pending, delay(rc.coalesceTimeoutMs)]);
      if (ex.res.destroyed) return;
      return lookup(ex, forward, to, rc, io, true);
    }
  }
  let done: () => void = () => undefined;
  if (!ranged && !rc.dryRun && ex.req.method === 'GET' && !rc.inflight.has(url)) {
    const p = new Promise<void>((resolve) => {
      done = resolve;
    });
    rc.inflight.set(url, p);
    const release = done;
    done = () => {
      if (rc.inflight.get(url) === p) rc.inflight.delete(url);
      release();
    };
  }
  fetchThrough(ex, forward, to, rc, io, url, reqcc, entry && !rc.dryRun ? entry : undefined, ranged, done);
}

interface Verdict {
  use: 'fresh' | 'stale-while-revalidate' | 'max-stale' | 'validate';
  age: number;
  lifetime: number;
  /** A stale answer is forbidden (must-revalidate, proxy-revalidate, s-maxage, no-cache). */
  mustRevalidate: boolean;
  /** The stored response says no-cache: never served without a successful validation. */
  noCache: boolean;
  staleIfError: number;
}

function evaluate(entry: StoredResponse, reqcc: Directives, rc: RouteCache, now: number): Verdict {
  const control = responseControl(entry.headers, rc.targeted, rc.surrogate);
  const cc = control.cc;
  const lifetime = freshnessLifetime(entry.status, entry.headers, control, entry.responseTime, rc);
  const age = entry.initialAge + Math.max(0, now - entry.responseTime) / 1000;
  const mustRevalidate = cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage');
  const staleIfError = Math.max(seconds(cc, 'stale-if-error'), seconds(reqcc, 'stale-if-error'));
  const noCache = cc.has('no-cache');
  const v: Verdict = { use: 'validate', age, lifetime, mustRevalidate, noCache, staleIfError };
  if (noCache || reqcc.has('no-cache')) return v;
  const reqMaxAge = deltaSeconds(reqcc, 'max-age');
  if (reqMaxAge !== undefined && !(age <= reqMaxAge)) return v;
  const minFresh = deltaSeconds(reqcc, 'min-fresh');
  if (minFresh !== undefined && !(lifetime - age >= minFresh)) return v;
  if (lifetime > age) {
    v.use = 'fresh';
    return v;
  }
  if (mustRevalidate) return v;
  const maxStale = reqcc.get('max-stale');
  if (
    maxStale === true ||
    (typeof maxStale === 'string' && /^\d+$/.test(maxStale) && age - lifetime <= Number(maxStale))
  ) {
    v.use = 'max-stale';
    return v;
  }
  const swr = seconds(cc, 'stale-while-revalidate');
  if (swr > 0 && age - lifetime <= swr) v.use = 'stale-while-revalidate';
  return v;
}

function seconds(d: Directives, name: string): number {
  const s = deltaSeconds(d, name);
  return s === undefined || Number.isNaN(s) ? 0 : s;
}

function record(ex: Exchange, result: CacheResult, detail?: Record<string, unknown>): void {
  // dry-run recorded its one decision (what it would have served) at the lookup.
  if ((ex.ctx?.cache as RouteCache | undefined)?.dryRun && result !== 'bypass') return;
  const d: Decision = { policy: 'cache', outcome: 'allow', reason: result };
  if (detail) d.detail = detail;
  ex.ctx?.decisions.push(d);
}

/**
 * The cache's part of a client answer: Cache-Status (the upstream's members first, this cache's
 * last, RFC 9211 §2), and no Surrogate-Control (it is for surrogates, this one consumed it).
 */
function withCacheStatus(headers: OutgoingHttpHeaders, member: string, rc: RouteCache): void {
  if (rc.surrogate !== undefined) delete headers['surrogate-control'];
  const prior = headers['cache-status'];
  const ours = `${CACHE_STATUS_NAME}; ${member}`;
  headers['cache-status'] =
    prior === undefined ? ours : `${Array.isArray(prior) ? prior.join(', ') : String(prior)}, ${ours}`;
}

/** Answer from a stored response: Age, Cache-Status, and the client's conditionals and Range. */
function answerStored(
  ex: Exchange,
  rc: RouteCache,
  io: CacheIO,
  entry: StoredResponse,
  v: Pick<Verdict, 'age'>,
  status: string,
  extra?: OutgoingHttpHeaders,
): undefined {
  const headers: OutgoingHttpHeaders = { ...entry.headers, ...extra };
  headers.age = String(Math.min(Math.floor(v.age), 2_147_483_648));
  withCacheStatus(headers, status, rc);
  const reqh = ex.req.headers;
  if (notModified(reqh, entry)) {
    for (const n of NOT_IN_304) delete headers[n];
    return io.complete(ex, 304, headers, undefined);
  }
  const isHead = ex.req.method === 'HEAD';
  if (entry.status === 200 && reqh.range !== undefined && !isHead && ifRangeHolds(reqh['if-range'], entry)) {
    const range = byteRange(String(reqh.range), entry.body.length);
    if (range === 'unsatisfiable') {
      const h: OutgoingHttpHeaders = { ...headers, 'content-range': `bytes */${entry.body.length}` };
      delete h['content-length'];
      delete h['content-type'];
      return io.complete(ex, 416, h, EMPTY);
    }
    if (range) {
      const [start, end] = range;
      headers['content-range'] = `bytes ${start}-${end}/${entry.body.length}`;
      headers['content-length'] = String(end - start + 1);
      return io.complete(ex, 206, headers, entry.body.subarray(start, end + 1));
    }
  }
  if (entry.status !== 204 && entry.status !== 304 && headers['content-length'] === undefined)
    headers['content-length'] = String(entry.body.length);
  io.complete(ex, entry.status, headers, isHead ? undefined : entry.body);
}

/** Whether the client's own validators match the stored response (RFC 9110 §13.2.2 order). */
function notModified(reqh: IncomingHttpHeaders, entry: StoredResponse): boolean {
  if (entry.status !== 200) return false;
  const inm = reqh['if-none-match'];
  if (inm !== undefined) return noneMatch(inm, header(entry.headers, 'etag'));
  const ims = dateValue(reqh['if-modified-since']);
  if (ims === undefined) return false;
  const lm = dateValue(header(entry.headers, 'last-modified')) ?? dateValue(header(entry.headers, 'date'));
  return lm !== undefined && lm <= ims;
}

function ifRangeHolds(value: string | string[] | undefined, entry: StoredResponse): boolean {
  if (value === undefined) return true;
  const ifRange = Array.isArray(value) ? (value[0] ?? '') : value;
  const etag = header(entry.headers, 'etag');
  if (ifRange.startsWith('"') || ifRange.startsWith('W/'))
    return etag !== undefined && !etag.startsWith('W/') && ifRange === etag;
  const lm = dateValue(header(entry.headers, 'last-modified'));
  return lm !== undefined && dateValue(ifRange) === lm;
}

/** A single `bytes=` range resolved against `length`; undefined for anything else (full answer). */
function byteRange(value: string, length: number): [number, number] | 'unsatisfiable' | undefined {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(value);
  if (!m) return undefined;
  const [, a, b] = m as unknown as [string, string, string];
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return [Math.max(0, length - n), length - 1];
  }
  const start = Number(a);
  const end = b === '' ? length - 1 : Math.min(Number(b), length - 1);
  if (b !== '' && Number(b) < start) return undefined;
  if (start >= length) return 'unsatisfiable';
  return [start, end];
}

function header(h: Record<string, string | string[]>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The policies' request changes plus the cache's own: validators set, the client's removed. */
function extrasFor(
  ex: Exchange,
  rc: RouteCache,
  set: Record<string, string>,
  remove: readonly string[],
): ForwardExtras {
  const ctx = ex.ctx;
  const removeUpstreamHeaders = new Set(ctx?.removeUpstreamHeaders);
  for (const n of remove) removeUpstreamHeaders.add(n);
  return {
    setUpstreamHeaders: { ...ctx?.setUpstreamHeaders, ...rc.upstreamHeaders, ...set },
    removeUpstreamHeaders,
    // Response edits are the lifecycle's, applied to whatever the cache answers (io.open / complete).
    responseHeaders: {},
    responseEdits: [],
    body: ctx?.body,
    upstream: ctx?.upstream,
  };
}

/**
 * Forward a GET/HEAD (a miss, or the validation of `stale`) and answer from what comes back:
 * store it when allowed, refresh `stale` on a 304, fall back to `stale` on an error when
 * stale-if-error allows.
 */
function fetchThrough(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  rc: RouteCache,
  io: CacheIO,
  url: string,
  reqcc: Directives,
  stale: StoredResponse | undefined,
  ranged: boolean,
  done: () => void,
): void {
  const req = ex.req;
  const method = req.method;
  const set: Record<string, string> = {};
  const etag = stale ? header(stale.headers, 'etag') : undefined;
  const lastModified = stale ? header(stale.headers, 'last-modified') : undefined;
  if (etag) set['if-none-match'] = etag;
  if (lastModified) set['if-modified-since'] = lastModified;
  const validating = stale !== undefined && (etag !== undefined || lastModified !== undefined);
  const verdict = stale ? evaluate(stale, reqcc, rc, Date.now()) : undefined;
  // A ranged miss goes upstream as asked (and is not stored); otherwise the cache wants a full answer.
  const remove = ranged ? [] : CLIENT_CONDITIONALS;
  const requestTime = Date.now();
  const forwarding: Forwarding = {
    req,
    res: undefined as never,
    target: ex.target,
    ctx: extrasFor(ex, rc, set, remove),
    rec: ex.rec,
    tapped: true,
  };
  const fwd = stale ? 'stale' : reqcc.has('no-cache') ? 'request' : 'uri-miss';
  let responseTime = 0;
  let storeAs:
    | {
        vary: string[];
        variant: string;
        headers: Record<string, string | string[]>;
        status: number;
        age: number;
      }
    | undefined;
  let refreshed: StoredResponse | undefined;
  let fallback = false;
  // Once the client's answer is complete (from the store, or a 304), the upstream body is still
  // collected for the store: the client going away no longer aborts it.
  let answeredFromStore = false;
  const handler: TapHandler = {
    head(status, headers) {
      responseTime = Date.now();
      if (validating && status === 304 && stale) {
        // Refresh the stored response and answer from it (the 304's Set-Cookie goes to this client only).
        refreshed = {
          ...stale,
          headers: updateHeaders(stale.headers, headers),
          requestTime,
          responseTime,
          initialAge: initialAge(headers, requestTime, responseTime),
        };
        record(ex, 'revalidated');
        const extra: OutgoingHttpHeaders = {};
        if (headers['set-cookie'] !== undefined) extra['set-cookie'] = headers['set-cookie'];
        answeredFromStore = true;
        answerStored(
          ex,
          rc,
          io,
          refreshed,
          { age: refreshed.initialAge },
          'fwd=stale; fwd-status=304',
          extra,
        );
        return { mode: 'discard' };
      }
      if (stale && verdict && !verdict.mustRevalidate && ERROR_STATUSES.has(status)) {
        const age = stale.initialAge + (Date.now() - stale.responseTime) / 1000;
        // The forwarder's own answer: no upstream could be reached (refused, reset, timed out, none healthy).
        const problem = ex.rec.problem?.code;
        const unreachable = problem !== undefined && UNREACHABLE.has(problem);
        const withinStaleIfError = age - verdict.lifetime <= verdict.staleIfError;
        if (withinStaleIfError || (unreachable && rc.staleIfUnreachable && !verdict.noCache)) {
          ex.rec.problem = undefined;
          fallback = true;
          record(ex, 'stale');
          answeredFromStore = true;
          answerStored(
            ex,
            rc,
            io,
            stale,
            { age },
            `hit; ttl=${Math.round(verdict.lifetime - age)}; detail=${withinStaleIfError ? 'stale-if-error' : 'stale-if-unreachable'}; fwd-status=${status}`,
          );
          return { mode: 'discard' };
        }
      }
      const control = responseControl(headers, rc.targeted, rc.surrogate);
      const why = ranged
        ? 'partial'
        : unstorableReason(
            method,
            req.headers,
            reqcc,
            status,
            headers,
            control,
            rc,
            req.headers.authorization !== undefined || ex.ctx?.identity !== undefined,
          );
      const out: OutgoingHttpHeaders = { ...headers };
      if (why === undefined) {
        const vary = varyNames(headers) ?? [];
        storeAs = {
          vary,
          variant: variantOf(originOf(req), req.headers, vary),
          headers: headersToStore(headers),
          status,
          age: initialAge(headers, requestTime, responseTime),
        };
        record(ex, 'miss');
        withCacheStatus(out, `fwd=${fwd}; fwd-status=${status}; stored`, rc);
      } else {
        record(ex, method === 'GET' ? 'uncacheable' : 'miss', { reason: why });
        withCacheStatus(
          out,
          `fwd=${method === 'HEAD' ? 'method' : fwd}; fwd-status=${status}; detail=${why}`,
          rc,
        );
      }
      if (
        !ranged &&
        status === 200 &&
        storeAs &&
        notModified(req.headers, { ...storeAs, body: EMPTY, requestTime, responseTime, initialAge: 0 })
      ) {
        for (const n of NOT_IN_304) delete out[n];
        answeredFromStore = true;
        io.complete(ex, 304, out, undefined);
        return { mode: 'collect' };
      }
      return { mode: 'stream', sink: io.open(ex, status, out) };
    },
    end(body) {
      if (refreshed) {
        void rc.store
          .put(
            url,
            varyNames(refreshed.headers) ?? [],
            variantOf(originOf(req), req.headers, varyNames(refreshed.headers) ?? []),
            refreshed,
            ttlOf(refreshed, rc),
          )
          .finally(done);
        return;
      }
      if (storeAs && body !== undefined && !fallback) {
        const entry: StoredResponse = {
          status: storeAs.status,
          headers: storeAs.headers,
          body,
          requestTime,
          responseTime,
          initialAge: storeAs.age,
        };
        void rc.store.put(url, storeAs.vary, storeAs.variant, entry, ttlOf(entry, rc)).finally(done);
        return;
      }
      done();
    },
    abort() {
      done();
    },
  };
  const tap = new Tap(handler, rc.maxEntryBytes, true);
  ex.res.once('close', () => {
    if (!answeredFromStore) tap.clientClosed();
  });
  (forwarding as { res: unknown }).res = tap;
  forward(forwarding, to);
}

/** How long the store keeps an entry: fresh life, the stale windows, and time to revalidate it. */
function ttlOf(entry: StoredResponse, rc: RouteCache): number {
  const control = responseControl(entry.headers, rc.targeted, rc.surrogate);
  const lifetime = freshnessLifetime(entry.status, entry.headers, control, entry.responseTime, rc);
  const cc = control.cc;
  const stale = Math.max(seconds(cc, 'stale-while-revalidate'), seconds(cc, 'stale-if-error'));
  const remaining = Math.max(0, lifetime - entry.initialAge) + stale;
  const validators = entry.headers.etag !== undefined || entry.headers['last-modified'] !== undefined;
  return remaining * 1000 + (validators || cc.has('no-cache') ? rc.keepStaleMs : 0) + 1000;
}

/** Revalidate `entry` without a client waiting (stale-while-revalidate); one at a time per URL. */
function revalidateInBackground(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  rc: RouteCache,
  url: string,
  entry: StoredResponse,
): void {
  const key = `${url}\u0000swr`;
  if (rc.inflight.has(key)) return;
  let resolve: () => void = () => undefined;
  rc.inflight.set(
    key,
    new Promise<void>((r) => {
      resolve = r;
    }),
  );
  const finish = () => {
    rc.inflight.delete(key);
    resolve();
  };
  const src = ex.req;
  const headers: IncomingHttpHeaders = { ...src.headers };
  for (const n of CLIENT_CONDITIONALS) delete headers[n];
  delete headers['content-length'];
  delete headers['transfer-encoding'];
  const socket = {
    remoteAddress: src.raw.socket.remoteAddress,
    encrypted: (src.raw.socket as { encrypted?: boolean }).encrypted,
  };
  // The client's request may be long gone when this one is sent: a copy of what the forwarder reads
  // (headers, client address, socket facts), without a body. Its stream is never read (no body).
  const req: Forwarding['req'] = {
    method: 'GET',
    headers,
    ip: src.ip,
    raw: { url: src.raw.url, headers, socket } as unknown as Forwarding['req']['raw'],
  };
  const set: Record<string, string> = {};
  const etag = header(entry.headers, 'etag');
  const lm = header(entry.headers, 'last-modified');
  if (etag) set['if-none-match'] = etag;
  if (lm) set['if-modified-since'] = lm;
  const requestTime = Date.now();
  // A 304 refreshes `entry` (its body kept); a storable full answer replaces it once collected.
  let refreshed: StoredResponse | undefined;
  let replacement: StoredResponse | undefined;
  const handler: TapHandler = {
    head(status, h) {
      const responseTime = Date.now();
      const age = initialAge(h, requestTime, responseTime);
      if (status === 304) {
        refreshed = {
          ...entry,
          headers: updateHeaders(entry.headers, h),
          requestTime,
          responseTime,
          initialAge: age,
        };
        return { mode: 'discard' };
      }
      const control = responseControl(h, rc.targeted, rc.surrogate);
      if (unstorableReason('GET', headers, NO_DIRECTIVES, status, h, control, rc) !== undefined)
        return { mode: 'discard' };
      replacement = {
        status,
        headers: headersToStore(h),
        body: EMPTY,
        requestTime,
        responseTime,
        initialAge: age,
      };
      return { mode: 'collect' };
    },
    end(body) {
      const next = refreshed ?? (replacement && body !== undefined ? { ...replacement, body } : undefined);
      if (!next) return finish();
      const vary = varyNames(next.headers) ?? [];
      void rc.store
        .put(url, vary, variantOf(originOf(req), headers, vary), next, ttlOf(next, rc))
        .finally(finish);
    },
    abort: finish,
  };
  const tap = new Tap(handler, rc.maxEntryBytes, true);
  const forwarding: Forwarding = {
    req,
    res: tap as unknown as Forwarding['res'],
    target: ex.target,
    ctx: extrasFor(ex, rc, set, CLIENT_CONDITIONALS),
    rec: undefined,
  };
  forward(forwarding, to);
}

/** Forward without caching (other methods); `after` runs on the answer's head before it is sent. */
function passThrough(
  ex: Exchange,
  forward: Forward,
  to: ForwardTarget,
  rc: RouteCache,
  io: CacheIO,
  fwd: string,
  after: ((status: number, headers: OutgoingHttpHeaders) => Promise<unknown> | undefined) | undefined,
): undefined {
  record(ex, 'bypass');
  const handler: TapHandler = {
    head(status, headers) {
      const out: OutgoingHttpHeaders = { ...headers };
      withCacheStatus(out, `fwd=${fwd}; fwd-status=${status}`, rc);
      const hold = after?.(status, headers);
      if (!hold) return { mode: 'stream', sink: io.open(ex, status, out) };
      // The invalidation lands before the client sees the answer (and can ask again).
      let sink: ClientSink | undefined;
      const lazy: ClientSink = {
        write: (c) => (sink as ClientSink).write(c),
        onDrain: (fn) => (sink as ClientSink).onDrain(fn),
        end: () => sink?.end(),
        destroy: (e) => sink?.destroy(e),
        onClose: (fn) => sink?.onClose(fn),
      };
      const opened = hold
        .catch(() => undefined)
        .then(() => {
          sink = io.open(ex, status, out);
        });
      return { mode: 'stream', sink: lazy, hold: opened };
    },
    end: () => undefined,
    abort: () => undefined,
  };
  const tap = new Tap(handler, rc.maxEntryBytes, false);
  ex.res.once('close', () => tap.clientClosed());
  forward(
    {
      req: ex.req,
      res: tap as unknown as Forwarding['res'],
      target: ex.target,
      ctx: extrasFor(ex, rc, {}, []),
      rec: ex.rec,
      tapped: true,
    },
    to,
  );
}

/** Drop the request URL and the same-origin Location / Content-Location of a successful unsafe request. */
function invalidate(ex: Exchange, rc: RouteCache, headers: OutgoingHttpHeaders): Promise<unknown> {
  const urls = new Set([cacheKey(ex.target)]);
  const host = ex.req.headers.host ?? (ex.req.headers[':authority'] as string | undefined);
  for (const name of ['location', 'content-location']) {
    const v = headers[name];
    if (typeof v !== 'string') continue;
    const u = sameOriginKey(v, host);
    if (u) urls.add(u);
  }
  const purges: Array<Promise<number>> = [];
  for (const store of rc.serviceStores) for (const u of urls) purges.push(store.purge(u).catch(() => 0));
  return Promise.all(purges);
}

/** The cache key of a Location-style reference on this host; undefined for other origins. */
export function sameOriginKey(ref: string, host: string | undefined): string | undefined {
  try {
    const base = `http://${host ?? 'localhost'}`;
    const u = new URL(ref, `${base}/`);
    if (host && u.host !== new URL(base).host) return undefined;
    return cacheKey(canonicalTarget(u.pathname + u.search));
  } catch {
    return undefined;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
