/**
 * The detection engine: splits a request into named values, normalises each once (lazily) and
 * runs the compiled rules over them; the scores of distinct rules add up (anomaly scoring), so one
 * weak signal does not block while a critical one does.
 */
import { parseCookies } from '../../net/cookies.ts';
import { bodyTargets, pushForm } from './body.ts';
import { bodyReadings } from './charset.ts';
import { DEFAULT_MAX_VALUE_BYTES, DEFAULT_MAX_VALUES } from './limits.ts';
import { MultipartError, parseMultipart } from './multipart.ts';
import { Prefilter } from './plain.ts';
import { REQUEST_RULES, RULES } from './rules/index.ts';
import { fullDecode, pathNormalize, shellNormalize, sqlNormalize } from './transforms.ts';
import {
  type InspectResult,
  type RequestParts,
  type RequestRule,
  type Rule,
  SCORE,
  type Target,
  type TargetKind,
  type View,
} from './types.ts';

/** Values of only these characters cannot carry markup, shell syntax or quotes (see Rule.plain). */
const PLAIN = /^[A-Za-z0-9 _.,@-]*$/;

/**
 * Plain characters and the apostrophe: prose (`it's fine`, `O'Brien`), the commonest value of a
 * browser form that is not plain. Only rules marked `plain` or `prose` can match such a value.
 */
const PROSE = /^[A-Za-z0-9 _.,@'-]*$/;
const MULTIPART_FORM = /^\s*multipart\/form-data\b/i;
const PLUS = /\+/g;
/** Kinds judged with the prose shortcut: payload values, which are judged on every request. */
const PROSE_KINDS: ReadonlySet<TargetKind> = new Set(['query', 'body']);

export { DEFAULT_MAX_VALUE_BYTES, DEFAULT_MAX_VALUES };
/** Id of the match added for a multipart body that is rejected (see multipart.ts). */
export const MULTIPART_RULE = 'multipart-invalid';

/**
 * Verdicts kept for values that repeat from request to request (a browser's User-Agent, Origin,
 * Referer, a session cookie, the path). Shared by every engine, so its size bounds the memory
 * whatever the number of routes: at most VERDICT_CACHE_ENTRIES × MAX_CACHED_VALUE_CHARS chars.
 */
const VERDICT_CACHE_ENTRIES = 4096;
/** Longer values are judged every time: they are rarely repeated and would crowd the cache. */
const MAX_CACHED_VALUE_CHARS = 512;
/**
 * Kinds whose verdicts are cached: headers, path, cookies and parameter names (the API's own
 * vocabulary: `limit`, `order`, `table` are SQL words and would run the rules every time). Query
 * and body values are the request's payload and vary.
 */
const CACHED_KINDS: ReadonlySet<TargetKind> = new Set([
  'path',
  'header',
  'cookie',
  'cookie-name',
  'query-name',
  'body-name',
]);
const NO_RULES: readonly Rule[] = [];
/** Cached values an engine remembers by their place in the last request (see judgeTarget). */
const MAX_PLACES = 32;
/** V8 keeps a substring this long or longer as a view of the string it was cut from. */
const MIN_SLICE_CHARS = 13;

/**
 * `value`, or a copy of it that does not keep alive the text it may have been cut from (a query
 * name is a view of the URL, a cookie name of the header): the concatenation is flattened into a
 * string of its own, which the slice then views.
 */
function unpinned(value: string): string {
  return value.length < MIN_SLICE_CHARS ? value : ` ${value}`.slice(1);
}
/**
 * Header names an engine keeps a slot for besides those it knows (SKIPPED_HEADERS,
 * STRUCTURED_HEADERS, COMMON_HEADERS): names are the client's, so their count is bounded.
 */
const MAX_HEADER_SLOTS = 64;
/** Headers browsers and API clients send that have no grammar of their own: slotted from the start. */
const COMMON_HEADERS: readonly string[] = [
  'user-agent',
  'origin',
  'referer',
  'sec-fetch-mode',
  'sec-fetch-site',
  'sec-fetch-dest',
  'sec-fetch-user',
  'sec-ch-ua',
  'sec-ch-ua-mobile',
  'sec-ch-ua-platform',
  'priority',
  'dnt',
  'x-requested-with',
];

/**
 * Headers the engine does not inspect, each for a reason:
 * - hop-by-hop headers and HTTP/2 pseudo-headers: the forwarder drops them (upstream/forward.ts),
 *   no application behind the gateway reads them; `:path` is the target, inspected as path and
 *   query; the method is judged by the request rules;
 * - `cookie`: split into cookies (net/cookies.ts), each name and value inspected on its own.
 */
const SKIPPED_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'expect',
  ':path',
  ':method',
  ':scheme',
  'cookie',
]);

