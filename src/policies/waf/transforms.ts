/**
 * Normalisation applied before rules run: undo the encodings attackers rely on to slip a payload
 * past pattern matching. Every function here is linear in its input (loops and non-backtracking
 * regexes only), so a hostile value cannot make the WAF slow.
 */

const HEX = /^[0-9a-fA-F]$/;
// Patterns used per value are built once: a literal in a function body is a new RegExp each call.
const FULL_WIDTH = /[\uff01-\uff5e]/;
const FULL_WIDTH_ALL = /[\uff01-\uff5e]/g;
const SHELL_QUOTE = /["'\\^]/;
const SHELL_QUOTES = /["'\\^]+/g;
const BLANKS_TO_COLLAPSE = /\s\s|[^\S ]/;
const BLANK_RUNS = /\s+/g;
const LINE_BREAK = /[\n\r]/;

/** A line break separates commands as `;` does: it is kept (one `\n` a run); other blanks become one space. */
function collapseBlanks(s: string): string {
  return BLANKS_TO_COLLAPSE.test(s) ? s.replace(BLANK_RUNS, (m) => (LINE_BREAK.test(m) ? '\n' : ' ')) : s;
}

const NEEDS_DECODE = /[%&\\\uff01-\uff5e]/;
const HAS_PERCENT = /%(?:[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})/;

/** Named HTML entities worth knowing: the ones that spell markup, script and path characters. */
const ENTITIES: Record<string, string> = {
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  amp: '&',
  tab: '\t',
  newline: '\n',
  nbsp: ' ',
  colon: ':',
  semi: ';',
  comma: ',',
  period: '.',
  lpar: '(',
  rpar: ')',
  sol: '/',
  bsol: '\\',
  lsqb: '[',
  rsqb: ']',
  lbrack: '[',
  rbrack: ']',
  lcub: '{',
  rcub: '}',
  lbrace: '{',
  rbrace: '}',
  grave: '`',
  equals: '=',
  plus: '+',
  ast: '*',
  quest: '?',
  excl: '!',
  num: '#',
  dollar: '$',
  percnt: '%',
  vert: '|',
  verbar: '|',
  lowbar: '_',
  hat: '^',
};

/** Decode UTF-8 bytes leniently: overlong forms decode to their code point, stray bytes as Latin-1. */
function decodeBytes(bytes: number[]): string {
  let out = '';
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    const need = b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
    let ok = need > 0 && i + need < n;
    let cp = need === 1 ? b & 0x1f : need === 2 ? b & 0x0f : b & 0x07;
    for (let k = 1; ok && k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (c & 0x3f);
    }
    if (ok && cp <= 0x10ffff) {
      out += String.fromCodePoint(cp);
      i += need + 1;
    } else {
      out += String.fromCharCode(b);
      i++;
    }
  }
  return out;
}

/** One pass of percent-decoding (`%XX` runs as UTF-8, `%uXXXX` as UTF-16). `+` is left alone. */
export function percentDecode(s: string): string {
  let out = '';
  let bytes: number[] | undefined;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const ch = s.charCodeAt(i);
    if (ch === 37 /* % */) {
      const a = s[i + 1];
      const b = s[i + 2];
      if (a !== undefined && b !== undefined && HEX.test(a) && HEX.test(b)) {
        bytes ??= [];
        bytes.push(Number.parseInt(a + b, 16));
        i += 2;
        continue;
      }
      if ((a === 'u' || a === 'U') && /^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) {
        if (bytes?.length) out += decodeBytes(bytes.splice(0));
        out += String.fromCharCode(Number.parseInt(s.slice(i + 2, i + 6), 16));
        i += 5;
        continue;
      }
    }
    if (bytes?.length) out += decodeBytes(bytes.splice(0));
    out += s[i];
  }
  if (bytes?.length) out += decodeBytes(bytes);
  return out;
}

