/**
 * Which response media types are worth compressing: a list of patterns, matched against the type
 * of the response's Content-Type (parameters ignored, case-insensitive).
 */
import { createMemo } from '../../pipeline/memo.ts';

/**
 * A pattern: `type/subtype` exactly, `type/*` (any subtype), `type/*+suffix` (any subtype with that
 * structured suffix, RFC 6838 §4.2.8), or the same with `*` as type.
 */
export const MEDIA_PATTERN =
  '^(?:\\*|[A-Za-z0-9!#$&^_.+-]+)/(?:\\*|\\*\\+[A-Za-z0-9!#$&^_.+-]+|[A-Za-z0-9!#$&^_.+-]+)$';

/** Text-like types: what compresses well and is not compressed already. */
export const DEFAULT_TYPES: readonly string[] = Object.freeze([
  'text/*',
  'application/json',
  '*/*+json',
  'application/x-ndjson',
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/xml',
  '*/*+xml',
  'application/yaml',
  'application/x-yaml',
  'application/x-www-form-urlencoded',
  'application/graphql',
  'application/wasm',
  'application/vnd.ms-fontobject',
  'font/otf',
  'font/ttf',
  'image/bmp',
  'image/x-icon',
  'image/vnd.microsoft.icon',
]);

/** Distinct Content-Type values remembered per route (upstreams send few). */
const MEMO_SIZE = 256;

/** Build the matcher of a pattern list once; it answers whether a Content-Type value is listed. */
export function createTypeMatcher(patterns: readonly string[]): (contentType: string) => boolean {
  const exact = new Set<string>();
  const anySubtype = new Set<string>();
  const suffixes: Array<{ type: string; suffix: string }> = [];
  let all = false;
  for (const raw of patterns) {
    const p = raw.toLowerCase();
    const slash = p.indexOf('/');
    const type = p.slice(0, slash);
    const sub = p.slice(slash + 1);
    if (sub === '*') {
      if (type === '*') all = true;
      else anySubtype.add(type);
    } else if (sub.startsWith('*+')) suffixes.push({ type, suffix: sub.slice(1) });
    else exact.add(p);
  }
  const compute = (value: string): boolean => {
    const semi = value.indexOf(';');
    const media = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
    const slash = media.indexOf('/');
    if (slash <= 0 || slash === media.length - 1) return false;
    if (all || exact.has(media)) return true;
    const type = media.slice(0, slash);
    if (anySubtype.has(type)) return true;
    const plus = media.lastIndexOf('+');
    if (plus <= slash) return false;
    const suffix = media.slice(plus);
    return suffixes.some((s) => s.suffix === suffix && (s.type === '*' || s.type === type));
  };
  return createMemo(MEMO_SIZE, compute);
}
