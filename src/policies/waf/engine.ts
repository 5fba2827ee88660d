/**
 * The detection engine: splits a request into named values, normalises each once (lazily) and
 * runs the compiled rules over them; the scores of distinct rules add up (anomaly scoring), so one
 * weak signal does not block while a critical one does.
 */
import { bodyTargets, formDecode, pushForm } from './body.ts';
import { plainHasTrigger } from './plain.ts';
import { REQUEST_RULES, RULES } from './rules/index.ts';
import { fullDecode, pathNormalize, shellNormalize, sqlNormalize } from './transforms.ts';
import type {
  Family,
  InspectResult,
  Match,
  RequestParts,
  RequestRule,
  Rule,
  Target,
  TargetKind,
  View,
} from './types.ts';

/** Values of only these characters cannot carry markup, shell syntax or quotes (see Rule.plain). */
const PLAIN = /^[A-Za-z0-9 _.,@-]*$/;

/** Longest single value inspected; the rest of a longer value is not scanned (the body cap bounds the total). */
const MAX_VALUE_CHARS = 64 * 1024;

/**
 * Headers whose values are structured by the protocol and checked by the protocol rules instead:
 * running injection rules over `Accept: *\/*;q=0.8` or a bearer token would only produce noise.
 */
const SKIPPED_HEADERS = new Set([
  'host',
  'accept',
  'accept-encoding',
  'accept-language',
  'accept-charset',
  'authorization',
  'proxy-authorization',
  'cache-control',
  'connection',
  'content-length',
  'content-type',
  'cookie',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'keep-alive',
  'pragma',
  'proxy-connection',
  'range',
  'te',
  'traceparent',
  'tracestate',
  'transfer-encoding',
  'upgrade',
  'upgrade-insecure-requests',
  'x-forwarded-for',
  'x-real-ip',
  'forwarded',
]);

/** A per-route exclusion: `target` is never checked by the listed rules/families (by all when both absent). */
export interface Exclusion {
  target: string;
  rules?: string[] | undefined;
  families?: string[] | undefined;
}

/** Engine settings, fixed at compile time. */
export interface EngineOptions {
  /** Rules up to this paranoia level run (default 1). */
  paranoia?: number;
  exclusions?: Exclusion[];
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

