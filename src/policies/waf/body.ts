/**
 * Turn a request body into named values, whatever its Content-Type claims: JSON (any depth, and
 * every value of a repeated name: json.ts), urlencoded, XML (text and attributes) or raw text
 * (multipart/form-data is busboy's: see multipart.ts). A body whose declared type does not parse
 * is sniffed, so a missing or lying Content-Type does not hide its fields.
 *
 * Every function takes `cap`, the most entries `out` may hold: the engine passes one more than
 * the WAF's `maxValues`, so reaching the cap means the limit was hit (never a silent stop).
 */
import { pushJson } from './json.ts';
import type { Target } from './types.ts';

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
export function pushForm(text: string, prefix: 'query' | 'body', out: Target[], cap: number): void {
  let start = 0;
  const n = text.length;
  while (start <= n && out.length < cap) {
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

/** XML: element text and attribute values by element/attribute name; entities left for the decoder. */
function pushXml(text: string, out: Target[], cap: number): void {
  const tag = /<([A-Za-z_][\w:.-]{0,100})((?:\s+[\w:.-]{1,100}\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*\/?>([^<]*)/g;
  const attr = /([\w:.-]{1,100})\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
  for (let m = tag.exec(text); m && out.length < cap; m = tag.exec(text)) {
    const el = m[1]!;
    if (m[2]) {
      for (let a = attr.exec(m[2]); a; a = attr.exec(m[2])) {
        const v = a[2] ?? a[3] ?? '';
        if (v && out.length < cap) out.push({ kind: 'body', key: `body:${el}@${a[1]}`, value: v });
      }
      attr.lastIndex = 0;
    }
    const inner = m[3]?.trim();
    if (inner && out.length < cap) out.push({ kind: 'body', key: `body:${el}`, value: inner });
  }
  // Declarations (DOCTYPE, ENTITY) and CDATA are where XXE lives: the raw text carries them.
  if (text.includes('<!') && out.length < cap) out.push({ kind: 'body-raw', key: 'body:', value: text });
}

/**
 * Extract the named values of a body. `contentType` may be empty or wrong: JSON and XML are
 * recognised by their shape, `a=b&c=d` as a form, anything else is one raw value.
 */
export function bodyTargets(body: string, contentType: string, out: Target[], cap: number): void {
  if (!body || out.length >= cap) return;
  const ct = contentType.toLowerCase();
  const head = body.trimStart();
  if ((ct.includes('json') || head[0] === '{' || head[0] === '[') && pushJson(body, out, cap)) return;
  if (
    ct.includes('xml') ||
    head.startsWith('<?xml') ||
    (head[0] === '<' && /^<[A-Za-z!]/.test(head) && head.trimEnd().endsWith('>'))
  ) {
    pushXml(body, out, cap);
    return;
  }
  if (ct.includes('urlencoded') || (!ct.startsWith('text/') && /^[^\s=&]*=/.test(head))) {
    pushForm(body.replace(/[\r\n]+$/, ''), 'body', out, cap);
    return;
  }
  // Without a declared type, a body is most often a form someone forgot to label: `+` is a space.
  out.push({
    kind: 'body-raw',
    key: 'body:',
    value: ct === '' || ct.includes('urlencoded') ? formDecode(body) : body,
  });
}
