/**
 * A JSON body as the WAF reads it: one pass over the text that validates it as RFC 8259 JSON and
 * pushes every member name and every string value, each with its path.
 *
 * Not JSON.parse and a walk of its result: a parsed object keeps only the last of repeated names,
 * so `{"q":"<script>…","q":"x"}` would hide its first value, and a parser that keeps the first
 * (or a layer that streams the text) behind the gateway would read what was never inspected. Here
 * every occurrence is a value of its own. Escaped strings are decoded by JSON.parse of their slice.
 *
 * Iterative, so nesting depth costs no stack; below MAX_DEPTH levels paths stop growing (values
 * are still pushed, under their deepest walked ancestor's key).
 */
import type { Target } from './types.ts';

/** Deepest level whose names extend a value's path; deeper values keep their ancestor's key. */
export const MAX_DEPTH = 64;

const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;

/** The next index at or after `i` that is not JSON whitespace (space, tab, line feed, return). */
function skipWs(s: string, i: number): number {
  for (let c = s.charCodeAt(i); c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = s.charCodeAt(++i));
  return i;
}

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

/** Whether the number `numberEnd` last read had neither a fraction nor an exponent. */
let plainInteger = true;

/** End of the number starting at `i` (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`), or -1 when malformed. */
function numberEnd(s: string, i: number): number {
  plainInteger = true;
  if (s.charCodeAt(i) === MINUS) i++;
  const first = s.charCodeAt(i);
  if (first === ZERO) i++;
  else if (first > ZERO && first <= NINE) while (isDigit(s.charCodeAt(++i)));
  else return -1;
  if (s.charCodeAt(i) === 0x2e) {
    plainInteger = false;
    if (!isDigit(s.charCodeAt(++i))) return -1;
    while (isDigit(s.charCodeAt(++i)));
  }
  const e = s.charCodeAt(i);
  if (e === 0x65 || e === 0x45) {
    plainInteger = false;
    const sign = s.charCodeAt(++i);
    if (sign === 0x2b || sign === MINUS) i++;
    if (!isDigit(s.charCodeAt(i))) return -1;
    while (isDigit(s.charCodeAt(++i)));
  }
  return i;
}

/**
 * A number worth inspecting: huge or fractional ones are overflow and precision probes
 * (`4294967296`, `1e309`, `-0.0000001`); integers an int32/uint32 holds are not.
 */
function notableNumber(text: string): boolean {
  const v = Number(text);
  return !Number.isSafeInteger(v) || v > 0xffffffff || v < -0xffffffff;
}

/** Index after the string last read by `readString`. */
let stringEnd = 0;
/** Index of the first backslash at or after the scan's position, -1 when none is left. */
let nextBackslash = -1;

/**
 * The string whose opening quote is at `i` of `s`, decoded; undefined when unterminated or badly
 * escaped. Raw control characters in a string without escapes are let through (JSON.parse refuses
 * them, lenient parsers do not): such a string is still a value, and inspected. In a string with
 * escapes they make the document not JSON, and the body is inspected as raw text instead.
 */
function readString(s: string, i: number): string | undefined {
  const from = i + 1;
  let q = s.indexOf('"', from);
  if (q === -1) return undefined;
  // The next backslash is looked up again only once the scan has passed it (linear in all).
  if (nextBackslash !== -1 && nextBackslash < from) nextBackslash = s.indexOf('\\', from);
  if (nextBackslash === -1 || nextBackslash > q) {
    stringEnd = q + 1;
    return s.slice(from, q);
  }
  // Escapes: the closing quote is the first one no backslash escapes.
  let b = nextBackslash;
  while (b !== -1 && b < q) {
    if (b + 1 === q) {
      q = s.indexOf('"', q + 1);
      if (q === -1) return undefined;
    }
    b = s.indexOf('\\', b + 2);
  }
  nextBackslash = b;
  stringEnd = q + 1;
  try {
    return JSON.parse(s.slice(i, q + 1)) as string;
  } catch {
    return undefined;
  }
}

/**
 * Push the names and values of the JSON document `text` into `out` (at most `cap` entries in all:
 * reaching it means the caller's limit was hit). False, and `out` as it was, when `text` is not
 * one JSON document.
 */
export function pushJson(text: string, out: Target[], cap: number): boolean {
  const start = out.length;
  if (scan(text, out, cap)) return true;
  out.length = start;
  return false;
}

/**
 * Path of the value about to be read and its exclusion key (set by member), or undefined for an
 * array element until its value needs them (see pathOfNext): most elements are numbers.
 */
let nextPath: string | undefined = '';
let nextKey: string | undefined;
/** Returned by `member` when `out` is full. */
const FULL = -2;
/** Returned by `member` when a name repeats in its object (repeatedName). */
const REPEATED = -3;
/**
 * For repeatedName: the names seen in the open object at each depth (false: the WAF's scan, which
 * pushes targets instead), and the path of the first repeated one.
 */
let names: Array<Set<string> | undefined> | false = false;
let repeatedPath = '';

