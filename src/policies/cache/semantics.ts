/**
 * RFC 9111 for a shared cache, as plain functions over header records: which responses may be
 * stored (§3), how long they stay fresh (§4.2.1, heuristics only where §4.2.2 allows), how old a
 * stored response is (§4.2.3), whether a stored response may answer a request (§4), and how a 304
 * updates it (§3.2, §4.3.4). CDN-Cache-Control (RFC 9213) and configured targeted fields replace
 * Cache-Control and Expires when present.
 *
 * Not http-cache-semantics (evaluated, kept out): it splits Cache-Control on every comma (quoted
 * strings included), lets the last duplicate directive win, reads `Age: 0, 0` or `abc` as a number,
 * ignores the apparent age from `Date`, has no targeted fields nor Range, and refuses every
 * response with Set-Cookie where this cache stores the response without it.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { type Directives, deltaSeconds, MAX_DELTA_SECONDS, parseDirectives } from './directives.ts';

/** Statuses that may be cached with heuristic freshness (RFC 9110 §15.1, "heuristically cacheable"). */
const HEURISTIC_STATUSES = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]);
/** Statuses this cache understands (for `must-understand`). */
const UNDERSTOOD_STATUSES = new Set([
  200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 451, 500, 501, 502, 503, 504,
]);
/** The share of the time since Last-Modified taken as heuristic freshness (RFC 9111 §4.2.2: 10 %). */
const HEURISTIC_FRACTION = 0.1;
/** Heuristic freshness never exceeds a day. */
const HEURISTIC_MAX_SECONDS = 86_400;
/**
 * Response headers never stored: hop-by-hop ones, proxy authentication, the gateway's own request
 * id, and cookies (a Set-Cookie belongs to the client whose request fetched the response, never to
 * the next one served from the cache).
 */
export const NOT_STORED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authentication-info',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'set-cookie',
  'set-cookie2',
  'x-request-id',
  'age',
]);
/** Headers a 304 never changes on the stored response (RFC 9111 §3.2 and the suite's reading of it). */
const NOT_UPDATED_BY_304 = new Set([
  'content-length',
  'content-encoding',
  'content-range',
  'content-md5',
  'etag',
  'transfer-encoding',
]);

/** A stored response (both stores keep this shape). */
export interface StoredResponse {
  status: number;
  /** Response headers as stored (see NOT_STORED), names lower case. */
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** When the request that fetched it was sent, ms since the epoch. */
  requestTime: number;
  /** When its headers arrived, ms since the epoch. */
  responseTime: number;
  /** Its corrected initial age in seconds (see `initialAge`); Infinity for an invalid Age. */
  initialAge: number;
}

/** What the rule configured (see the policy schema). */
export interface CachePolicyOptions {
  /** Targeted field names in order (lower case), CDN-Cache-Control included by default. */
  targeted: readonly string[];
  /** This cache's Surrogate-Control device token; undefined: Surrogate-Control is not obeyed. */
  surrogate?: string;
  /** Freshness for responses that carry none, in seconds; undefined: RFC 9111 heuristics only. */
  ttl?: number;
}

/** The directives governing a response: the first targeted field present, else Cache-Control. */
export interface ResponseControl {
  cc: Directives;
  /** True when a targeted field supplied `cc` (Expires is then ignored). */
  targeted: boolean;
}

/**
 * The directives that govern a response's caching: the first configured targeted field present
 * (CDN-Cache-Control among them), then `Surrogate-Control` when `surrogate` names this cache's
 * device token (W3C Edge Architecture: a member `max-age=60;token` applies only to that device),
 * else Cache-Control.
 */
export function responseControl(
  headers: IncomingHttpHeaders | OutgoingHttpHeaders,
  targeted: readonly string[],
  surrogate?: string,
): ResponseControl {
  for (const name of targeted) {
    const v = headers[name];
    if (v === undefined || v === '') continue;
    const d = parseDirectives(v as string | string[], true);
    if (d.size > 0) return { cc: d, targeted: true };
  }
  if (surrogate !== undefined) {
    const v = headers['surrogate-control'];
    if (v !== undefined && v !== '') {
      const d = surrogateDirectives(Array.isArray(v) ? v.join(',') : String(v), surrogate);
      if (d.size > 0) return { cc: d, targeted: true };
    }
  }
  return { cc: parseDirectives(headers['cache-control'] as string | string[] | undefined), targeted: false };
}

