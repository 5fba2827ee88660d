import { describe, expect, test } from 'vitest';
import { cookiesOf, parseCookies } from './cookies.ts';

describe('parseCookies', () => {
  test.each<[string, string | undefined, Record<string, string>, string[]]>([
    ['absent', undefined, {}, []],
    ['simple pairs', 'a=1; b=two', { a: '1', b: 'two' }, []],
    ['percent-decoded values', 'q=%27x%27', { q: "'x'" }, []],
    ['base64 padding is no pair', 'tok=YWJj==; b=1', { tok: 'YWJj==', b: '1' }, []],
    [
      'a repeated name: the first wins, the second is hidden',
      "id=1; id=2' OR 1=1",
      { id: '1' },
      ["2' OR 1=1"],
    ],
    ['a bare segment is hidden (a nameless cookie)', 'a=1; <script>', { a: '1' }, ['<script>']],
    ['an empty segment hides nothing', 'a=1;; b=2', { a: '1', b: '2' }, []],
  ])('%s', (_what, header, values, hidden) => {
    const c = parseCookies(header);
    expect({ ...c.values }).toEqual(values);
    expect(c.hidden).toEqual(hidden);
  });

  test('HTTP/2 cookie headers given as a list are joined', () => {
    expect({ ...parseCookies(['a=1', 'b=2']).values }).toEqual({ a: '1', b: '2' });
  });

  test('cookiesOf parses once per request and keeps the result', () => {
    const ctx: { cookies?: ReturnType<typeof parseCookies>; req: { headers: Record<string, string> } } = {
      req: { headers: { cookie: 'a=1' } },
    };
    const first = cookiesOf(ctx);
    ctx.req.headers.cookie = 'a=2';
    expect(cookiesOf(ctx)).toBe(first);
    expect(first.values.a).toBe('1');
  });
});