/** A token list with optional q-values: `gzip, br;q=0.8`, `en-GB,en;q=0.9`. */
const TOKENS_Q = /^\s*[\w*.-]+(?:\s*;\s*q=[\d.]+)?(?:\s*,\s*[\w*.-]+(?:\s*;\s*q=[\d.]+)?)*\s*$/;
/**
 * A media type with token or simply quoted parameters (no quote or paren inside). Unquoted values
 * are RFC 9110 tokens without `,`, so a list of them never backtracks.
 */
const MEDIA = '[\\w!#$&^.+*-]+/[\\w!#$&^.+*-]+(?:\\s*;\\s*[\\w.-]+=(?:[\\w!#$&+.^-]+|"[\\w +,./:=?-]*"))*';
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
const ADDRESS = '(?:[0-9A-Fa-f:.]+|\\[[0-9A-Fa-f:.]+\\](?::\\d{1,5})?|unknown)';
const ETAG = '(?:W/)?"[\\w.+/=:-]*"';
const HTTP_DATE = '[A-Za-z]{3}, \\d{2} [A-Za-z]{3} \\d{4} \\d{2}:\\d{2}:\\d{2} GMT';

/**
 * Headers with a protocol grammar. A value that fits its grammar (tokens, digits, q-values,
 * addresses; no quotes, spaces between words or markup) cannot carry an injection and is not run
 * through the rules, which would only produce noise (`*\/*` reads as an SQL comment); a value that
 * does not fit is inspected like any other header. The client sets all of these: `X-Real-IP`,
 * `X-Forwarded-*` and `Forwarded` included (the forwarder also replaces them for untrusted peers).
 */
const STRUCTURED_HEADERS: ReadonlyMap<string, RegExp> = new Map([
  ['host', HOST],
  [':authority', HOST],
  ['accept', new RegExp(`^\\s*${MEDIA}(?:\\s*,\\s*${MEDIA})*\\s*$`)],
  ['content-type', new RegExp(`^\\s*${MEDIA}\\s*$`)],
  ['accept-encoding', TOKENS_Q],
  ['accept-language', TOKENS_Q],
  ['accept-charset', TOKENS_Q],
  // A scheme and a token68 credential (Bearer JWTs, Basic): anything else (Digest parameters) is inspected.
  ['authorization', /^[A-Za-z][\w-]* [A-Za-z0-9._~+/-]+=*$/],
  [
    'cache-control',
    /^\s*[\w-]+(?:=(?:[\w.-]+|"[\w ,.-]*"))?(?:\s*,\s*[\w-]+(?:=(?:[\w.-]+|"[\w ,.-]*"))?)*\s*$/,
  ],
  ['pragma', /^\s*[\w-]+\s*$/],
  ['content-length', /^\d+$/],
  ['if-match', new RegExp(`^\\s*(?:\\*|${ETAG}(?:\\s*,\\s*${ETAG})*)\\s*$`)],
  ['if-none-match', new RegExp(`^\\s*(?:\\*|${ETAG}(?:\\s*,\\s*${ETAG})*)\\s*$`)],
  ['if-range', new RegExp(`^(?:${ETAG}|${HTTP_DATE})$`)],
  ['if-modified-since', new RegExp(`^${HTTP_DATE}$`)],
  ['if-unmodified-since', new RegExp(`^${HTTP_DATE}$`)],
  ['range', /^bytes=\d*-\d*(?:\s*,\s*\d*-\d*)*$/],
  ['upgrade-insecure-requests', /^\d$/],
  ['traceparent', /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/],
  ['tracestate', /^\s*[\w@*/-]+=[\w.:/+-]*(?:\s*,\s*[\w@*/-]+=[\w.:/+-]*)*\s*$/],
  ['x-real-ip', new RegExp(`^${ADDRESS}$`)],
  ['x-forwarded-for', new RegExp(`^\\s*${ADDRESS}(?:\\s*,\\s*${ADDRESS})*\\s*$`)],
  ['x-forwarded-proto', /^https?$/],
  ['x-forwarded-host', HOST],
  ['x-forwarded-port', /^\d{1,5}$/],
  [
    'forwarded',
    /^\s*(?:[A-Za-z]+=(?:[\w.:-]+|"[\w.:[\]-]*")(?:\s*[;,]\s*[A-Za-z]+=(?:[\w.:-]+|"[\w.:[\]-]*"))*)\s*$/,
  ],
]);