/** Surrogate-Control members for `token`: untargeted ones and those `;token` names. */
function surrogateDirectives(value: string, token: string): Directives {
  const kept: string[] = [];
  for (const member of value.split(',')) {
    const semi = member.indexOf(';');
    if (semi === -1) kept.push(member);
    else if (
      member
        .slice(semi + 1)
        .trim()
        .toLowerCase() === token
    )
      kept.push(member.slice(0, semi));
  }
  return parseDirectives(kept.join(','));
}

/** The request's own directives (Cache-Control, or `Pragma: no-cache` when it has none). */
export function requestControl(headers: IncomingHttpHeaders): Directives {
  const cc = headers['cache-control'];
  if (cc !== undefined) return parseDirectives(cc);
  const pragma = parseDirectives(headers.pragma);
  return pragma.has('no-cache') ? new Map([['no-cache', true]]) : pragma;
}

/** Why a response is not stored (Cache-Status `detail`), or undefined when it may be. */
export function unstorableReason(
  method: string,
  reqHeaders: IncomingHttpHeaders,
  reqcc: Directives,
  status: number,
  resHeaders: OutgoingHttpHeaders,
  control: ResponseControl,
  opts: CachePolicyOptions,
  /**
   * The request carried credentials: an Authorization header, or any credential an auth policy
   * accepted (an API key in another header or a cookie counts as much as Authorization does).
   */
  authenticated: boolean = reqHeaders.authorization !== undefined,
): string | undefined {
  if (method !== 'GET') return 'method';
  if (status < 200 || status === 206 || status === 304 || status > 599) return 'status';
  const cc = control.cc;
  const mustUnderstand = cc.has('must-understand');
  if (mustUnderstand && !UNDERSTOOD_STATUSES.has(status)) return 'must-understand';
  if (!mustUnderstand && cc.has('no-store')) return 'no-store';
  if (reqcc.has('no-store')) return 'request-no-store';
  if (cc.has('private')) return 'private';
  if (authenticated && !(cc.has('public') || cc.has('s-maxage') || cc.has('must-revalidate')))
    return 'authorization';
  if (varyNames(resHeaders) === null) return 'vary-star';
  const explicit =
    cc.has('max-age') || cc.has('s-maxage') || (!control.targeted && resHeaders.expires !== undefined);
  if (explicit || cc.has('public')) return undefined;
  if (!HEURISTIC_STATUSES.has(status)) return 'no-freshness';
  // Heuristically cacheable: worth storing when it can be fresh or revalidated later.
  if (opts.ttl !== undefined || resHeaders['last-modified'] !== undefined || resHeaders.etag !== undefined)
    return undefined;
  return 'no-freshness';
}

/** Freshness lifetime in seconds (RFC 9111 §4.2.1); 0 when invalid or absent. */
export function freshnessLifetime(
  status: number,
  headers: OutgoingHttpHeaders,
  control: ResponseControl,
  responseTime: number,
  opts: CachePolicyOptions,
): number {
  const cc = control.cc;
  const sMaxage = deltaSeconds(cc, 's-maxage');
  if (sMaxage !== undefined) return Number.isNaN(sMaxage) ? 0 : sMaxage;
  const maxAge = deltaSeconds(cc, 'max-age');
  if (maxAge !== undefined) return Number.isNaN(maxAge) ? 0 : maxAge;
  const date = dateValue(headers.date) ?? responseTime;
  if (!control.targeted && headers.expires !== undefined) {
    const expires = dateValue(headers.expires);
    if (expires === undefined) return 0; // invalid (e.g. "0"): already expired
    return Math.max(0, Math.floor((expires - date) / 1000));
  }
  if (!HEURISTIC_STATUSES.has(status) && !cc.has('public')) return 0;
  if (opts.ttl !== undefined) return opts.ttl;
  const lastModified = dateValue(headers['last-modified']);
  if (lastModified === undefined || lastModified >= date) return 0;
  return Math.min(HEURISTIC_MAX_SECONDS, Math.floor(((date - lastModified) / 1000) * HEURISTIC_FRACTION));
}

