import { describe, expect, it } from 'vitest';
import { ProblemError } from '../errors.ts';
import { canonicalTarget } from './target.ts';

function reason(raw: string): string | undefined {
  try {
    canonicalTarget(raw);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(ProblemError);
    expect((err as ProblemError).code).toBe('PC_BAD_TARGET');
    return (err as ProblemError).extensions.reason as string;
  }
}

describe('canonicalTarget', () => {
  it.each([
    ['a plain path is kept as is', '/svc/items/7', '/svc/items/7', ''],
    ['the query is split off and kept', '/svc/items?a=1&b=%27x%27', '/svc/items', 'a=1&b=%27x%27'],
    ['unreserved characters are decoded', '/sv%63/p%75blic', '/svc/public', ''],
    ['lower-case hex becomes upper-case', '/a/%c3%a9', '/a/%C3%A9', ''],
    ['a space is encoded', '/a/b%20c', '/a/b%20c', ''],
    ['an encoded percent stays encoded', '/a/100%25', '/a/100%25', ''],
    ['sub-delims are decoded to themselves', '/a/%21%24%26%27%28%29', "/a/!$&'()", ''],
    ['an encoded ? stays encoded in the path', '/a/b%3Fc', '/a/b%3Fc', ''],
    ['raw non-ASCII is encoded as UTF-8', '/a/é', '/a/%C3%A9', ''],
    ['dots inside a segment are fine', '/a/.well-known/x.json', '/a/.well-known/x.json', ''],
    ['three dots are a name', '/a/.../b', '/a/.../b', ''],
    ['raw query characters outside the grammar are encoded', '/a?q=a b"c', '/a', 'q=a%20b%22c'],
    ['an empty query', '/a?', '/a', ''],
  ])('%s', (_d, raw, path, query) => {
    const t = canonicalTarget(raw);
    expect(t.path).toBe(path);
    expect(t.query).toBe(query);
  });

  it.each([
    ['absolute-form', 'http://evil.example/svc/items', 'not-origin-form'],
    ['authority-form', 'evil.example:443', 'not-origin-form'],
    ['asterisk-form', '*', 'not-origin-form'],
    ['a fragment', '/a/b#frag', 'fragment'],
    ['a fragment in the query', '/a?x=1#f', 'fragment'],
    ['an encoded slash', '/static/items/..%2fsecret', 'encoded-slash'],
    ['an encoded slash, upper case', '/a/b%2Fc', 'encoded-slash'],
    ['a double-encoded slash stays data', '/a/b%252fc', undefined],
    ['a raw backslash', '/a/..\\secret', 'backslash'],
    ['an encoded backslash', '/a/..%5csecret', 'backslash'],
    ['NUL', '/a/b%00.json', 'control-character'],
    ['an encoded newline', '/a/b%0d%0aSet-Cookie:x', 'control-character'],
    ['a raw tab', '/a/\tb', 'control-character'],
    ['NUL in the query', '/a?x=%00', undefined],
    ['a raw control character in the query', '/a?x=\u0001', 'control-character'],
    ['a dot-dot segment', '/a/../b', 'dot-segment'],
    ['a trailing dot-dot', '/a/..', 'dot-segment'],
    ['a dot segment', '/a/./b', 'dot-segment'],
    ['an encoded dot-dot', '/a/%2e%2e/b', 'dot-segment'],
    ['a half-encoded dot-dot', '/a/.%2E/b', 'dot-segment'],
    ['a dot-dot with a path parameter', '/a/..;/b', 'dot-segment'],
    ['fullwidth dots', '/a/%EF%BC%8E%EF%BC%8E/b', 'confusable-separator'],
    ['a raw fullwidth solidus', '/a/..\uFF0Fb', 'confusable-separator'],
    ['a division slash', '/a/..%E2%88%95etc', 'confusable-separator'],
    ['a lone percent', '/a/100%', 'bad-percent-encoding'],
    ['a bad hex digit', '/svc/items/%zz', 'bad-percent-encoding'],
    ['a truncated escape', '/a/%4', 'bad-percent-encoding'],
    ['bytes that are not UTF-8', '/a/%c0%af', 'bad-percent-encoding'],
    ['an overlong dot', '/a/%c0%ae%c0%ae/b', 'bad-percent-encoding'],
    ['bad encoding in the query', '/a?q=%zz', 'bad-percent-encoding'],
  ])('rejects %s', (_d, raw, expected) => {
    expect(reason(raw)).toBe(expected);
  });

  it('flags path parameters for the route to decide', () => {
    expect(canonicalTarget('/a/b;jsessionid=1').semicolon).toBe(true);
    expect(canonicalTarget('/a/b%3Bx').semicolon).toBe(true);
    expect(canonicalTarget('/a/b?x=;').semicolon).toBe(false);
  });

  it('is idempotent: a canonical target parses to itself', () => {
    for (const raw of ['/a/%C3%A9/b%20c', '/a/100%25', '/a/b%3Fc?x=%27', '/sv%63/x']) {
      const once = canonicalTarget(raw);
      const twice = canonicalTarget(once.path + (once.query ? `?${once.query}` : ''));
      expect(twice.path).toBe(once.path);
      expect(twice.query).toBe(once.query);
    }
  });
});
