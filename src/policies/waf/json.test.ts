import { describe, expect, test } from 'vitest';
import { MAX_DEPTH, pushJson, repeatedName } from './json.ts';
import type { Target } from './types.ts';

/** What the WAF read from a JSON body before json.ts: JSON.parse, then a walk of the result. */
function reference(v: unknown, path: string, out: [string, string, string][]): void {
  const key = `body:${path}`;
  if (typeof v === 'string') out.push(['body', key, v]);
  else if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || Math.abs(v) > 0xffffffff) out.push(['body', key, 'number']);
  } else if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) reference(v[i], path ? `${path}.${i}` : String(i), out);
  } else if (v !== null && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) {
      const p = path ? `${path}.${k}` : k;
      out.push(['body-name', `body:${p}`, k]);
      reference(x, p, out);
    }
}

function scanned(text: string, cap = Number.POSITIVE_INFINITY): [string, string, string][] | false {
  const out: Target[] = [];
  if (!pushJson(text, out, cap)) return false;
  // Numbers are kept as written (`1e309`, not `Infinity`): compared by kind and key only.
  return out.map((t) => [t.kind, t.key, t.kind === 'body' && /^-?\d/.test(t.value) ? 'number' : t.value]);
}

/** Raw control characters (the generator's strings are escaped by JSON.stringify). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is replaced
const CONTROL = /[\u0000-\u001f]/g;

/** A small seeded generator (mulberry32): the same documents on every run. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  'a',
  'Zoë',
  ' ',
  '"',
  '\\',
  '/',
  '\n',
  '\t',
  '\u0001',
  '中',
  '😀',
  "'",
  '<script>',
  'é',
  '.',
  ':',
];
const NUMBERS = [0, -1, 42, 2 ** 31, 4294967296, 2 ** 53 + 2, 1.5, -0.25, 1e-7, 6.02e23, Number.MAX_VALUE];

function value(r: () => number, depth: number): unknown {
  const kind = Math.floor(r() * (depth > 4 ? 4 : 6));
  if (kind === 0)
    return Array.from({ length: Math.floor(r() * 4) }, () => PIECES[Math.floor(r() * PIECES.length)]).join(
      '',
    );
  if (kind === 1) return NUMBERS[Math.floor(r() * NUMBERS.length)];
  if (kind === 2) return r() < 0.5;
  if (kind === 3) return null;
  if (kind === 4) return Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(r() * 4); i > 0; i--) o[value(r, 99) as string] = value(r, depth + 1);
  return o;
}

const documents = Array.from({ length: 300 }, (_, i) => {
  const r = rng(i + 1);
  const v = value(r, 0);
  return JSON.stringify(v, null, i % 3 === 0 ? undefined : i % 3 === 1 ? 2 : '\t');
});

describe('pushJson', () => {
  test('reads every name and value JSON.parse does, with the same paths (300 generated documents)', () => {
    for (const text of documents) {
      const expected: [string, string, string][] = [];
      reference(JSON.parse(text), '', expected);
      expect(scanned(text), text).toEqual(expected);
    }
  });

  test('accepts exactly the texts JSON.parse accepts (3,000 mutated documents)', () => {
    const r = rng(7);
    // Raw control characters are left out: inside a string they are accepted on purpose.
    const alphabet = [
      '{',
      '}',
      '[',
      ']',
      '"',
      ':',
      ',',
      '\\',
      'u',
      '0',
      '1',
      '-',
      '.',
      'e',
      '+',
      ' ',
      't',
      'n',
      'x',
    ];
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const doc = documents[i % documents.length] as string;
      const chars = [...doc.replace(CONTROL, ' ')];
      const at = Math.floor(r() * (chars.length + 1));
      const op = r();
      const c = alphabet[Math.floor(r() * alphabet.length)] as string;
      if (op < 0.33) chars.splice(at, 1);
      else if (op < 0.66) chars.splice(at, 0, c);
      else chars[at] = c;
      const text = chars.join('');
      let valid = true;
      try {
        JSON.parse(text);
      } catch {
        valid = false;
      }
      if (valid) accepted++;
      expect(scanned(text) !== false, text).toBe(valid);
    }
    // Both answers were exercised.
    expect(accepted).toBeGreaterThan(300);
    expect(accepted).toBeLessThan(2700);
  });

  test.each([
    '',
    ' ',
    '{',
    '{"a":1,}',
    '[1,]',
    '[1 2]',
    '{"a" 1}',
    "{'a':1}",
    '{"a":01}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":+1}',
    '{"a":1e}',
    '{"a":tru}',
    '{"a":NaN}',
    '{"a":"\\x41"}',
    '{"a":"\\u12"}',
    '{"a":"open}',
    '{"a":"\\"}',
    '{}{}',
    '{"a":1}]',
    '\ufeff{}',
  ])('refuses %j and leaves the list as it was', (text) => {
    const out: Target[] = [{ kind: 'path', key: 'path', value: '/x' }];
    expect(pushJson(text, out, 100)).toBe(false);
    expect(out).toHaveLength(1);
  });

  test('a repeated name: every occurrence is a value (JSON.parse keeps only the last)', () => {
    expect(scanned('{"q":"<script>alert(1)</script>","q":"fine","a":{"b":"x"},"a":2}')).toEqual([
      ['body-name', 'body:q', 'q'],
      ['body', 'body:q', '<script>alert(1)</script>'],
      ['body-name', 'body:q', 'q'],
      ['body', 'body:q', 'fine'],
      ['body-name', 'body:a', 'a'],
      ['body-name', 'body:a.b', 'b'],
      ['body', 'body:a.b', 'x'],
      ['body-name', 'body:a', 'a'],
    ]);
  });

  test('escapes are decoded, including an escaped quote and backslash before the closing quote', () => {
    const out: Target[] = [];
    expect(pushJson('["\\u003cscript\\u003e", "a\\"b", "c\\\\", "\\\\\\"", "plain"]', out, 100)).toBe(true);
    expect(out.map((t) => t.value)).toEqual(['<script>', 'a"b', 'c\\', '\\"', 'plain']);
  });

  test('numbers worth a look are kept as written; small integers are not values', () => {
    const out: Target[] = [];
    pushJson('{"a":42,"b":-7,"c":4294967296,"d":1e309,"e":-0.5,"f":123456789,"g":-99999999999}', out, 100);
    expect(out.filter((t) => t.kind === 'body').map((t) => [t.key, t.value])).toEqual([
      ['body:c', '4294967296'],
      ['body:d', '1e309'],
      ['body:e', '-0.5'],
      ['body:g', '-99999999999'],
    ]);
  });

  test(`nesting of any depth costs no stack; paths stop growing below ${MAX_DEPTH} levels`, () => {
    const depth = 200_000;
    expect(pushJson(`${'['.repeat(depth)}${']'.repeat(depth)}`, [], 100)).toBe(true);
    let doc = '{"q":"deep"}';
    for (let i = 0; i < 80; i++) doc = `{"a":${doc}}`;
    const out: Target[] = [];
    expect(pushJson(doc, out, 1000)).toBe(true);
    const last = out[out.length - 1] as Target;
    expect(last.value).toBe('deep');
    expect(last.key).toBe(`body:${Array(MAX_DEPTH).fill('a').join('.')}`);
  });

  test('stops at the cap (the caller reports the limit) and still answers true', () => {
    const out: Target[] = [];
    expect(pushJson(JSON.stringify({ a: 'x', b: 'y', c: 'z' }), out, 3)).toBe(true);
    expect(out).toHaveLength(3);
  });

  test('a top-level string is one value under `body:`', () => {
    expect(scanned('"<svg onload=alert(1)>"')).toEqual([['body', 'body:', '<svg onload=alert(1)>']]);
  });
});

describe('repeatedName', () => {
  test.each([
    ['{"a":1,"a":2}', 'a'],
    ['{"a":{"b":1,"c":{"d":1},"b":2}}', 'a.b'],
    ['[{"x":1},{"y":1,"y":2}]', '1.y'],
    ['{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}', ''],
    ['{"a\\u0062":1,"ab":2}', 'ab'],
    ['[1,2,"a","a"]', ''],
    ['{"a":1,}', undefined],
    ['not json', undefined],
  ])('%s: %j', (text, expected) => {
    expect(repeatedName(text)).toBe(expected);
  });

  test('leaves the WAF scan as it was (its names are not tracked)', () => {
    repeatedName('{"a":1,"a":2}');
    const out: Target[] = [];
    expect(pushJson('{"a":1,"a":"x"}', out, 100)).toBe(true);
    expect(out.map((t) => t.value)).toEqual(['a', 'a', 'x']);
  });
});