/**
 * The corrected initial age in seconds (RFC 9111 §4.2.3), Infinity when the Age header is not one
 * non-negative integer (`abc`, `-1`, `1.0`, `0, 0`, two lines): such a response is stale.
 */
export function initialAge(headers: OutgoingHttpHeaders, requestTime: number, responseTime: number): number {
  const raw = headers.age;
  let ageValue = 0;
  if (raw !== undefined) {
    if (typeof raw !== 'string' || !/^\d+$/.test(raw.trim())) return Number.POSITIVE_INFINITY;
    ageValue = Math.min(Number(raw.trim()), MAX_DELTA_SECONDS);
  }
  const date = dateValue(headers.date);
  const apparent = date === undefined ? 0 : Math.max(0, (responseTime - date) / 1000);
  const corrected = ageValue + (responseTime - requestTime) / 1000;
  return Math.max(apparent, corrected);
}

/** An HTTP-date (any of the three RFC 9110 formats) in ms, or undefined when invalid. */
export function dateValue(v: string | string[] | number | undefined): number | undefined {
  if (typeof v !== 'string') return undefined;
  if (!/^[A-Za-z]{3}/.test(v)) return undefined; // "0", "-1", numbers: not dates
  const ms = Date.parse(v);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The field names a response varies on, lower case and sorted; null for `Vary: *` (never
 * reusable); empty for none.
 */
export function varyNames(headers: OutgoingHttpHeaders | Record<string, string | string[]>): string[] | null {
  const v = headers.vary;
  if (v === undefined) return [];
  const names = new Set<string>();
  for (const line of Array.isArray(v) ? v : [String(v)])
    for (const part of line.split(',')) {
      const name = part.trim().toLowerCase();
      if (name === '*') return null;
      if (name !== '') names.add(name);
    }
  return [...names].sort();
}

/** Request fields whose values are case-insensitive tokens (language tags, codings, charsets). */
const CASELESS_FIELDS = new Set(['accept-language', 'accept-encoding', 'accept-charset']);

/**
 * A request header's value as a Vary secondary key compares it: lines combined, whitespace around
 * commas and at the ends dropped, case folded where the field's values are case-insensitive;
 * absent is distinct from empty.
 */
export function varyValue(headers: IncomingHttpHeaders, name: string): string {
  const v = headers[name];
  if (v === undefined) return '\u0000absent';
  const s = (Array.isArray(v) ? v.join(',') : v)
    .split(',')
    .map((p) => p.trim())
    .join(',');
  return CASELESS_FIELDS.has(name) ? s.toLowerCase() : s;
}

/** The headers to store from a response: without NOT_STORED ones and those its Connection names. */
export function headersToStore(headers: OutgoingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = new Set<string>();
  const conn = headers.connection;
  if (conn !== undefined) for (const t of String(conn).split(',')) listed.add(t.trim().toLowerCase());
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || NOT_STORED.has(name) || listed.has(name)) continue;
    out[name] = typeof v === 'number' ? String(v) : v;
  }
  return out;
}

/** A stored response's headers updated by a 304 (RFC 9111 §3.2): every field but the body's own. */
export function updateHeaders(
  stored: Record<string, string | string[]>,
  fresh: OutgoingHttpHeaders,
): Record<string, string | string[]> {
  const out = { ...stored };
  for (const [name, v] of Object.entries(headersToStore(fresh))) {
    if (NOT_UPDATED_BY_304.has(name)) continue;
    out[name] = v;
  }
  // A 304 without Age carries the age of the revalidation, not of the stored copy.
  delete out.age;
  return out;
}

/** Strong or weak comparison of entity tags in an If-None-Match list (RFC 9110 §13.1.2: weak). */
export function noneMatch(ifNoneMatch: string, etag: string | undefined): boolean {
  if (ifNoneMatch.trim() === '*') return etag !== undefined;
  if (etag === undefined) return false;
  const bare = (t: string) => t.trim().replace(/^W\//, '');
  const want = bare(etag);
  return ifNoneMatch.split(',').some((t) => bare(t) === want);
}
