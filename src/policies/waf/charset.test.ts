import { describe, expect, test } from 'vitest';
import { bodyReadings, declaredCharsets, undecodableCharset } from './charset.ts';
import { compileEngine } from './engine.ts';

const engine = compileEngine({ paranoia: 1 });
const THRESHOLD = 5;

function utf16be(s: string): Buffer {
  return Buffer.from(s, 'utf16le').swap16();
}
function utf32(s: string, little: boolean): Buffer {
  const cps = [...s].map((c) => c.codePointAt(0) as number);
  const b = Buffer.alloc(cps.length * 4);
  for (let i = 0; i < cps.length; i++) {
    if (little) b.writeUInt32LE(cps[i] as number, i * 4);
    else b.writeUInt32BE(cps[i] as number, i * 4);
  }
  return b;
}
const BOM16LE = Buffer.from([0xff, 0xfe]);
const BOM16BE = Buffer.from([0xfe, 0xff]);
const BOM32LE = Buffer.from([0xff, 0xfe, 0, 0]);
const BOM32BE = Buffer.from([0, 0, 0xfe, 0xff]);
const BOM8 = Buffer.from([0xef, 0xbb, 0xbf]);

/** The same text in every encoding a JSON parser may detect (RFC 4627 §3, byte-order marks). */
function encodings(text: string): [string, Buffer][] {
  return [
    ['UTF-16LE', Buffer.from(text, 'utf16le')],
    ['UTF-16BE', utf16be(text)],
    ['UTF-16LE with BOM', Buffer.concat([BOM16LE, Buffer.from(text, 'utf16le')])],
    ['UTF-16BE with BOM', Buffer.concat([BOM16BE, utf16be(text)])],
    ['UTF-32LE', utf32(text, true)],
    ['UTF-32BE', utf32(text, false)],
    ['UTF-32LE with BOM', Buffer.concat([BOM32LE, utf32(text, true)])],
    ['UTF-32BE with BOM', Buffer.concat([BOM32BE, utf32(text, false)])],
    ['UTF-8 with BOM', Buffer.concat([BOM8, Buffer.from(text)])],
  ];
}

function inspect(body: Buffer, contentType: string) {
  return engine.inspect({
    method: 'POST',
    url: '/api/items',
    headers: { 'content-type': contentType },
    body,
  });
}

describe('bodies in UTF-16 and UTF-32 (Jackson and json.loads detect them)', () => {
  const attacks = [
    ['xss', '{"q":"<script>alert(1)</script>"}', 'application/json'],
    ['sqli', '{"q":"1\' union select password from users--"}', 'application/json'],
    ['xss', 'q=<svg onload=alert(1)>', 'application/x-www-form-urlencoded'],
  ] as const;
  for (const [family, text, type] of attacks)
    test.each(encodings(text))(`${family} in a ${type} body, %s`, (_name, body) => {
      const r = inspect(body, type);
      expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
      expect(r.matches.map((m) => m.family)).toContain(family);
    });

  test.each(encodings('{"name":"Zoë O\'Brien","city":"東京","note":"Leave it at the door"}'))(
    'a benign JSON body in %s passes, its fields read by name',
    (_name, body) => {
      const r = inspect(body, 'application/json');
      expect(r.score).toBe(0);
    },
  );

  test('the fields of a UTF-16 JSON body keep their paths (exclusions apply)', () => {
    const excluded = compileEngine({ paranoia: 1, exclusions: [{ target: 'body:q' }] });
    const body = Buffer.from('{"q":"<script>alert(1)</script>"}', 'utf16le');
    expect(inspect(body, 'application/json').matches.map((m) => m.target)).toContain('body:q');
    expect(excluded.inspect({ method: 'POST', url: '/x', headers: {}, body }).score).toBe(0);
  });

  test.each([
    ['UTF-16LE', '"Ā<script>alert(1)</script>"', (t: string) => Buffer.from(t, 'utf16le')],
    ['UTF-16BE', '"Ā<script>alert(1)</script>"', utf16be],
    ['UTF-16LE, a name', '{"Ā":"<script>alert(1)</script>"}', (t: string) => Buffer.from(t, 'utf16le')],
  ])(
    'a %s body whose NULs are not those of ASCII text (`"Ā…`) is still read as UTF-16',
    (_name, text, encode) => {
      const body = encode(text);
      expect(bodyReadings(body, '')).toContain(text);
      const r = inspect(body, 'application/json');
      expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
      expect(r.matches.map((m) => m.family)).toContain('xss');
    },
  );

  test('UTF-8 bytes declared as UTF-16 are read as UTF-8 too', () => {
    const r = inspect(Buffer.from('{"q":"<script>alert(1)</script>"}'), 'application/json; charset=utf-16');
    expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
  });
});