/**
 * An exclusion: `target` is never checked by the listed rules/families (by all when both absent);
 * with `paths`, only on requests to those paths, and on every target when `target` is absent.
 */
export interface Exclusion {
  target?: string | undefined;
  /** Request paths the exclusion is limited to (see pathMatcher); every path when absent. */
  paths?: string[] | undefined;
  rules?: string[] | undefined;
  families?: string[] | undefined;
}

/** Engine settings, fixed at compile time. */
export interface EngineOptions {
  /** Rules up to this paranoia level run (default 1). */
  paranoia?: number;
  exclusions?: Exclusion[];
  /** Most values inspected per request, every kind counted together (default DEFAULT_MAX_VALUES). */
  maxValues?: number;
  /** Longest value inspected, in UTF-8 bytes (default DEFAULT_MAX_VALUE_BYTES). */
  maxValueBytes?: number;
  /**
   * Past a limit: `block` stops and reports `limit` without running the value rules (the caller
   * rejects); `inspect-prefix` judges the first `maxValues` values and the first `maxValueBytes`
   * of each, and reports `limit` too. Default block.
   */
  onLimit?: 'block' | 'inspect-prefix';
}

/** A compiled engine: `inspect` is the only per-request entry point. */
export interface WafEngine {
  inspect(parts: RequestParts): InspectResult;
  /** The rules this engine runs (after the paranoia filter). */
  readonly rules: readonly Rule[];
}

class LazyView implements View {
  readonly target: Target;
  #decoded?: string;
  #lower?: string;
  #sql?: string;
  #shell?: string;
  #path?: string;

  /** `lower`: the lower-cased value of a plain or prose value, which is its own decoding. */
  constructor(target: Target, lower?: string) {
    this.target = target;
    if (lower !== undefined) {
      this.#decoded = target.value;
      this.#lower = lower;
    }
  }
  get decoded(): string {
    this.#decoded ??= fullDecode(this.target.value);
    return this.#decoded;
  }
  get lower(): string {
    this.#lower ??= this.decoded.toLowerCase();
    return this.#lower;
  }
  get sql(): string {
    this.#sql ??= sqlNormalize(this.lower);
    return this.#sql;
  }
  get shell(): string {
    this.#shell ??= shellNormalize(this.lower);
    return this.#shell;
  }
  get path(): string {
    this.#path ??= pathNormalize(this.lower);
    return this.#path;
  }
}

/** The lazily normalised view of one value (exported for rule tests and benchmarks). */
export function viewOf(target: Target): View {
  return new LazyView(target);
}

const KINDS: readonly TargetKind[] = [
  'path',
  'query',
  'query-name',
  'header',
  'cookie',
  'cookie-name',
  'body',
  'body-name',
  'body-raw',
  'filename',
];

/** `<kind>:`, the verdict scope of a kind's values on an engine without exclusions. */
const KIND_SCOPES = Object.fromEntries(KINDS.map((k) => [k, `${k}:`])) as Record<TargetKind, string>;

function headerValue(v: string | string[] | undefined): string {
  return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v;
}

/** Split a request into the values rules look at, each with its exclusion key (no limits applied). */
export function requestTargets(parts: RequestParts): Target[] {
  const out: Target[] = [];
  const cap = Number.POSITIVE_INFINITY;
  pushUrlTargets(parts.url, parts.params, out, cap);
  for (const name of Object.keys(parts.headers)) {
    const lname = name.toLowerCase();
    if (SKIPPED_HEADERS.has(lname)) continue;
    const value = headerValue(parts.headers[name]);
    if (value && !STRUCTURED_HEADERS.get(lname)?.test(value))
      out.push({ kind: 'header', key: `header:${lname}`, value });
  }
  pushCookies(parts, out, cap);
  pushBodyTargets(parts, out, cap, { score: 0, matches: [] });
  return out;
}

function pushUrlTargets(url: string, params: RequestParts['params'], out: Target[], cap: number): void {
  const q = url.indexOf('?');
  const rawPath = q === -1 ? url : url.slice(0, q);
  if (rawPath && rawPath !== '/') out.push({ kind: 'path', key: 'path', value: rawPath });
  // Path parameters are arguments like query values (`/pets/{id}` feeds a query as much as `?id=`):
  // every rule for arguments judges them, under the `path` exclusion key.
  if (params)
    for (const name in params) {
      const value = params[name];
      if (value) out.push({ kind: 'query', key: 'path', value });
    }
  if (q !== -1) pushForm(url.slice(q + 1), 'query', out, cap);
}

