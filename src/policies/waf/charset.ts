/**
 * The text of a request body as the application behind the gateway may decode it.
 *
 * Reading every body as UTF-8 is a bypass: Jackson (Spring) and Python's `json.loads` take a JSON
 * body in UTF-16 or UTF-32 (a byte-order mark, or the pattern of NUL bytes that `{"` makes, RFC
 * 4627 §3), and ASP.NET decodes a form in the charset its Content-Type declares. A payload
 * sent that way is, byte by byte, NULs between letters, which no rule reads. So the engine reads
 * a body in the encoding its bytes announce (byte-order mark, then NUL pattern), else in the
 * charset its Content-Type declares; a charset it cannot decode (`utf-7`, EBCDIC `ibm037`) is
 * refused by the request rule `protocol-body-charset` (CRS rule 920480 refuses them too).
 */
import { isAscii } from 'node:buffer';

/** What a body may be decoded as. */
type Encoding = 'utf-8' | 'windows-1252' | 'utf-16le' | 'utf-16be' | 'utf-32le' | 'utf-32be';

/**
 * Declared charsets the engine decodes, by lower-case label, and the readings each gives. A body
 * declared UTF-16 or UTF-32 whose bytes do not announce it is read both ways (RFC 2781 says
 * big-endian, Windows and the WHATWG say little) and as UTF-8 too: Jackson ignores the declared
 * charset and would read UTF-8 bytes as such. ISO-8859-1 is read as windows-1252, its superset,
 * as browsers do.
 */
const AS_UTF8: readonly Encoding[] = ['utf-8'];
const AS_1252: readonly Encoding[] = ['windows-1252'];
const AS_UTF16: readonly Encoding[] = ['utf-16be', 'utf-16le', 'utf-8'];
const AS_UTF32: readonly Encoding[] = ['utf-32be', 'utf-32le', 'utf-8'];
/** Labels of one encoding share one list: two labels differ (undecodableCharset) only when their readings do. */
const DECLARED: ReadonlyMap<string, readonly Encoding[]> = new Map<string, readonly Encoding[]>([
  ['utf-8', AS_UTF8],
  ['utf8', AS_UTF8],
  ['us-ascii', AS_UTF8],
  ['ascii', AS_UTF8],
  ['iso-8859-1', AS_1252],
  ['iso8859-1', AS_1252],
  ['latin1', AS_1252],
  ['l1', AS_1252],
  ['iso-8859-15', AS_1252],
  ['windows-1252', AS_1252],
  ['cp1252', AS_1252],
  ['utf-16', AS_UTF16],
  ['utf-16le', ['utf-16le', 'utf-8']],
  ['utf-16be', ['utf-16be', 'utf-8']],
  ['utf-32', AS_UTF32],
  ['utf-32le', ['utf-32le', 'utf-8']],
  ['utf-32be', ['utf-32be', 'utf-8']],
]);

/** A `charset` parameter, its value bare or quoted (`"utf-8"`, `'utf-8'`). */
const CHARSET = /;\s*charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^;,\s]*))/gi;

const NONE: readonly string[] = [];
/**
 * The last Content-Type with parameters and its charsets: clients repeat theirs
 * (`application/json; charset=utf-8`), and each request asks twice (the rule, then the reading).
 */
let lastType = '';
let lastCharsets: readonly string[] = NONE;

/** The lower-case charsets a Content-Type declares (a client may send several), in order. */
export function declaredCharsets(contentType: string): readonly string[] {
  // Parameter names are case-insensitive (`ChArSeT=utf-7` counts): only a type without any is skipped.
  if (!contentType.includes(';')) return NONE;
  if (contentType === lastType) return lastCharsets;
  const out: string[] = [];
  for (const m of contentType.matchAll(CHARSET)) out.push((m[1] ?? m[2] ?? m[3] ?? '').toLowerCase());
  lastType = contentType;
  lastCharsets = out;
  return out;
}

/**
 * True when a Content-Type declares a charset the engine cannot decode, or two different ones
 * (`charset=ibm037;charset=utf-8`: which one the application reads is its parser's choice).
 */
export function undecodableCharset(contentType: string): boolean {
  const charsets = declaredCharsets(contentType);
  if (charsets.length === 0) return false;
  const first = DECLARED.get(charsets[0] as string);
  return charsets.some((c) => DECLARED.get(c) !== first) || first === undefined;
}

