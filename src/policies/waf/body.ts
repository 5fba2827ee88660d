/**
 * Turn a request body into named values, whatever its Content-Type claims: JSON (any depth),
 * urlencoded, multipart fields, XML (text and attributes) or raw text. A body whose declared type
 * does not parse is sniffed, so a missing or lying Content-Type does not hide its fields.
 */
import type { Target } from './types.ts';

/** Deepest JSON nesting walked; deeper values are still seen through the raw text. */
const MAX_DEPTH = 64;
/** Most fields taken from one body (a million tiny fields must not cost a million rule runs). */
const MAX_FIELDS = 2048;

/** Decode `application/x-www-form-urlencoded` text (`+` is a space; bad escapes kept as-is). */
export function formDecode(s: string): string {
  const t = s.includes('+') ? s.replace(/\+/g, ' ') : s;
  if (!t.includes('%')) return t;
  try {
    return decodeURIComponent(t);
  } catch {
    return t;
  }
}

/** Split urlencoded pairs into targets of `kind` (names as `<kind>-name`). */
export function pushForm(text: string, prefix: 'query' | 'body', out: Target[]): void {
  let start = 0;
  const n = text.length;
  while (start <= n && out.length < MAX_FIELDS) {
    let end = text.indexOf('&', start);
    if (end === -1) end = n;
    if (end > start) {
      const pair = text.slice(start, end);
      const eq = pair.indexOf('=');
      const name = formDecode(eq === -1 ? pair : pair.slice(0, eq));
      const value = eq === -1 ? '' : formDecode(pair.slice(eq + 1));
      const key = `${prefix}:${name}`;
      out.push({ kind: prefix === 'query' ? 'query-name' : 'body-name', key, value: name });
      if (value) out.push({ kind: prefix, key, value });
    }
    start = end + 1;
  }
}

function walkJson(v: unknown, path: string, depth: number, out: Target[]): void {
  if (out.length >= MAX_FIELDS) return;
  if (typeof v === 'string') {
    out.push({ kind: 'body', key: `body:${path}`, value: v });
  } else if (Array.isArray(v)) {
    if (depth >= MAX_DEPTH) return;
    for (let i = 0; i < v.length; i++) walkJson(v[i], path ? `${path}.${i}` : String(i), depth + 1, out);
  } else if (v !== null && typeof v === 'object') {
    if (depth >= MAX_DEPTH) return;
    for (const k of Object.keys(v)) {
      const p = path ? `${path}.${k}` : k;
      out.push({ kind: 'body-name', key: `body:${p}`, value: k });
      walkJson((v as Record<string, unknown>)[k], p, depth + 1, out);
    }
  } else if (typeof v === 'number' && (!Number.isSafeInteger(v) || v > 0xffffffff)) {
    // Huge or denormal numbers are attack material of their own (overflow probes).
    out.push({ kind: 'body', key: `body:${path}`, value: String(v) });
  }
}

function pushJson(text: string, out: Target[]): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return false;
  }
  if (typeof parsed !== 'object' || parsed === null) {
    if (typeof parsed === 'string') out.push({ kind: 'body', key: 'body:', value: parsed });
    return true;
  }
  walkJson(parsed, '', 0, out);
  return true;
}

function pushMultipart(text: string, contentType: string, out: Target[]): boolean {
  const m = /boundary=(?:"([^"]{1,200})"|([^\s;,]{1,200}))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) return false;
  const parts = text.split(`--${boundary}`);
  if (parts.length < 2) return false;
  for (const part of parts) {
    if (out.length >= MAX_FIELDS) break;
    const sep = /\r?\n\r?\n/.exec(part);
    if (!sep) continue;
    const head = part.slice(0, sep.index);
    const content = part.slice(sep.index + sep[0].length).replace(/\r?\n$/, '');
    const name = /\bname="([^"]*)"/i.exec(head)?.[1] ?? /\bname=([^\s;]+)/i.exec(head)?.[1] ?? '';
    const filename = /\bfilename\*?="?([^"\r\n]*)"?/i.exec(head)?.[1];
    const key = `body:${name}`;
    out.push({ kind: 'body-name', key, value: name });
    if (filename !== undefined) {
      out.push({ kind: 'filename', key, value: filename });
      continue; // file contents are data, not parameters
    }
    if (content) out.push({ kind: 'body', key, value: content });
  }
  return true;
}

/** XML: element text and attribute values by element/attribute name; entities left for the decoder. */
function pushXml(text: string, out: Target[]): void {
  const tag = /<([A-Za-z_][\w:.-]{0,100})((?:\s+[\w:.-]{1,100}\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*\/?>([^<]*)/g;
  const attr = /([\w:.-]{1,100})\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
  for (let m = tag.exec(text); m && out.length < MAX_FIELDS; m = tag.exec(text)) {
    const el = m[1]!;
    if (m[2]) {
      for (let a = attr.exec(m[2]); a; a = attr.exec(m[2])) {
        const v = a[2] ?? a[3] ?? '';
        if (v) out.push({ kind: 'body', key: `body:${el}@${a[1]}`, value: v });
      }
      attr.lastIndex = 0;
    }
    const inner = m[3]?.trim();
    if (inner) out.push({ kind: 'body', key: `body:${el}`, value: inner });
  }
  // Declarations (DOCTYPE, ENTITY) and CDATA are where XXE lives: the raw text carries them.
  if (text.includes('<!')) out.push({ kind: 'body-raw', key: 'body:', value: text });
}

/**
 * Extract the named values of a body. `contentType` may be empty or wrong: JSON and XML are
 * recognised by their shape, `a=b&c=d` as a form, anything else is one raw value.
 */
export function bodyTargets(body: string, contentType: string, out: Target[]): void {
  if (!body) return;
  const ct = contentType.toLowerCase();
  const head = body.trimStart();
  if (ct.includes('multipart/') && pushMultipart(body, contentType, out)) return;
  if ((ct.includes('json') || head[0] === '{' || head[0] === '[') && pushJson(body, out)) return;
  if (
    ct.includes('xml') ||
    head.startsWith('<?xml') ||
    (head[0] === '<' && /^<[A-Za-z!]/.test(head) && head.trimEnd().endsWith('>'))
  ) {
    pushXml(body, out);
    return;
  }
  if (ct.includes('urlencoded') || (!ct.startsWith('text/') && /^[^\s=&]*=/.test(head))) {
    pushForm(body.replace(/[\r\n]+$/, ''), 'body', out);
    return;
  }
  // Without a declared type, a body is most often a form someone forgot to label: `+` is a space.
  out.push({
    kind: 'body-raw',
    key: 'body:',
    value: ct === '' || ct.includes('urlencoded') ? formDecode(body) : body,
  });
}