/** `+` read as a space, as PHP and form decoders do: the WAF judges the reading that hides more. */
function plusAsSpace(v: string): string {
  return v.includes('+') ? v.replace(PLUS, ' ') : v;
}

/** Cookies as every policy reads them (net/cookies.ts), and the whole header when it hides pairs. */
function pushCookies(parts: RequestParts, out: Target[], cap: number): void {
  const cookies = parts.cookies ?? parseCookies(parts.headers.cookie);
  if (cookies.header === '') return;
  const values = cookies.values;
  for (const cname in values) {
    if (out.length >= cap) return;
    const key = `cookie:${cname}`;
    out.push({ kind: 'cookie-name', key, value: cname });
    const value = values[cname];
    if (value) out.push({ kind: 'cookie', key, value: plusAsSpace(value) });
  }
  // Repeated names and bare segments: an application may read what the map does not show.
  for (const value of cookies.hidden)
    if (value && out.length < cap) out.push({ kind: 'cookie', key: 'cookie:', value: plusAsSpace(value) });
}

function pushBodyTargets(parts: RequestParts, out: Target[], cap: number, result: InspectResult): void {
  const body = parts.body;
  if (body === undefined || body.length === 0) return;
  const contentType = headerValue(parts.headers['content-type']);
  if (MULTIPART_FORM.test(contentType)) {
    try {
      const buf = typeof body === 'string' ? Buffer.from(body, 'latin1') : body;
      for (const part of parseMultipart(buf, contentType)) {
        if (out.length >= cap) return;
        const key = `body:${part.name}`;
        out.push({ kind: 'body-name', key, value: part.name });
        if (part.filename) out.push({ kind: 'filename', key, value: part.filename });
        if (part.value) out.push({ kind: 'body', key, value: part.value });
      }
      return;
    } catch (err) {
      if (!(err instanceof MultipartError)) throw err;
      // Rejected by the policy (400); scored too, so the engine alone never lets it pass, and
      // the body is still inspected as text.
      result.bodyError = err.reason;
      result.score += SCORE.critical;
      result.matches.push({ id: MULTIPART_RULE, family: 'protocol', score: SCORE.critical, target: 'body' });
    }
  }
  // In the encoding the bytes announce or the charset declared (charset.ts); usually one reading,
  // of an ASCII body copied as is.
  const texts = typeof body === 'string' ? [body] : bodyReadings(body, contentType);
  for (const text of texts) {
    if (result.bodyError === undefined) bodyTargets(text, contentType, out, cap);
    else if (out.length < cap) out.push({ kind: 'body-raw', key: 'body:', value: text });
  }
}

/** Whether a value is longer than `max` UTF-8 bytes (its length in chars is a lower bound, 3× an upper one). */
function overBytes(value: string, max: number): boolean {
  return value.length > max || (value.length * 3 > max && Buffer.byteLength(value) > max);
}

interface CompiledExclusion {
  all: boolean;
  rules: Set<string>;
  families: Set<string>;
}

/** Key of an exclusion without a target (path-scoped: every value of the request). */
const EVERY_TARGET = '*';

function compileExclusions(list: Exclusion[]): Map<string, CompiledExclusion> {
  const map = new Map<string, CompiledExclusion>();
  const add = (key: string, ex: Exclusion): void => {
    const entry = map.get(key) ?? { all: false, rules: new Set<string>(), families: new Set<string>() };
    if (!ex.rules?.length && !ex.families?.length) entry.all = true;
    for (const r of ex.rules ?? []) entry.rules.add(r);
    for (const f of ex.families ?? []) entry.families.add(f);
    map.set(key, entry);
  };
  for (const ex of list) {
    // Header names are case-insensitive; everything else is matched as written.
    const target = ex.target ?? EVERY_TARGET;
    add(target.toLowerCase().startsWith('header:') ? target.toLowerCase() : target, ex);
  }
  // What every target excludes holds for the targets named on their own too.
  const every = map.get(EVERY_TARGET);
  if (every)
    for (const [key, entry] of map) {
      if (key === EVERY_TARGET) continue;
      entry.all ||= every.all;
      for (const r of every.rules) entry.rules.add(r);
      for (const f of every.families) entry.families.add(f);
    }
  return map;
}