/** Decode HTML character references, numeric (with or without `;`) and the named ones above. */
export function htmlDecode(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(
    /&(?:#[xX]([0-9a-fA-F]{1,6});?|#([0-9]{1,7});?|([a-zA-Z]{2,8});)/g,
    (m, hex, dec, name) => {
      if (hex !== undefined || dec !== undefined) {
        const cp = hex !== undefined ? Number.parseInt(hex, 16) : Number.parseInt(dec, 10);
        return cp > 0x10ffff ? m : String.fromCodePoint(cp);
      }
      return ENTITIES[(name as string).toLowerCase()] ?? m;
    },
  );
}

/** Decode JavaScript/C escapes (`\xHH`, `\uHHHH`, `\u{H..}`) that browsers and shells honour. */
export function escapeDecode(s: string): string {
  if (!s.includes('\\')) return s;
  return s.replace(/\\+(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|u\{([0-9a-fA-F]{1,6})\})/g, (m, x, u, ub) => {
    const cp = Number.parseInt(x ?? u ?? ub, 16);
    return cp > 0x10ffff ? m : String.fromCodePoint(cp);
  });
}

/** Map full-width ASCII forms (U+FF01..U+FF5E, e.g. `＜script＞`) to ASCII. */
export function fullWidthToAscii(s: string): string {
  return s.replace(FULL_WIDTH_ALL, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0));
}

/**
 * The full decode chain: percent-decoding repeated while it changes something (double and triple
 * encoding), HTML entities (twice, for `&amp;lt;`), JS escapes, full-width forms, then one more
 * percent pass for encodings hidden behind entities.
 */
export function fullDecode(s: string): string {
  if (!NEEDS_DECODE.test(s)) return s;
  let cur = s;
  for (let i = 0; i < 4 && HAS_PERCENT.test(cur); i++) cur = percentDecode(cur);
  if (cur.includes('&')) cur = htmlDecode(htmlDecode(cur));
  cur = escapeDecode(cur);
  if (HAS_PERCENT.test(cur)) cur = percentDecode(cur);
  if (FULL_WIDTH.test(cur)) cur = fullWidthToAscii(cur);
  return cur;
}

/**
 * SQL view: comments `/* … *\/` become a space (the body of MySQL's executable `/*! … *\/` is kept),
 * whitespace runs become one space. Written as a scan, not a regex, to stay linear on runs of unclosed comment openers.
 */
export function sqlNormalize(lower: string): string {
  let s = lower;
  if (s.includes('/*')) {
    let out = '';
    let i = 0;
    for (;;) {
      const open = s.indexOf('/*', i);
      if (open === -1) {
        out += s.slice(i);
        break;
      }
      out += `${s.slice(i, open)} `;
      if (s[open + 2] === '!') {
        let j = open + 3;
        while (j < s.length && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++;
        i = j;
        continue;
      }
      const close = s.indexOf('*/', open + 2);
      if (close === -1) break;
      i = close + 2;
    }
    s = out.replace(/\*\//g, ' ');
  }
  return collapseBlanks(s);
}

/**
 * Shell view: `$IFS` becomes a space; line breaks stay (a command separator); quotes, backslashes and cmd.exe carets are dropped (they
 * split a command name without changing it: `c'a't`, `\ls`, `w^hoami`); `$0`, `$SHELL` and `$BASH` (the
 * shell itself) become `sh`; other variables inside
 * words (`c${x}url`, `sh$u`) are dropped; whitespace collapsed.
 */
export function shellNormalize(lower: string): string {
  let s = lower;
  if (s.includes('$')) {
    s = s
      .replace(/\$\{ifs\}|\$ifs\b/g, ' ')
      // Variables that name the shell itself run it (`;$0 -c id`, `|$SHELL`): read as `sh`.
      .replace(/\$(?:\{(?:0|shell|bash)\}|(?:0|shell|bash)\b)/g, ' sh ')
      .replace(/\$(?:\{[a-z_][a-z0-9_]{0,30}\}|[a-z_][a-z0-9_]{0,30}|[@*0-9])/g, '');
  }
  if (SHELL_QUOTE.test(s)) s = s.replace(SHELL_QUOTES, '');
  return collapseBlanks(s);
}

/** Path view: NULs dropped, `\` as `/`, `//` and `/./` collapsed. Keeps `..` for traversal rules. */
export function pathNormalize(lower: string): string {
  let s = lower;
  if (s.includes('\0')) s = s.replace(/\0/g, '');
  if (s.includes('\\')) s = s.replace(/\\/g, '/');
  if (s.includes('//')) s = s.replace(/\/{2,}/g, '/');
  if (s.includes('/./')) s = s.replace(/\/(?:\.\/)+/g, '/');
  return s;
}
