/**
 * The canonical request target: the one form of a request's path and query that routing, every
 * policy, the cache key and the path sent upstream use. Computed once, where the request enters
 * (lifecycle.ts), before routing. Two places that decode the same input differently are a bypass
 * waiting to happen (`/items/..%2fsecret` routed as one thing and read by the upstream as another),
 * so nothing downstream decodes the raw URL again.
 *
 * The path is percent-decoded exactly once and re-encoded canonically: characters allowed in a
 * path segment (RFC 3986 pchar) appear as themselves, everything else as upper-case %XX of its
 * UTF-8 bytes. Ambiguous targets are rejected with 400 `PC_BAD_TARGET` and a `reason`:
 *
 * | reason                 | what                                                              |
 * |------------------------|-------------------------------------------------------------------|
 * | `not-origin-form`      | absolute-form (`http://h/p`), authority-form, `*`: not on the public listener |
 * | `fragment`             | a `#` in the target (clients never send fragments)                |
 * | `bad-percent-encoding` | `%` not followed by two hex digits, or bytes that are not UTF-8  |
 * | `encoded-slash`        | `%2F` in the path: one segment or two? upstreams disagree        |
 * | `backslash`            | `\` raw or encoded: a separator to some servers                   |
 * | `control-character`    | NUL or another control character, raw or encoded                  |
 * | `dot-segment`          | `.` or `..` as a segment after decoding (also `..;`)              |
 * | `confusable-separator` | a Unicode look-alike of `.`, `/` or `\` (`％２ｅ`, `∕`): best-fit mapped to ASCII by some servers |
 * | `path-parameter`       | `;` in the path, on a route that declares no matrix parameters (checked after routing) |
 *
 * The query string is not decoded here (policies decode names and values with form semantics);
 * it is checked for well-formed percent-encoding and control characters, and characters outside
 * the URI grammar are percent-encoded, so the upstream receives exactly what the policies read.
 */
import { ProblemError } from '../errors.ts';

/** A request target in canonical form. */
export interface RequestTarget {
  /** Canonical path, percent-encoded as described above; always starts with `/`. */
  readonly path: string;
  /** The query string without `?` ('' when none), canonically encoded but not decoded. */
  readonly query: string;
  /** The path contains `;` (a matrix parameter): allowed only on routes that declare one. */
  readonly semicolon: boolean;
}

export type TargetRejection =
  | 'not-origin-form'
  | 'fragment'
  | 'bad-percent-encoding'
  | 'encoded-slash'
  | 'backslash'
  | 'control-character'
  | 'dot-segment'
  | 'confusable-separator'
  | 'path-parameter';

const DETAIL: Record<TargetRejection, string> = {
  'not-origin-form': 'The request target must be a path (origin-form)',
  fragment: 'A request target carries no fragment',
  'bad-percent-encoding': 'Malformed percent-encoding in the request target',
  'encoded-slash': 'Encoded slashes are not allowed in paths',
  backslash: 'Backslashes are not allowed in paths',
  'control-character': 'Control characters are not allowed in the request target',
  'dot-segment': 'Dot segments are not allowed in paths',
  'confusable-separator': 'Look-alikes of path separators are not allowed in paths',
  'path-parameter': 'Path parameters (;) are not allowed on this route',
};

/** The 400 problem for a rejected target; the target itself is left out of the body (it is the attack). */
export function targetProblem(reason: TargetRejection): ProblemError {
  return new ProblemError('PC_BAD_TARGET', DETAIL[reason], {
    extensions: { reason },
    omitInstance: true,
  });
}

/**
 * Byte classes of the path, indexed by char code < 128:
 * 0 = kept as is (pchar or `/`), 1 = percent-encoded, 2 = `%`, 3 = rejected (control, `\`),
 * 4 = `;`, 5 = `#`, 6 = `.` (kept, but dot segments are checked).
 */
const PATH_CLASS = new Uint8Array(128);
/** Query classes: 0 kept, 1 encoded, 2 `%`, 3 rejected, 5 `#`. */
const QUERY_CLASS = new Uint8Array(128);
{
  const pchar = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/";
  for (let c = 0; c < 128; c++) {
    const ch = String.fromCharCode(c);
    const control = c < 0x20 || c === 0x7f;
    PATH_CLASS[c] = control
      ? 3
      : ch === '\\'
        ? 3
        : ch === '%'
          ? 2
          : ch === ';'
            ? 4
            : ch === '#'
              ? 5
              : ch === '.'
                ? 6
                : pchar.includes(ch)
                  ? 0
                  : 1;
    QUERY_CLASS[c] = control
      ? 3
      : ch === '%'
        ? 2
        : ch === '#'
          ? 5
          : pchar.includes(ch) || ch === '?' || ch === ';'
            ? 0
            : 1;
  }
}

const HEX = '0123456789ABCDEF';
/**
 * Unicode look-alikes of `.`, `/` and `\` that Windows' best-fit mapping and some normalising
 * frameworks turn into their ASCII originals (fullwidth forms, division and fraction slashes, small
 * forms, the one-dot leader): after such a mapping `／..／` is a dot segment again.
 */