/** Key prefixes an exclusion on `body:a` also covers: `body:a.b.c` is inside `body:a`. */
function exclusionFor(map: Map<string, CompiledExclusion>, key: string): CompiledExclusion | undefined {
  const direct = map.get(key);
  if (direct || !key.startsWith('body:')) return direct ?? map.get(EVERY_TARGET);
  let k = key;
  for (let dot = k.lastIndexOf('.'); dot > 5; dot = k.lastIndexOf('.')) {
    k = k.slice(0, dot);
    const hit = map.get(k);
    if (hit) return hit;
  }
  return map.get(EVERY_TARGET);
}

/**
 * A path pattern of an exclusion as a test on the request path (canonical, still
 * percent-encoded): segments as written, `*` or `{name}` for exactly one segment, a trailing `/**`
 * for the path and anything below it (`/cms/**` matches `/cms`, `/cms/a/b`).
 */
export function pathMatcher(patterns: readonly string[]): (path: string) => boolean {
  const sources = patterns.map((p) => {
    const deep = p.endsWith('/**');
    const body = deep ? p.slice(0, -3) : p;
    const segs = body
      .split('/')
      .map((seg) =>
        seg === '*' || /^\{[^/{}]+\}$/.test(seg) ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
      );
    return `${segs.join('/')}${deep ? '(?:/.*)?' : ''}`;
  });
  const re = new RegExp(`^(?:${sources.join('|')})$`);
  return (path) => re.test(path);
}

/** Most engines one path-scoped configuration keeps (one per combination of matching paths). */
const MAX_PATH_ENGINES = 64;

/**
 * An engine whose exclusions depend on the request path: the exclusions of the paths a request
 * matches are added to the unconditional ones, and an engine compiled for that combination (kept,
 * at most MAX_PATH_ENGINES) inspects it, so verdict caching stays exact per combination.
 */
function pathScopedEngine(options: EngineOptions, scoped: Exclusion[], always: Exclusion[]): WafEngine {
  const base = compileEngine({ ...options, exclusions: always });
  const matchers = scoped.map((ex) => ({
    matches: pathMatcher(ex.paths ?? []),
    exclusion: { target: ex.target, rules: ex.rules, families: ex.families },
  }));
  const engines = new Map<string, WafEngine>();
  return {
    rules: base.rules,
    inspect(parts: RequestParts): InspectResult {
      const q = parts.url.indexOf('?');
      const path = q === -1 ? parts.url : parts.url.slice(0, q);
      let key = '';
      for (let i = 0; i < matchers.length; i++) if (matchers[i]?.matches(path)) key += `${i},`;
      if (key === '') return base.inspect(parts);
      let engine = engines.get(key);
      if (engine === undefined) {
        const picked = key
          .split(',')
          .filter(Boolean)
          .map((i) => matchers[Number(i)]?.exclusion as Exclusion);
        engine = compileEngine({ ...options, exclusions: [...always, ...picked] });
        if (engines.size >= MAX_PATH_ENGINES) engines.delete(engines.keys().next().value as string);
        engines.set(key, engine);
      }
      return engine.inspect(parts);
    },
  };
}

/** What an engine knows of one header name (see compileEngine). */
interface HeaderSlot {
  /** The name, lower-case: the verdict scope. */
  readonly name: string;
  /** `header:<name>`, the exclusion key. */
  readonly key: string;
  /** Not inspected (SKIPPED_HEADERS); its value is still read by header-value request rules. */
  readonly skipped: boolean;
  /** The header's grammar (STRUCTURED_HEADERS), if it has one. */
  readonly grammar: RegExp | undefined;
  /** The last value seen (at most MAX_CACHED_VALUE_CHARS), with the answers below. */
  value: string | undefined;
  /** Its verdict; undefined for a skipped header. */
  verdict: readonly Rule[] | undefined;
  /** The header-value request rules it matches, a bit each. */
  hits: number;
}

type Verdicts = Map<string, readonly Rule[]>;
/** engine id → scope (a header name, or `<kind>:<key>`) → value → verdict. */
type Generation = Map<number, Map<string, Verdicts>>;

/**
 * A bounded map from (engine, scope, value) to the rules that match the value. A verdict is a
 * pure function of the value and the compiled rules, so a hit gives exactly what running the rules
 * would. Nested maps keep the lookup to hashing the value itself (no key string is built).
 * Eviction is generational (an approximate LRU without per-hit bookkeeping): entries go into
 * `young`; when it holds half the capacity it becomes `old` and the previous `old` is dropped; a
 * hit in `old` is copied back into `young`, so values in use survive.
 */