  constructor(target: Target) {
    this.target = target;
  }
  get decoded(): string {
    if (this.#decoded === undefined) {
      const v = this.target.value;
      this.#decoded = fullDecode(v.length > MAX_VALUE_CHARS ? v.slice(0, MAX_VALUE_CHARS) : v);
    }
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

function headerValue(v: string | string[] | undefined): string {
  return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v;
}

/** Split a request into the values rules look at, each with its exclusion key. */
export function requestTargets(parts: RequestParts): Target[] {
  const out: Target[] = [];
  const q = parts.url.indexOf('?');
  const rawPath = q === -1 ? parts.url : parts.url.slice(0, q);
  if (rawPath && rawPath !== '/') out.push({ kind: 'path', key: 'path', value: rawPath });
  if (q !== -1) pushForm(parts.url.slice(q + 1), 'query', out);
  for (const name of Object.keys(parts.headers)) {
    const lname = name.toLowerCase();
    if (lname === 'cookie') {
      for (const pair of headerValue(parts.headers[name]).split(';')) {
        const eq = pair.indexOf('=');
        const cname = formDecode((eq === -1 ? pair : pair.slice(0, eq)).trim());
        const value = eq === -1 ? '' : formDecode(pair.slice(eq + 1).trim());
        const key = `cookie:${cname}`;
        if (cname) out.push({ kind: 'cookie-name', key, value: cname });
        if (value) out.push({ kind: 'cookie', key, value });
      }
      continue;
    }
    if (SKIPPED_HEADERS.has(lname)) continue;
    const value = headerValue(parts.headers[name]);
    if (value) out.push({ kind: 'header', key: `header:${lname}`, value });
  }
  if (parts.body !== undefined && parts.body.length > 0) {
    const text = typeof parts.body === 'string' ? parts.body : parts.body.toString('latin1');
    const decoded = typeof parts.body === 'string' ? text : utf8OrLatin1(parts.body, text);
    bodyTargets(decoded, headerValue(parts.headers['content-type']), out);
  }
  return out;
}

/** Bodies are usually UTF-8; a body that is not valid UTF-8 keeps its bytes as Latin-1 characters. */
function utf8OrLatin1(buf: Buffer, latin1: string): string {
  for (let i = 0; i < buf.length; i++)
    if (buf[i]! >= 0x80) return new TextDecoder('utf-8', { fatal: false }).decode(buf);
  return latin1;
}

interface CompiledExclusion {
  all: boolean;
  rules: Set<string>;
  families: Set<string>;
}

function compileExclusions(list: Exclusion[]): Map<string, CompiledExclusion> {
  const map = new Map<string, CompiledExclusion>();
  for (const ex of list) {
    // Header names are case-insensitive; everything else is matched as written.
    const key = ex.target.toLowerCase().startsWith('header:') ? ex.target.toLowerCase() : ex.target;
    const entry = map.get(key) ?? { all: false, rules: new Set<string>(), families: new Set<string>() };
    if (!ex.rules?.length && !ex.families?.length) entry.all = true;
    for (const r of ex.rules ?? []) entry.rules.add(r);
    for (const f of ex.families ?? []) entry.families.add(f);
    map.set(key, entry);
  }
  return map;
}

/** Key prefixes an exclusion on `body:a` also covers: `body:a.b.c` is inside `body:a`. */
function exclusionFor(map: Map<string, CompiledExclusion>, key: string): CompiledExclusion | undefined {
  const direct = map.get(key);
  if (direct || !key.startsWith('body:')) return direct;
  let k = key;
  for (let dot = k.lastIndexOf('.'); dot > 5; dot = k.lastIndexOf('.')) {
    k = k.slice(0, dot);
    const hit = map.get(k);
    if (hit) return hit;
  }
  return undefined;
}

/** Compile the rule set for one route: paranoia filter and exclusions are resolved here, once. */
export function compileEngine(options: EngineOptions = {}): WafEngine {
  const paranoia = options.paranoia ?? 1;
  const rules = RULES.filter((r) => r.paranoia <= paranoia);
  const requestRules: RequestRule[] = REQUEST_RULES.filter((r) => r.paranoia <= paranoia);
  const byKind = new Map<TargetKind, Rule[]>();
  const plainByKind = new Map<TargetKind, Rule[]>();
  for (const kind of KINDS) {
    const forKind = rules.filter((r) => !r.kinds || r.kinds.includes(kind));
    byKind.set(kind, forKind);
    plainByKind.set(
      kind,
      forKind.filter((r) => r.plain),
    );
  }
  const exclusions = compileExclusions(options.exclusions ?? []);
  const hasExclusions = exclusions.size > 0;

  return {
    rules,
    inspect(parts: RequestParts): InspectResult {
      const matches: Match[] = [];
      const seen = new Set<string>();
      let score = 0;
      const add = (id: string, family: Family, ruleScore: number, target: string): void => {
        if (seen.has(id)) return;
        seen.add(id);
        score += ruleScore;
        matches.push({ id, family, score: ruleScore, target });
      };
      for (const rule of requestRules) if (rule.test(parts)) add(rule.id, rule.family, rule.score, 'request');
      for (const target of requestTargets(parts)) {
        const ex = hasExclusions ? exclusionFor(exclusions, target.key) : undefined;
        if (ex?.all) continue;
        const view = new LazyView(target);
        let list = byKind;
        if (PLAIN.test(target.value)) {
          if (!plainHasTrigger(view.lower)) continue;
          list = plainByKind;
        }
        for (const rule of list.get(target.kind)!) {
          if (seen.has(rule.id)) continue;
          if (ex && (ex.rules.has(rule.id) || ex.families.has(rule.family))) continue;
          if (rule.test(view)) add(rule.id, rule.family, rule.score, target.key);
        }
      }
      return { score, matches };
    },
  };
}