/** The encodings a body's own bytes announce: a byte-order mark or the NULs of ASCII text in UTF-16/32. */
function announced(b: Buffer): { encodings: readonly Encoding[]; skip: number } | undefined {
  const n = b.length;
  if (n < 2) return undefined;
  const b0 = b[0] as number;
  const b1 = b[1] as number;
  // Only bytes that can start a mark or hold a NUL are looked at twice: ASCII text costs two compares.
  if (b0 !== 0 && b1 !== 0 && b0 < 0xef) return undefined;
  const b2 = n > 2 ? (b[2] as number) : -1;
  const b3 = n > 3 ? (b[3] as number) : -1;
  if (b0 === 0xef && b1 === 0xbb && b2 === 0xbf) return { encodings: ['utf-8'], skip: 3 };
  if (b0 === 0xff && b1 === 0xfe) {
    return b2 === 0 && b3 === 0 ? { encodings: ['utf-32le'], skip: 4 } : { encodings: ['utf-16le'], skip: 2 };
  }
  if (b0 === 0xfe && b1 === 0xff) return { encodings: ['utf-16be'], skip: 2 };
  if (b0 === 0 && b1 === 0 && b2 === 0xfe && b3 === 0xff) return { encodings: ['utf-32be'], skip: 4 };
  // RFC 4627 §3: the NULs of the first bytes tell UTF-16 or UTF-32 apart. Parsers read them
  // differently (Python's json the first two bytes, Jackson four; a top-level string `"Ā…` has NULs
  // where ASCII would not), so past the two clear UTF-32 patterns every reading they could make.
  if (n >= 4 && b0 === 0 && b1 === 0 && b2 === 0 && b3 !== 0) return { encodings: ['utf-32be'], skip: 0 };
  if (n >= 4 && b0 !== 0 && b1 === 0 && b2 === 0 && b3 === 0) return { encodings: ['utf-32le'], skip: 0 };
  if (b0 === 0) return { encodings: n >= 4 ? ['utf-16be', 'utf-32be'] : ['utf-16be'], skip: 0 };
  if (b1 === 0) return { encodings: n >= 4 ? ['utf-16le', 'utf-32le'] : ['utf-16le'], skip: 0 };
  return undefined;
}

const UTF8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const UTF16LE = new TextDecoder('utf-16le', { fatal: false, ignoreBOM: true });
const WINDOWS_1252 = new TextDecoder('windows-1252', { fatal: false });

function decode(b: Buffer, encoding: Encoding): string {
  switch (encoding) {
    case 'utf-8':
      return UTF8.decode(b);
    case 'windows-1252':
      return WINDOWS_1252.decode(b);
    case 'utf-16le':
      return UTF16LE.decode(b);
    case 'utf-16be': {
      // A swapped copy read as little-endian (an odd last byte is a broken unit: U+FFFD).
      const even = Buffer.from(b.subarray(0, b.length & ~1)).swap16();
      return UTF16LE.decode(even) + (b.length & 1 ? '\ufffd' : '');
    }
    default:
      return utf32(b, encoding === 'utf-32le');
  }
}

/** UTF-32 (not in the WHATWG decoders): a unit that is no scalar value becomes U+FFFD. */
function utf32(b: Buffer, little: boolean): string {
  const parts: string[] = [];
  const units: number[] = [];
  const end = b.length - (b.length % 4);
  for (let i = 0; i < end; i += 4) {
    const cp = little ? b.readUInt32LE(i) : b.readUInt32BE(i);
    units.push(cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0xfffd : cp);
    if (units.length === 4096) {
      parts.push(String.fromCodePoint(...units));
      units.length = 0;
    }
  }
  if (end < b.length) units.push(0xfffd);
  parts.push(String.fromCodePoint(...units));
  return parts.join('');
}

/**
 * The readings of a body: usually one, the body in the encoding its bytes announce, else in its
 * declared charset, else UTF-8 (ASCII is copied as is); more for a declared `utf-16`/`utf-32`
 * the bytes do not announce (see DECLARED).
 */
export function bodyReadings(body: Buffer, contentType: string): string[] {
  const own = announced(body);
  if (own !== undefined) {
    const rest = own.skip === 0 ? body : body.subarray(own.skip);
    return own.encodings.map((e) => decode(rest, e));
  }
  const charset = declaredCharsets(contentType)[0];
  const declared = charset === undefined ? undefined : DECLARED.get(charset);
  if (declared !== undefined && declared[0] !== 'utf-8') {
    if (declared[0] === 'windows-1252' && isAscii(body)) return [body.toString('latin1')];
    return declared.map((e) => (e === 'utf-8' && isAscii(body) ? body.toString('latin1') : decode(body, e)));
  }
  return [isAscii(body) ? body.toString('latin1') : UTF8.decode(body)];
}
