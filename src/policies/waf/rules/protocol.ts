import { undecodableCharset } from '../charset.ts';
import { type RequestParts, type RequestRule, type Rule, SCORE } from '../types.ts';

function header(parts: RequestParts, name: string): string | undefined {
  const v = parts.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

// Patterns of the request rules, built once: a literal inside a test allocates a RegExp per request.
const METHOD = /^[A-Z][A-Z-]{0,19}$/;
const AUTHORITY_FORM = /^[\w.-]+:\d{1,5}$|^\[[\da-f:.]+\]:\d{1,5}$/i;
const ABSOLUTE_FORM = /^https?:\/\/[^/?#\s]+\//i;
const CONTENT_LENGTH = /^\s*\d{1,15}\s*$/;
const CHUNKED = /^\s*chunked\s*$/i;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const CONTROL_CHARACTER = /[\u0000-\u0008\u000a-\u001f\u007f]/;
const BAD_PERCENT = /%(?![0-9a-fA-F]{2}|u[0-9a-fA-F]{4})/;
const MULTIPART = /multipart\//i;
const BOUNDARY = /boundary=\s*"?[\w'()+,./:=?-]{1,70}/i;

/** Request-level protocol checks. */
export const PROTOCOL_REQUEST_RULES: RequestRule[] = [
  {
    id: 'protocol-method',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Method is not an HTTP token of letters',
    test: (p) => !METHOD.test(p.method),
  },
  {
    id: 'protocol-request-target',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'Request target is neither a path, *, host:port for CONNECT, nor an absolute URL with a path',
    test: (p) => {
      const u = p.url;
      if (u.startsWith('/')) return false;
      if (u === '*') return p.method !== 'OPTIONS';
      if (p.method === 'CONNECT') return !AUTHORITY_FORM.test(u);
      return !ABSOLUTE_FORM.test(u);
    },
  },
  {
    id: 'protocol-smuggling',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'Content-Length with Transfer-Encoding, a non-numeric Content-Length or a transfer coding other than chunked',
    test: (p) => {
      const cl = header(p, 'content-length');
      const te = header(p, 'transfer-encoding');
      if (cl !== undefined && !CONTENT_LENGTH.test(cl)) return true;
      if (te !== undefined && (cl !== undefined || !CHUNKED.test(te))) return true;
      return false;
    },
  },
  {
    id: 'protocol-control-characters',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description: 'NUL or control characters in the request target or a header',
    test: (p) => CONTROL_CHARACTER.test(p.url) || p.url.includes('%00'),
    headerValue: (v) => CONTROL_CHARACTER.test(v),
  },
  {
    id: 'protocol-body-charset',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'A body whose Content-Type declares a charset the WAF cannot decode (utf-7, EBCDIC ibm037…) or two different ones: its payload would be read unseen',
    test: (p) => {
      if (p.body === undefined || p.body.length === 0) return false;
      const ct = header(p, 'content-type');
      return ct !== undefined && undecodableCharset(ct);
    },
  },
  {
    id: 'protocol-bad-encoding',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.warning,
    description: 'Malformed percent-encoding in the request target',
    test: (p) => BAD_PERCENT.test(p.url),
  },
  {
    id: 'protocol-multipart',
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Multipart body without a usable boundary',
    test: (p) => {
      const ct = header(p, 'content-type') ?? '';
      return MULTIPART.test(ct) && p.body !== undefined && p.body.length > 0 && !BOUNDARY.test(ct);
    },
  },
  {
    id: 'protocol-missing-host',
    family: 'protocol',
    paranoia: 2,
    score: SCORE.warning,
    description: 'No Host header',
    test: (p) => !header(p, 'host'),
  },
  {
    id: 'protocol-missing-user-agent',
    family: 'protocol',
    paranoia: 2,
    score: SCORE.notice,
    description: 'No User-Agent header',
    test: (p) => !header(p, 'user-agent'),
  },
];

/** Value-level protocol attacks. */
export const PROTOCOL_RULES: Rule[] = [
  {
    id: 'protocol-header-injection',
    view: 'decoded',
    operator: 'pattern',
    examples: ['x%0d%0aSet-Cookie: a=b'],
    family: 'protocol',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['path', 'query', 'query-name', 'cookie', 'cookie-name', 'header'],
    description: 'CR/LF followed by a header line or a status line (response splitting, header injection)',
    test: (v) =>
      (v.decoded.includes('\n') || v.decoded.includes('\r')) &&
      /[\r\n]\s*(?:[a-z][\w-]{1,40}\s*:\s*\S|http\/\d)/i.test(v.decoded),
  },
];
