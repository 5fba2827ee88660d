/**
 * multipart/form-data for the WAF, parsed by busboy: every part's name, filename and content
 * become values to inspect (file contents included: an application may read them as text).
 *
 * A body is rejected as a whole (the WAF answers 400 with the `reason`) when parsers could read it
 * differently from busboy, the one parser whose reading the rules judge:
 *
 * | reason               | what                                                                   |
 * |----------------------|------------------------------------------------------------------------|
 * | `no-boundary`        | the Content-Type has no usable `boundary`                              |
 * | `malformed`          | a part header busboy cannot read, or no closing delimiter (cut short, bare-LF line ends) |
 * | `disposition`        | a part with no, or more than one, Content-Disposition, or not `form-data` (busboy would skip it) |
 * | `duplicate-header`   | a part with more than one Content-Type or Content-Transfer-Encoding    |
 * | `duplicate-parameter`| `name`, `filename` or `filename*` given twice, or both `filename` and `filename*` |
 * | `transfer-encoding`  | a Content-Transfer-Encoding other than 7bit, 8bit or binary (an upstream may decode base64 the WAF did not) |
 * | `charset`            | a part's Content-Type declares a charset the WAF cannot decode (utf-7, EBCDIC: see charset.ts) |
 * | `filename`           | a filename with `/`, `\`, a control character, or that is `.` or `..`   |
 *
 * The header checks read only each part's header block (delimiter to blank line); the parts
 * themselves are busboy's.
 */
import busboy from 'busboy';
import { undecodableCharset } from './charset.ts';

/** Why a multipart body was rejected. */
export type MultipartRejection =
  | 'no-boundary'
  | 'malformed'
  | 'disposition'
  | 'duplicate-header'
  | 'duplicate-parameter'
  | 'transfer-encoding'
  | 'charset'
  | 'filename';

/** One part as the WAF inspects it. */
export interface MultipartPart {
  name: string;
  /** Present for file parts. */
  filename?: string;
  /** The content: UTF-8 text for fields, the bytes as Latin-1 (one char per byte) for files. */
  value: string;
}

/** A multipart body the WAF will not inspect, and why. */
export class MultipartError extends Error {
  readonly reason: MultipartRejection;
  constructor(reason: MultipartRejection, message: string) {
    super(message);
    this.reason = reason;
  }
}

const CRLF2 = Buffer.from('\r\n\r\n');
const SAFE_TRANSFER_ENCODINGS = new Set(['7bit', '8bit', 'binary']);
/** Content-Disposition parameters, quoted strings honoured (`name="a;filename=b"` is one). */
const DISPOSITION_PARAM = /;\s*([^\s=;]+)\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;]*)/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
const BAD_FILENAME = /[/\\\u0000-\u001f\u007f]|^\.\.?$/;

/**
 * Parse a whole multipart body. busboy is a stream parser; given the whole buffer in one write,
 * with high-water marks above its size so it never waits for a reader, it emits every part
 * synchronously, and file contents are taken from the streams' buffers right after.
 * Throws MultipartError.
 */
export function parseMultipart(body: Buffer, contentType: string): MultipartPart[] {
  const boundary = boundaryOf(contentType);
  if (boundary === undefined) throw new MultipartError('no-boundary', 'multipart body without a boundary');
  const expected = checkPartHeaders(body, boundary);
  const parts: MultipartPart[] = [];
  const files: Array<{ part: MultipartPart; stream: NodeJS.ReadableStream }> = [];
  let failed: Error | undefined;
  let bb: busboy.Busboy;
  try {
    bb = busboy({
      headers: { 'content-type': contentType },
      preservePath: true,
      defParamCharset: 'utf8',
      highWaterMark: body.length + 1,
      fileHwm: body.length + 1,
      limits: { fieldSize: body.length + 1 },
    });
  } catch (err) {
    throw new MultipartError('no-boundary', (err as Error).message);
  }
  let badFilename = false;
  bb.on('field', (name, value) => {
    parts.push({ name: name ?? '', value });
  });
  bb.on('file', (name, stream, info) => {
    const filename = info.filename ?? '';
    // `filename*` arrives here percent-decoded: checked again after decoding.
    if (BAD_FILENAME.test(filename)) badFilename = true;
    const part: MultipartPart = { name: name ?? '', filename, value: '' };
    parts.push(part);
    files.push({ part, stream });
  });
  bb.on('error', (err: Error) => {
    failed = err;
  });
  bb.end(body);
  if (failed) throw new MultipartError('malformed', failed.message);
  if (badFilename) throw new MultipartError('filename', 'a filename with a path');
  for (const { part, stream } of files) {
    const chunks: Buffer[] = [];
    for (let c = stream.read() as Buffer | null; c !== null; c = stream.read() as Buffer | null)
      chunks.push(c);
    part.value = Buffer.concat(chunks).toString('latin1');
  }
  if (parts.length !== expected) throw new MultipartError('disposition', 'a part was not read as form data');
  return parts;
}