/**
 * The path (dotted, as the WAF's keys) of the first member name repeated within one object of
 * `text`; '' when no name repeats; undefined when `text` is not one JSON document. RFC 8259 leaves
 * what a repeated name means to the parser (JSON.parse keeps the last, others the first), so a
 * validator that checked one reading must refuse the document.
 */
export function repeatedName(text: string): string | undefined {
  names = [];
  repeatedPath = '';
  try {
    const out: Target[] = [];
    if (scan(text, out, Number.POSITIVE_INFINITY)) return '';
    return repeatedPath === '' ? undefined : repeatedPath;
  } finally {
    names = false;
  }
}

function scan(text: string, out: Target[], cap: number): boolean {
  const n = text.length;
  /** Path of each open container, and for arrays the index of the current element (-1 for objects). */
  const paths: string[] = [];
  const indices: number[] = [];
  nextPath = '';
  nextKey = 'body:';
  nextBackslash = text.indexOf('\\');
  let i = skipWs(text, 0);
  for (;;) {
    // A value at i.
    const c = text.charCodeAt(i);
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      paths.push(nextPath ?? pathOfNext(paths, indices));
      const isArray = c === OPEN_BRACKET;
      if (names !== false && !isArray) names[paths.length] = undefined;
      indices.push(isArray ? 0 : -1);
      i = skipWs(text, i + 1);
      if (text.charCodeAt(i) === (isArray ? CLOSE_BRACKET : CLOSE_BRACE)) {
        paths.pop();
        indices.pop();
        i++;
      } else if (isArray) {
        nextPath = undefined;
        continue;
      } else {
        i = member(text, i, paths, out, cap);
        if (i < 0) return i === FULL;
        continue;
      }
    } else if (c === QUOTE) {
      const v = readString(text, i);
      if (v === undefined) return false;
      if (out.length >= cap) return true;
      if (names === false) out.push({ kind: 'body', key: keyOfNext(paths, indices), value: v });
      i = stringEnd;
    } else if (c === MINUS || isDigit(c)) {
      const end = numberEnd(text, i);
      if (end === -1) return false;
      // Nine characters or fewer without a fraction or exponent: an int32, not worth a look.
      const raw = end - i <= 9 && plainInteger ? '' : text.slice(i, end);
      if (raw !== '' && names === false && notableNumber(raw)) {
        if (out.length >= cap) return true;
        out.push({ kind: 'body', key: keyOfNext(paths, indices), value: raw });
      }
      i = end;
    } else if (text.startsWith('true', i)) i += 4;
    else if (text.startsWith('false', i)) i += 5;
    else if (text.startsWith('null', i)) i += 4;
    else return false;

    // After a value: the next member or element, or the end of containers.
    for (;;) {
      i = skipWs(text, i);
      const depth = paths.length;
      if (depth === 0) return i === n;
      const idx = indices[depth - 1] as number;
      const d = text.charCodeAt(i);
      if (d === COMMA) {
        i = skipWs(text, i + 1);
        if (idx === -1) {
          i = member(text, i, paths, out, cap);
          if (i < 0) return i === FULL;
        } else {
          indices[depth - 1] = idx + 1;
          nextPath = undefined;
        }
        break;
      }
      if (d !== (idx === -1 ? CLOSE_BRACE : CLOSE_BRACKET)) return false;
      paths.pop();
      indices.pop();
      i++;
    }
  }
}

/**
 * Read `"name" :` at `i` of `s` inside the innermost object of `paths`, push the name and return
 * the index of its value (nextPath, nextKey set); -1 when malformed, FULL when `out` is full,
 * REPEATED when repeatedName is looking and the name was seen in this object.
 */
function member(s: string, i: number, paths: string[], out: Target[], cap: number): number {
  if (s.charCodeAt(i) !== QUOTE) return -1;
  const name = readString(s, i);
  if (name === undefined) return -1;
  const j = skipWs(s, stringEnd);
  if (s.charCodeAt(j) !== COLON) return -1;
  if (out.length >= cap) return FULL;
  const parent = paths[paths.length - 1] as string;
  nextPath = paths.length > MAX_DEPTH ? parent : parent === '' ? name : `${parent}.${name}`;
  nextKey = `body:${nextPath}`;
  if (names === false) out.push({ kind: 'body-name', key: nextKey, value: name });
  else {
    const depth = paths.length;
    let seen = names[depth];
    if (seen === undefined) {
      seen = new Set();
      names[depth] = seen;
    }
    if (seen.has(name)) {
      repeatedPath = nextPath;
      return REPEATED;
    }
    seen.add(name);
  }
  return skipWs(s, j + 1);
}

/** Path of the array element about to be read (the innermost container of `paths` is an array). */
function pathOfNext(paths: string[], indices: number[]): string {
  const depth = paths.length;
  const parent = paths[depth - 1] as string;
  const index = indices[depth - 1] as number;
  nextPath = depth > MAX_DEPTH ? parent : parent === '' ? String(index) : `${parent}.${index}`;
  nextKey = undefined;
  return nextPath;
}

/** Exclusion key of the value about to be read. */
function keyOfNext(paths: string[], indices: number[]): string {
  if (nextPath === undefined) pathOfNext(paths, indices);
  nextKey ??= `body:${nextPath}`;
  return nextKey;
}