const CONFUSABLE_SEPARATORS = new Set([
  0xff0e, 0xfe52, 0x2024, 0xff0f, 0x2215, 0x2044, 0x29f8, 0xff3c, 0xfe68, 0x2216, 0x29f9,
]);
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const ENCODER = new TextEncoder();

/** Parse a raw request target (`req.url`) into its canonical form; throws `PC_BAD_TARGET`. */
export function canonicalTarget(raw: string): RequestTarget {
  if (raw.charCodeAt(0) !== 47 /* '/' */) throw targetProblem('not-origin-form');
  const q = raw.indexOf('?');
  const rawPath = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : canonicalQuery(raw.slice(q + 1));
  // Fast path: nothing to decode or encode (the common case): the raw path is canonical.
  let plain = true;
  let dots = false;
  let semicolon = false;
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath.charCodeAt(i);
    const k = c < 128 ? (PATH_CLASS[c] as number) : 1;
    if (k === 0) continue;
    if (k === 6) dots = true;
    else if (k === 3) throw targetProblem(c === 92 ? 'backslash' : 'control-character');
    else if (k === 5) throw targetProblem('fragment');
    else if (k === 4) semicolon = true;
    else plain = false;
  }
  const path = plain ? rawPath : canonicalPath(rawPath);
  if ((dots || !plain) && hasDotSegment(path)) throw targetProblem('dot-segment');
  if (!plain && !semicolon) semicolon = path.includes(';');
  return { path, query, semicolon };
}

/** Decode once, reject what is ambiguous, re-encode canonically. */
function canonicalPath(raw: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 37 /* '%' */) {
      const hi = hexValue(raw.charCodeAt(i + 1));
      const lo = hexValue(raw.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) throw targetProblem('bad-percent-encoding');
      const b = (hi << 4) | lo;
      if (b === 47) throw targetProblem('encoded-slash');
      if (b === 92) throw targetProblem('backslash');
      if (b < 0x20 || b === 0x7f) throw targetProblem('control-character');
      bytes.push(b);
      i += 2;
    } else if (c < 128) {
      bytes.push(c);
    } else {
      // A raw non-ASCII character (HTTP/2 :path, lenient clients): its UTF-8 bytes.
      const cp = raw.codePointAt(i) as number;
      if (cp > 0xffff) i++;
      for (const b of ENCODER.encode(String.fromCodePoint(cp))) bytes.push(b);
    }
  }
  let decoded: string;
  try {
    decoded = UTF8.decode(Uint8Array.from(bytes));
  } catch {
    throw targetProblem('bad-percent-encoding');
  }
  let out = '';
  for (let i = 0; i < decoded.length; i++) {
    const c = decoded.charCodeAt(i);
    if (c < 128) {
      const k = PATH_CLASS[c] as number;
      if (k === 0 || k === 4 || k === 6) out += decoded[i];
      else out += `%${HEX[c >> 4]}${HEX[c & 15]}`;
    } else {
      const cp = decoded.codePointAt(i) as number;
      if (CONFUSABLE_SEPARATORS.has(cp)) throw targetProblem('confusable-separator');
      if (cp > 0xffff) i++;
      for (const b of ENCODER.encode(String.fromCodePoint(cp))) out += `%${HEX[b >> 4]}${HEX[b & 15]}`;
    }
  }
  return out;
}

/** Check the query's encoding and encode what lies outside the URI grammar. */
function canonicalQuery(raw: string): string {
  let plain = true;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    const k = c < 128 ? (QUERY_CLASS[c] as number) : 1;
    if (k === 0) continue;
    if (k === 3) throw targetProblem('control-character');
    if (k === 5) throw targetProblem('fragment');
    if (k === 2) {
      if (hexValue(raw.charCodeAt(i + 1)) < 0 || hexValue(raw.charCodeAt(i + 2)) < 0)
        throw targetProblem('bad-percent-encoding');
      i += 2;
      continue;
    }
    plain = false;
  }
  if (plain) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 128 && QUERY_CLASS[c] !== 1) {
      out += raw[i];
      continue;
    }
    const cp = raw.codePointAt(i) as number;
    if (cp > 0xffff) i++;
    for (const b of ENCODER.encode(String.fromCodePoint(cp))) out += `%${HEX[b >> 4]}${HEX[b & 15]}`;
  }
  return out;
}

/** A segment `.` or `..` (or `..;x`, which some servers read as `..`). */
function hasDotSegment(path: string): boolean {
  let start = 1;
  while (start <= path.length) {
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    let seg = end - start;
    const semi = path.indexOf(';', start);
    if (semi !== -1 && semi < end) seg = semi - start;
    if (
      (seg === 1 && path.charCodeAt(start) === 46) ||
      (seg === 2 && path.charCodeAt(start) === 46 && path.charCodeAt(start + 1) === 46)
    )
      return true;
    start = end + 1;
  }
  return false;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}