class VerdictCache {
  #young: Generation = new Map();
  #old: Generation = new Map();
  #youngSize = 0;
  readonly #generation: number;
  /** At most `capacity` entries in all. */
  constructor(capacity: number) {
    this.#generation = Math.max(1, Math.floor(capacity / 2));
  }
  get(engine: number, scope: string, value: string): readonly Rule[] | undefined {
    const hit = this.#young.get(engine)?.get(scope)?.get(value);
    if (hit !== undefined) return hit;
    const old = this.#old.get(engine)?.get(scope)?.get(value);
    if (old !== undefined) this.set(engine, scope, value, old);
    return old;
  }
  set(engine: number, scope: string, value: string, rules: readonly Rule[]): void {
    if (this.#youngSize >= this.#generation) {
      this.#old = this.#young;
      this.#young = new Map();
      this.#youngSize = 0;
    }
    let scopes = this.#young.get(engine);
    if (!scopes) {
      scopes = new Map();
      this.#young.set(engine, scopes);
    }
    let values = scopes.get(scope);
    if (!values) {
      values = new Map();
      scopes.set(scope, values);
    }
    values.set(value, rules);
    this.#youngSize++;
  }
}

const VERDICTS = new VerdictCache(VERDICT_CACHE_ENTRIES);

/** Matches are few (none on most requests): a scan beats a Set built per request. */
function hasMatch(result: InspectResult, id: string): boolean {
  for (const m of result.matches) if (m.id === id) return true;
  return false;
}

/** Count a rule once per request, on the first value it matched. */
function addMatch(result: InspectResult, rule: Rule | RequestRule, target: string): void {
  if (hasMatch(result, rule.id)) return;
  result.score += rule.score;
  result.matches.push({ id: rule.id, family: rule.family, score: rule.score, target });
}
/**
 * Engines compiled from equal options share verdicts (one per route with the same `waf` config).
 * Grows with distinct configurations (reloads), never with traffic; bounded by MAX_ENGINE_IDS, the
 * oldest dropped first (ids are never reused, so a dropped signature only stops sharing).
 */
const ENGINE_IDS = new Map<string, number>();
const MAX_ENGINE_IDS = 1024;
let nextEngineId = 0;

