import { describe, expect, test } from 'vitest';
import { MultipartError, type MultipartRejection, parseMultipart } from './multipart.ts';

const B = 'Xb0undary';
const CT = `multipart/form-data; boundary=${B}`;

/** A multipart body from part header blocks and contents, CRLF line ends. */
function form(...parts: Array<[string, string]>): Buffer {
  let s = '';
  for (const [head, content] of parts) s += `--${B}\r\n${head}\r\n\r\n${content}\r\n`;
  return Buffer.from(`${s}--${B}--\r\n`, 'latin1');
}

function reason(body: Buffer, ct = CT): MultipartRejection | undefined {
  try {
    parseMultipart(body, ct);
    return undefined;
  } catch (err) {
    if (err instanceof MultipartError) return err.reason;
    throw err;
  }
}

describe('parseMultipart', () => {
  test('every part: field names and values, file names and contents', () => {
    const parts = parseMultipart(
      form(
        ['Content-Disposition: form-data; name="title"', 'hello'],
        [
          'Content-Disposition: form-data; name="upload"; filename="a.txt"\r\nContent-Type: text/plain',
          "x' OR '1'='1",
        ],
        ['Content-Disposition: form-data; name="blob"\r\nContent-Type: application/octet-stream', 'raw'],
      ),
      CT,
    );
    expect(parts).toEqual([
      { name: 'title', value: 'hello' },
      { name: 'upload', filename: 'a.txt', value: "x' OR '1'='1" },
      { name: 'blob', filename: '', value: 'raw' },
    ]);
  });

  test.each<[string, Buffer, string, MultipartRejection]>([
    [
      'no boundary parameter',
      form(['Content-Disposition: form-data; name="a"', 'x']),
      'multipart/form-data',
      'no-boundary',
    ],
    [
      'two boundary parameters',
      form(['Content-Disposition: form-data; name="a"', 'x']),
      `${CT}; boundary=other`,
      'no-boundary',
    ],
    [
      'cut short (no closing delimiter)',
      Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="a"\r\n\r\nx`),
      CT,
      'malformed',
    ],
    [
      'bare LF line ends',
      Buffer.from(`--${B}\nContent-Disposition: form-data; name="a"\n\nx\n--${B}--\n`),
      CT,
      'malformed',
    ],
    [
      'two Content-Disposition headers',
      form(['Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"', 'x']),
      CT,
      'disposition',
    ],
    ['no Content-Disposition', form(['Content-Type: text/plain', 'x']), CT, 'disposition'],
    [
      'a disposition that is not form-data',
      form(['Content-Disposition: attachment; name="a"', 'x']),
      CT,
      'disposition',
    ],
    [
      'two Content-Type headers',
      form([
        'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain\r\nContent-Type: image/png',
        'x',
      ]),
      CT,
      'duplicate-header',
    ],
    [
      'name given twice',
      form(['Content-Disposition: form-data; name="a"; name="b"', 'x']),
      CT,
      'duplicate-parameter',
    ],
    [
      'filename and filename*',
      form(['Content-Disposition: form-data; name="a"; filename="a.txt"; filename*=UTF-8\'\'b.php', 'x']),
      CT,
      'duplicate-parameter',
    ],
    [
      'base64 transfer encoding',
      form(['Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64', 'eA==']),
      CT,
      'transfer-encoding',
    ],
    [
      'a utf-7 part',
      form([
        'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=utf-7',
        '+ADw-script+AD4-',
      ]),
      CT,
      'charset',
    ],
    [
      'a filename with ../',
      form(['Content-Disposition: form-data; name="f"; filename="../../etc/x"', 'x']),
      CT,
      'filename',
    ],
    [
      'a filename with a backslash',
      form(['Content-Disposition: form-data; name="f"; filename="a\\\\b.txt"', 'x']),
      CT,
      'filename',
    ],
    [
      'a filename that is ..',
      form(['Content-Disposition: form-data; name="f"; filename=".."', 'x']),
      CT,
      'filename',
    ],
    [
      'an encoded filename* with a path',
      form(['Content-Disposition: form-data; name="f"; filename*=UTF-8\'\'..%2Fx.php', 'x']),
      CT,
      'filename',
    ],
  ])('rejects %s', (_what, body, ct, expected) => {
    expect(reason(body, ct)).toBe(expected);
  });

  test('a part in a declared UTF-16 is read as text', () => {
    const body = Buffer.concat([
      Buffer.from(
        '--XyZ\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=utf-16le\r\n\r\n',
      ),
      Buffer.from('<b>', 'utf16le'),
      Buffer.from('\r\n--XyZ--\r\n'),
    ]);
    expect(parseMultipart(body, 'multipart/form-data; boundary=XyZ')).toEqual([{ name: 'a', value: '<b>' }]);
  });

  test('a name holding `;filename=` inside quotes is one parameter', () => {
    const parts = parseMultipart(form(['Content-Disposition: form-data; name="a;filename=b"', 'x']), CT);
    expect(parts).toEqual([{ name: 'a;filename=b', value: 'x' }]);
  });
});
