/**
 * Cache-Control-style directive lists (RFC 9111 §5.2, also `Pragma`, `CDN-Cache-Control` and other
 * targeted fields of RFC 9213), parsed the strict way the public cache conformance suite expects:
 * commas inside quoted strings do not split, names are case-insensitive, the first occurrence of a
 * directive wins, and a delta-seconds value is digits only (`max-age=3600a`, `'3600'`, `-1`,
 * `3600.0` are invalid, and an invalid freshness directive makes the response stale).
 */

/** Directive name (lower case) → value (`true` when the directive has none). */
export type Directives = ReadonlyMap<string, string | true>;

/** The largest delta-seconds a cache must handle; larger values are taken as this (RFC 9111 §1.2.2). */
export const MAX_DELTA_SECONDS = 2_147_483_648;

const EMPTY: Directives = new Map();
const TOKEN_CHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/**
 * Parse one or several field lines of a directive list. Malformed members are skipped. With
 * `structured` (targeted fields, RFC 9213: Structured Field dictionaries), parameters after a
 * member (`max-age=60;foo`) are allowed and ignored.
 */
export function parseDirectives(
  field: string | readonly string[] | undefined,
  structured = false,
): Directives {
  if (field === undefined) return EMPTY;
  const value = typeof field === 'string' ? field : field.join(',');
  if (value === '') return EMPTY;
  const out = new Map<string, string | true>();
  const n = value.length;
  let i = 0;
  while (i < n) {
    // Skip separators and whitespace before a member.
    while (i < n && (value[i] === ',' || value[i] === ' ' || value[i] === '\t')) i++;
    if (i >= n) break;
    const nameStart = i;
    while (i < n && TOKEN_CHAR.test(value[i] as string)) i++;
    const name = value.slice(nameStart, i).toLowerCase();
    let parsed: string | true = true;
    let bad = name === '';
    if (value[i] === '=') {
      i++;
      if (value[i] === '"') {
        i++;
        let s = '';
        while (i < n && value[i] !== '"') {
          if (value[i] === '\\' && i + 1 < n) i++;
          s += value[i];
          i++;
        }
        if (i >= n) bad = true;
        i++; // closing quote
        parsed = s;
      } else {
        const start = i;
        while (i < n && TOKEN_CHAR.test(value[i] as string)) i++;
        parsed = value.slice(start, i);
      }
    }
    // Anything else before the next comma makes the member malformed (`max-age =1`, `a=1 b`).
    if (structured && value[i] === ';') while (i < n && value[i] !== ',') i++;
    while (i < n && value[i] !== ',') {
      if (value[i] !== ' ' && value[i] !== '\t') bad = true;
      i++;
    }
    // Targeted fields (RFC 9213) are structured dictionaries: `max-age=60;param` keeps its value.
    if (!bad && !out.has(name)) out.set(name, parsed);
  }
  return out;
}

/**
 * A delta-seconds value (RFC 9111 §1.2.2): digits only, clamped to MAX_DELTA_SECONDS; undefined
 * when absent, and NaN when present but invalid (the caller treats that as already stale).
 */
export function deltaSeconds(d: Directives, name: string): number | undefined {
  const v = d.get(name);
  if (v === undefined) return undefined;
  if (v === true || !/^\d+$/.test(v)) return Number.NaN;
  const n = Number(v);
  return n > MAX_DELTA_SECONDS ? MAX_DELTA_SECONDS : n;
}