/** Compile the rule set for one route: paranoia filter and exclusions are resolved here, once. */
export function compileEngine(options: EngineOptions = {}): WafEngine {
  const scoped = (options.exclusions ?? []).filter((ex) => ex.paths !== undefined && ex.paths.length > 0);
  if (scoped.length > 0)
    return pathScopedEngine(
      options,
      scoped,
      (options.exclusions ?? []).filter((ex) => !scoped.includes(ex)),
    );
  const paranoia = options.paranoia ?? 1;
  const maxValues = options.maxValues ?? DEFAULT_MAX_VALUES;
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  const inspectPrefix = options.onLimit === 'inspect-prefix';
  const rules = RULES.filter((r) => r.paranoia <= paranoia);
  const requestRules: RequestRule[] = REQUEST_RULES.filter((r) => r.paranoia <= paranoia);
  const byKind = new Map<TargetKind, Rule[]>();
  const plainByKind = new Map<TargetKind, Rule[]>();
  const proseByKind = new Map<TargetKind, Rule[]>();
  const proseTriggeredByKind = new Map<TargetKind, Rule[]>();
  for (const kind of KINDS) {
    const forKind = rules.filter((r) => !r.kinds || r.kinds.includes(kind));
    byKind.set(kind, forKind);
    plainByKind.set(
      kind,
      forKind.filter((r) => r.plain),
    );
    proseByKind.set(
      kind,
      forKind.filter((r) => r.prose),
    );
    proseTriggeredByKind.set(
      kind,
      forKind.filter((r) => r.plain || r.prose),
    );
  }
  const headerRules = requestRules.filter((r) => r.headerValue !== undefined);
  if (headerRules.length > 30) throw new Error('at most 30 request rules may judge header values');
  /** Bit of each request rule in a header slot's `hits` (0 for rules without headerValue). */
  const headerBits = requestRules.map((r) => (r.headerValue ? 1 << headerRules.indexOf(r) : 0));
  // Built from the triggers of the rules this engine runs (see plain.ts).
  const prefilter = new Prefilter(rules.filter((r) => r.plain));
  const exclusions = compileExclusions(options.exclusions ?? []);
  const hasExclusions = exclusions.size > 0;
  const signature = JSON.stringify([paranoia, options.exclusions ?? []]);
  let engineId = ENGINE_IDS.get(signature);
  if (engineId === undefined) {
    engineId = nextEngineId++;
    if (ENGINE_IDS.size >= MAX_ENGINE_IDS) ENGINE_IDS.delete(ENGINE_IDS.keys().next().value as string);
    ENGINE_IDS.set(signature, engineId);
  }
  const id = engineId;

  /** Every rule of `list` that matches the value (exclusions applied): the cacheable verdict. */
  const judge = (view: View, list: readonly Rule[], ex: CompiledExclusion | undefined): readonly Rule[] => {
    let hits: Rule[] | undefined;
    for (const rule of list) {
      if (ex && (ex.rules.has(rule.id) || ex.families.has(rule.family))) continue;
      if (!rule.test(view)) continue;
      hits ??= [];
      hits.push(rule);
    }
    return hits ?? NO_RULES;
  };
  /** The lower-cased value of the plain or prose value rulesFor last screened, else undefined. */
  let screened: string | undefined;
  /**
   * The rules to run on a value: none when it is plain and has no trigger word; for prose, the
   * few rules an apostrophe can feed, and the plain ones too when it has a trigger.
   */
  const rulesFor = (target: Target): readonly Rule[] | undefined => {
    screened = undefined;
    const value = target.value;
    // Plain and prose values hold no character the decoders read: lower-cased, they are their view.
    if (PLAIN.test(value)) {
      screened = value.toLowerCase();
      return prefilter.plain(screened) ? plainByKind.get(target.kind) : undefined;
    }
    if (!PROSE_KINDS.has(target.kind) || !PROSE.test(value)) return byKind.get(target.kind);
    screened = value.toLowerCase();
    return (prefilter.prose(screened) ? proseTriggeredByKind : proseByKind).get(target.kind);
  };
  /** The view of a value rulesFor let through (no view is built for the values it turns away). */
  const viewFor = (target: Target): LazyView => new LazyView(target, screened);

  /**
   * A slot per header name as sent: what the name means (skipped, its grammar) and the answers for
   * its last value. A keep-alive client repeats its headers, and comparing a fresh 110-character
   * User-Agent with the last one is cheaper than hashing it for the cache.
   */
  const headerSlots = new Map<string, HeaderSlot>();
  const slotOf = (name: string): HeaderSlot => {
    const lname = name.toLowerCase();
    const slot: HeaderSlot = {
      name: lname,
      key: `header:${lname}`,
      skipped: SKIPPED_HEADERS.has(lname),
      grammar: STRUCTURED_HEADERS.get(lname),
      value: undefined,
      verdict: undefined,
      hits: 0,
    };
    return slot;
  };
  for (const name of [...SKIPPED_HEADERS, ...STRUCTURED_HEADERS.keys(), ...COMMON_HEADERS])
    headerSlots.set(name, slotOf(name));
  const knownSlots = headerSlots.size;
  /** Bits of the header-value rules a value matches (see RequestRule.headerValue). */
  const headerHits = (value: string): number => {
    let hits = 0;
    for (let i = 0; i < headerRules.length; i++)
      if ((headerRules[i] as RequestRule).headerValue?.(value)) hits |= 1 << i;
    return hits;
  };

  /**
   * The verdicts of the last request's cached values without their key, by position (the path,
   * then names: `sku`, `quantity`, …): requests to a route repeat its path and the names of its
   * body, and comparing a name with the one at its place last time is cheaper than the cache's
   * look-ups. Only without exclusions, where a verdict depends on the kind and value alone.
   */
  const lastKinds: TargetKind[] = [];
  const lastValues: string[] = [];
  const lastVerdicts: (readonly Rule[])[] = [];
  /** Position of the next cached value of this request in the arrays above. */
  let place = 0;

  /** Judge one value into `result`: the rules' verdict, cached for the kinds that repeat. */
  const judgeTarget = (target: Target, result: InspectResult): void => {
    const ex = hasExclusions ? exclusionFor(exclusions, target.key) : undefined;
    if (ex?.all) return;
    if (CACHED_KINDS.has(target.kind) && target.value.length <= MAX_CACHED_VALUE_CHARS) {
      const byPlace = !hasExclusions && target.kind !== 'header' && place < MAX_PLACES;
      const at = byPlace ? place++ : -1;
      let verdict: readonly Rule[] | undefined;
      if (at !== -1 && lastValues[at] === target.value && lastKinds[at] === target.kind)
        verdict = lastVerdicts[at] as readonly Rule[];
      else {
        // Header names hold no `:`, so the scopes of headers and of other kinds never collide.
        // Without exclusions only header rules read the key (`filename` headers): the other
        // kinds share one scope each (`body-name:`) and no key string is built.
        const scope =
          target.kind === 'header'
            ? target.key.slice(7)
            : hasExclusions
              ? `${target.kind}:${target.key}`
              : KIND_SCOPES[target.kind];
        verdict = VERDICTS.get(id, scope, target.value);
        if (verdict === undefined) {
          const list = rulesFor(target);
          verdict = list && list.length > 0 ? judge(viewFor(target), list, ex) : NO_RULES;
          VERDICTS.set(id, scope, target.value, verdict);
        }
        if (at !== -1) {
          lastKinds[at] = target.kind;
          lastValues[at] = unpinned(target.value);
          lastVerdicts[at] = verdict;
        }
      }
      for (const rule of verdict) addMatch(result, rule, target.key);
      return;
    }
    const list = rulesFor(target);
    if (!list || list.length === 0) return;
    const view = viewFor(target);
    for (const rule of list) {
      if (ex && (ex.rules.has(rule.id) || ex.families.has(rule.family))) continue;
      if (!hasMatch(result, rule.id) && rule.test(view)) addMatch(result, rule, target.key);
    }
  };

  return {
    rules,
    inspect(parts: RequestParts): InspectResult {
      const result: InspectResult = { score: 0, matches: [] };
      const targets: Target[] = [];
      // One more than allowed: reaching it means the limit was hit. Header values judged without
      // a Target (cached verdicts, values that fit their grammar) count against it too.
      let cap = maxValues + 1;
      pushUrlTargets(parts.url, parts.params, targets, cap);
      const headers = parts.headers;
      let hits = 0;
      // for…in reads the object's cached key list; Object.keys would copy it on every request.
      for (const name in headers) {
        const raw = headers[name];
        const value = typeof raw === 'string' ? raw : headerValue(raw);
        if (!value) continue;
        let slot = headerSlots.get(name);
        if (slot === undefined) {
          slot = slotOf(name);
          if (headerSlots.size < knownSlots + MAX_HEADER_SLOTS) headerSlots.set(name, slot);
        }
        // Repeated header values (User-Agent, Origin, Referer) are judged once: no Target is built.
        if (value === slot.value) {
          hits |= slot.hits;
          if (slot.skipped) continue;
          if (slot.verdict === NO_RULES) {
            cap--;
            continue;
          }
        } else {
          const valueHits = headerRules.length > 0 ? headerHits(value) : 0;
          hits |= valueHits;
          const cacheable = value.length <= MAX_CACHED_VALUE_CHARS;
          if (slot.skipped) {
            if (cacheable) {
              slot.value = value;
              slot.hits = valueHits;
            }
            continue;
          }
          if (cacheable) {
            let known = VERDICTS.get(id, slot.name, value);
            if (known === undefined && slot.grammar?.test(value)) {
              known = NO_RULES;
              VERDICTS.set(id, slot.name, value, NO_RULES);
            }
            // Unknown verdicts are not kept: the value's target fills the cache, the next request reads it.
            if (known !== undefined) {
              slot.value = value;
              slot.hits = valueHits;
              slot.verdict = known;
            }
            if (known === NO_RULES) {
              cap--;
              continue;
            }
          } else if (slot.grammar?.test(value)) {
            cap--;
            continue;
          }
        }
        targets.push({ kind: 'header', key: slot.key, value });
      }
      for (let i = 0; i < requestRules.length; i++) {
        const rule = requestRules[i] as RequestRule;
        if ((hits & (headerBits[i] as number)) !== 0 || rule.test(parts)) addMatch(result, rule, 'request');
      }
      pushCookies(parts, targets, cap);
      pushBodyTargets(parts, targets, cap, result);

      let limit: InspectResult['limit'];
      if (targets.length >= cap) limit = 'values';
      else
        for (const t of targets)
          if (overBytes(t.value, maxValueBytes)) {
            limit = 'valueBytes';
            break;
          }
      if (limit !== undefined) {
        result.limit = limit;
        if (!inspectPrefix) return result;
        if (targets.length >= cap) targets.length = Math.max(0, cap - 1);
        for (let i = 0; i < targets.length; i++) {
          const t = targets[i] as Target;
          if (t.value.length > maxValueBytes) targets[i] = { ...t, value: t.value.slice(0, maxValueBytes) };
        }
      }
      place = 0;
      for (const target of targets) judgeTarget(target, result);
      return result;
    },
  };
}