/** The boundary parameter of a multipart Content-Type (quoted or token), if any. */
function boundaryOf(contentType: string): string | undefined {
  // Two boundary parameters: which one a parser takes is anyone's guess.
  if (contentType.match(/;\s*boundary\s*=/gi)?.length !== 1) return undefined;
  const m = /;\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))/i.exec(contentType);
  return m?.[1] ?? m?.[2];
}

/**
 * Check every part's header block (see the table above) and return the number of parts. Also
 * requires the closing delimiter: a body cut short, or with bare-LF line ends (which busboy reads
 * as no parts at all), is `malformed`.
 */
function checkPartHeaders(body: Buffer, boundary: string): number {
  const delimiter = Buffer.from(`--${boundary}`);
  let parts = 0;
  let at = body.indexOf(delimiter);
  // The first delimiter opens the body or follows a CRLF (the preamble).
  if (at === -1 || (at > 0 && body[at - 1] !== 10))
    throw new MultipartError('malformed', 'no opening delimiter');
  for (;;) {
    const after = at + delimiter.length;
    if (body[after] === 45 && body[after + 1] === 45) return parts; // `--boundary--`: the end
    if (body[after] !== 13 || body[after + 1] !== 10)
      throw new MultipartError('malformed', 'bad delimiter line');
    const headEnd = body.indexOf(CRLF2, after);
    if (headEnd === -1) throw new MultipartError('malformed', 'part header without end');
    checkHeaderBlock(body.toString('latin1', after + 2, headEnd));
    parts++;
    at = body.indexOf(`\r\n--${boundary}`, headEnd);
    if (at === -1) throw new MultipartError('malformed', 'no closing delimiter');
    at += 2;
  }
}

function checkHeaderBlock(block: string): void {
  let disposition: string | undefined;
  let dispositions = 0;
  let types = 0;
  let encodings = 0;
  for (const line of block.split('\r\n')) {
    const colon = line.indexOf(':');
    const name = (colon === -1 ? line : line.slice(0, colon)).trim().toLowerCase();
    const value = colon === -1 ? '' : line.slice(colon + 1).trim();
    if (name === 'content-disposition') {
      dispositions++;
      disposition = value;
    } else if (name === 'content-type') {
      types++;
      if (undecodableCharset(value))
        throw new MultipartError('charset', 'a part declares a charset that cannot be decoded');
    } else if (name === 'content-transfer-encoding') {
      encodings++;
      if (!SAFE_TRANSFER_ENCODINGS.has(value.toLowerCase()))
        throw new MultipartError('transfer-encoding', 'unsupported Content-Transfer-Encoding');
    }
  }
  if (dispositions !== 1 || disposition === undefined)
    throw new MultipartError('disposition', 'a part needs exactly one Content-Disposition');
  if (!/^form-data\s*(?:;|$)/i.test(disposition))
    throw new MultipartError('disposition', 'a part that is not form-data');
  if (types > 1 || encodings > 1) throw new MultipartError('duplicate-header', 'a part header is repeated');
  const seen = new Set<string>();
  for (const m of disposition.matchAll(DISPOSITION_PARAM)) {
    const p = (m[1] as string).toLowerCase();
    if (seen.has(p)) throw new MultipartError('duplicate-parameter', `"${p}" is given twice`);
    seen.add(p);
    if (p === 'filename') {
      const raw = m[0].slice(m[0].indexOf('=') + 1).trim();
      const filename = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
      if (BAD_FILENAME.test(filename)) throw new MultipartError('filename', 'a filename with a path');
    }
  }
  if (seen.has('filename') && seen.has('filename*'))
    throw new MultipartError('duplicate-parameter', 'both filename and filename*');
}