describe('declared charsets', () => {
  test.each([
    ['application/json; charset=utf-8', ['utf-8']],
    ['application/json;charset="UTF-8"', ['utf-8']],
    ["application/x-www-form-urlencoded; charset='utf-8'", ['utf-8']],
    ['text/plain; format=flowed; Charset=ISO-8859-1', ['iso-8859-1']],
    ['text/plain;charset=ibm037;charset=UTF-8', ['ibm037', 'utf-8']],
    ['text/plain; ChArSeT=UTF-7', ['utf-7']],
    ['multipart/form-data; boundary=x', []],
    ['application/json', []],
  ])('%s declares %j', (type, charsets) => {
    expect(declaredCharsets(type)).toEqual(charsets);
    // Asked again (the remembered answer) and after another type: the same.
    expect(declaredCharsets(type)).toEqual(charsets);
    declaredCharsets('text/plain; charset=utf-7');
    expect(declaredCharsets(type)).toEqual(charsets);
  });

  test.each([
    'utf-7',
    'ibm037',
    'IBM500',
    'x-user-defined',
    'cp875',
    '',
    '"garbage"',
    'ibm037;charset=utf-8',
    'utf-8;charset=utf-16',
  ])('a body declared %j is refused (protocol-body-charset)', (charset) => {
    expect(undecodableCharset(`application/x-www-form-urlencoded; charset=${charset}`)).toBe(true);
    const r = inspect(Buffer.from('q=hello'), `application/x-www-form-urlencoded; charset=${charset}`);
    expect(r.matches.map((m) => m.id)).toContain('protocol-body-charset');
    expect(r.score).toBeGreaterThanOrEqual(THRESHOLD);
  });

  test.each([
    'utf-8',
    'UTF-8',
    '"utf-8"',
    "'utf-8'",
    'us-ascii',
    'iso-8859-1',
    'ISO-8859-15',
    'windows-1252',
    'utf-16',
    'utf-16le',
    'utf-32be',
    'utf-8;charset=UTF-8',
    // Two labels of one encoding are one charset, not two.
    'utf-8;charset=utf8',
    'us-ascii;charset=utf-8',
    'latin1;charset=iso-8859-1',
  ])('a body declared %s is decoded, not refused', (charset) => {
    expect(undecodableCharset(`application/json; charset=${charset}`)).toBe(false);
    expect(inspect(Buffer.from('{"a":"b"}'), `application/json; charset=${charset}`).score).toBe(0);
  });

  test('a declared charset without a body is not judged', () => {
    const r = engine.inspect({
      method: 'GET',
      url: '/x',
      headers: { 'content-type': 'text/plain; charset=utf-7' },
    });
    expect(r.matches.map((m) => m.id)).not.toContain('protocol-body-charset');
  });

  test('windows-1252 bytes are read as their characters', () => {
    expect(bodyReadings(Buffer.from([0x93, 0x41, 0x94, 0xe9]), 'text/plain; charset=windows-1252')).toEqual([
      '\u201cA\u201dé',
    ]);
  });
});

describe('bodyReadings', () => {
  const text = '{"emoji":"😀","cjk":"中文","a":"x"}';
  test.each(encodings(text))('%s reads back the text (first of its readings)', (_name, body) => {
    expect(bodyReadings(body, '')[0]).toBe(text);
  });
  test('ASCII and UTF-8 are one reading, unchanged', () => {
    expect(bodyReadings(Buffer.from('a=b'), '')).toEqual(['a=b']);
    expect(bodyReadings(Buffer.from('é中'), 'text/plain; charset=utf-8')).toEqual(['é中']);
  });
  test('a broken last unit is U+FFFD, never dropped', () => {
    expect(bodyReadings(Buffer.concat([BOM16BE, utf16be('ab'), Buffer.from([0x41])]), '')).toEqual([
      'ab\ufffd',
    ]);
    expect(bodyReadings(Buffer.concat([BOM32LE, utf32('ab', true), Buffer.from([1, 2])]), '')).toEqual([
      'ab\ufffd',
    ]);
    expect(bodyReadings(Buffer.concat([BOM32LE, Buffer.from([0, 0, 0x11, 0])]), '')).toEqual(['\ufffd']);
  });
});
