import type { OutgoingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import { deltaSeconds, MAX_DELTA_SECONDS, parseDirectives } from './directives.ts';
import { createMemoryCacheStore } from './memory-store.ts';
import {
  freshnessLifetime,
  headersToStore,
  initialAge,
  noneMatch,
  responseControl,
  type StoredResponse,
  unstorableReason,
  updateHeaders,
  varyNames,
  varyValue,
} from './semantics.ts';
import { decodeEntry, encodeEntry } from './store.ts';

const OPTS = { targeted: ['cdn-cache-control'], surrogate: 'portcullis' };
const DATE = 'Mon, 07 Dec 2026 00:00:00 GMT';
const T = Date.parse(DATE);

describe('Cache-Control parsing', () => {
  it.each([
    ['max-age=60', 60],
    ['MaX-AgE=60', 60],
    ['max-age=003600', 3600],
    ['max-age="60"', 60],
    ['extension="max-age=3600", max-age=1', 1],
    ['max-age=1, extension="max-age=3600"', 1],
    ['max-age=3600, max-age=1', 3600],
    ['max-age=99999999999', MAX_DELTA_SECONDS],
    ['max-age=60a', Number.NaN],
    ["max-age='60'", Number.NaN],
    ['max-age=-1', Number.NaN],
    ['max-age=1.5', Number.NaN],
    ['no-store', undefined],
  ])('%s → max-age %s', (value, want) => {
    expect(deltaSeconds(parseDirectives(value), 'max-age')).toEqual(want);
  });

  it('drops malformed members (a space before "=") but keeps the others', () => {
    const d = parseDirectives('max-age =60, no-cache');
    expect(d.has('max-age')).toBe(false);
    expect(d.get('no-cache')).toBe(true);
  });

  it('reads several field lines as one list', () => {
    expect([...parseDirectives(['public', 'max-age=5']).keys()]).toEqual(['public', 'max-age']);
  });
});

describe('which directives govern a response', () => {
  it.each([
    [
      'CDN-Cache-Control over Cache-Control',
      { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=5' },
      'max-age',
      true,
    ],
    [
      'Surrogate-Control for this device',
      { 'cache-control': 'no-store', 'surrogate-control': 'max-age=5;portcullis' },
      'max-age',
      true,
    ],
    [
      'Surrogate-Control for another device is ignored',
      { 'cache-control': 'no-store', 'surrogate-control': 'max-age=5;other' },
      'no-store',
      false,
    ],
    ['Cache-Control when no targeted field', { 'cache-control': 'no-store' }, 'no-store', false],
  ])('%s', (_what, headers, directive, targeted) => {
    const c = responseControl(headers, OPTS.targeted, OPTS.surrogate);
    expect(c.cc.has(directive)).toBe(true);
    expect(c.targeted).toBe(targeted);
  });
});

describe('freshness lifetime (shared cache)', () => {
  const life = (status: number, headers: Record<string, string>, ttl?: number) =>
    freshnessLifetime(status, headers, responseControl(headers, OPTS.targeted), T, { ...OPTS, ttl });
  it.each([
    ['s-maxage wins over max-age', 200, { 'cache-control': 'max-age=600, s-maxage=5' }, 5],
    [
      'max-age wins over Expires',
      200,
      { 'cache-control': 'max-age=5', expires: 'Mon, 07 Dec 2026 01:00:00 GMT', date: DATE },
      5,
    ],
    ['Expires minus Date', 200, { expires: 'Mon, 07 Dec 2026 00:10:00 GMT', date: DATE }, 600],
    ['an invalid Expires is already expired', 200, { expires: '0', date: DATE }, 0],
    [
      'an invalid max-age is stale even with a future Expires',
      200,
      { 'cache-control': 'max-age=x', expires: 'Mon, 07 Dec 2026 01:00:00 GMT' },
      0,
    ],
    [
      'heuristic: 10 % since Last-Modified',
      200,
      { 'last-modified': 'Sun, 06 Dec 2026 23:00:00 GMT', date: DATE },
      360,
    ],
    ['no heuristic for a 403', 403, { 'last-modified': 'Sun, 06 Dec 2026 23:00:00 GMT', date: DATE }, 0],
    [
      'heuristic for an unknown status only when public',
      599,
      { 'cache-control': 'public', 'last-modified': 'Sun, 06 Dec 2026 23:00:00 GMT', date: DATE },
      360,
    ],
  ])('%s', (_what, status, headers, want) => {
    expect(life(status, headers)).toBe(want);
  });

  it('gives ttl to a response that states no freshness, only where heuristics are allowed', () => {
    expect(life(200, {}, 300)).toBe(300);
    expect(life(500, {}, 300)).toBe(0);
    expect(life(200, { 'cache-control': 'max-age=5' }, 300)).toBe(5);
  });
});

describe('initial age', () => {
  it.each([
    ['no Age: the transit time', {}, 0.5],
    ['Age plus transit', { age: '100' }, 100.5],
    ['apparent age from Date', { date: new Date(T - 30_000).toUTCString() }, 30],
    ['Age "abc" is stale', { age: 'abc' }, Number.POSITIVE_INFINITY],
    ['Age "0, 0" is stale', { age: '0, 0' }, Number.POSITIVE_INFINITY],
    ['two Age lines are stale', { age: ['0', '0'] }, Number.POSITIVE_INFINITY],
    ['a negative Age is stale', { age: '-1' }, Number.POSITIVE_INFINITY],
  ])('%s', (_what, headers, want) => {
    // Upstream headers may repeat a field as an array, which OutgoingHttpHeaders does not type for Age.
    expect(initialAge(headers as unknown as OutgoingHttpHeaders, T - 500, T)).toBeCloseTo(want, 3);
  });
});

describe('what a shared cache may store', () => {
  const why = (
    status: number,
    res: Record<string, string>,
    req: Record<string, string> = {},
    method = 'GET',
  ) =>
    unstorableReason(
      method,
      req,
      parseDirectives(req['cache-control']),
      status,
      res,
      responseControl(res, OPTS.targeted),
      OPTS,
    );
  it.each([
    ['a fresh 200', 200, { 'cache-control': 'max-age=5' }, {}, undefined],
    ['no-store', 200, { 'cache-control': 'no-store, max-age=5' }, {}, 'no-store'],
    ['private', 200, { 'cache-control': 'private, max-age=5' }, {}, 'private'],
    [
      'a request with no-store',
      200,
      { 'cache-control': 'max-age=5' },
      { 'cache-control': 'no-store' },
      'request-no-store',
    ],
    [
      'Authorization without public',
      200,
      { 'cache-control': 'max-age=5' },
      { authorization: 'Bearer x' },
      'authorization',
    ],
    [
      'Authorization with s-maxage',
      200,
      { 'cache-control': 's-maxage=5' },
      { authorization: 'Bearer x' },
      undefined,
    ],
    [
      'Authorization with must-revalidate',
      200,
      { 'cache-control': 'max-age=5, must-revalidate' },
      { authorization: 'Bearer x' },
      undefined,
    ],
    ['Vary: *', 200, { 'cache-control': 'max-age=5', vary: '*' }, {}, 'vary-star'],
    ['a 206', 206, { 'cache-control': 'max-age=5' }, {}, 'status'],
    ['a 201 without freshness', 201, { 'last-modified': DATE }, {}, 'no-freshness'],
    [
      'must-understand on an unknown status',
      299,
      { 'cache-control': 'max-age=5, must-understand, no-store' },
      {},
      'must-understand',
    ],
    [
      'must-understand overrides no-store on a known status',
      200,
      { 'cache-control': 'max-age=5, must-understand, no-store' },
      {},
      undefined,
    ],
  ])('%s', (_what, status, res, req, want) => {
    expect(why(status, res, req)).toBe(want);
  });

  it('never stores cookies, hop-by-hop headers or those Connection names', () => {
    expect(
      headersToStore({
        'set-cookie': 'a=1',
        connection: 'x-a',
        'x-a': '1',
        'x-b': '2',
        'keep-alive': 'timeout=5',
      }),
    ).toEqual({ 'x-b': '2' });
  });

  it("a 304 updates stored headers but not the body's own", () => {
    const out = updateHeaders(
      { etag: '"1"', 'content-length': '10', 'x-v': 'a', 'cache-control': 'max-age=1' },
      { etag: '"2"', 'content-length': '3', 'x-v': 'b', 'cache-control': 'max-age=60', 'set-cookie': 'a=1' },
    );
    expect(out).toEqual({ etag: '"1"', 'content-length': '10', 'x-v': 'b', 'cache-control': 'max-age=60' });
  });

  it('reads Vary as sorted lower-case names, null for *', () => {
    expect(varyNames({ vary: ['Accept-Language, X-A', 'accept-encoding'] })).toEqual([
      'accept-encoding',
      'accept-language',
      'x-a',
    ]);
    expect(varyNames({ vary: 'x, *' })).toBeNull();
  });

  it('compares Vary values with lines combined, spaces dropped, and case folded for language tags', () => {
    expect(varyValue({ 'accept-language': 'eN, De' }, 'accept-language')).toBe(
      varyValue({ 'accept-language': 'en,de' }, 'accept-language'),
    );
    expect(varyValue({ 'x-a': ['1', ' 2'] }, 'x-a')).toBe('1,2');
    expect(varyValue({ 'x-a': 'A' }, 'x-a')).not.toBe(varyValue({ 'x-a': 'a' }, 'x-a'));
    expect(varyValue({}, 'x-a')).not.toBe(varyValue({ 'x-a': '' }, 'x-a'));
  });

  it('compares If-None-Match weakly', () => {
    expect(noneMatch('W/"a"', '"a"')).toBe(true);
    expect(noneMatch('"x", "a"', 'W/"a"')).toBe(true);
    expect(noneMatch('"x"', '"a"')).toBe(false);
    expect(noneMatch('*', '"a"')).toBe(true);
  });
});

describe('memory cache store', () => {
  const entry = (bytes: number): StoredResponse => ({
    status: 200,
    headers: { 'content-type': 'text/plain' },
    body: Buffer.alloc(bytes, 'x'),
    requestTime: T,
    responseTime: T,
    initialAge: 0,
  });

  it('stays within its byte bound, dropping the least recently used first', async () => {
    const store = createMemoryCacheStore({ maxBytes: 3000, now: () => T });
    await store.put('/a', [], '', entry(900), 60_000);
    await store.put('/b', [], '', entry(900), 60_000);
    await store.get('/a', () => '');
    await store.put('/c', [], '', entry(900), 60_000);
    expect(store.bytes()).toBeLessThanOrEqual(3000);
    expect(await store.get('/b', () => '')).toBeUndefined();
    expect(await store.get('/a', () => '')).toBeDefined();
    expect(await store.get('/c', () => '')).toBeDefined();
    await store.put('/huge', [], '', entry(5000), 60_000);
    expect(await store.get('/huge', () => '')).toBeUndefined();
  });

  it('expires entries, keeps variants per URL, and purges by URL and prefix', async () => {
    let now = T;
    const store = createMemoryCacheStore({ now: () => now });
    await store.put('/v', ['accept-language'], 'en', entry(1), 1000);
    await store.put('/v', ['accept-language'], 'fr', entry(2), 1000);
    expect((await store.get('/v', () => 'fr'))?.body.length).toBe(2);
    expect(await store.get('/v', () => 'de')).toBeUndefined();
    now += 1001;
    expect(await store.get('/v', () => 'en')).toBeUndefined();
    await store.put('/p/1', [], '', entry(1), 1000);
    await store.put('/p/2', [], '', entry(1), 1000);
    await store.put('/q', [], '', entry(1), 1000);
    expect(await store.purgePrefix('/p/')).toBe(2);
    expect(await store.purge('/q')).toBe(1);
    expect(store.bytes()).toBeLessThan(500);
  });

  it('round-trips an entry through the byte encoding the Redis store uses', () => {
    const e = { ...entry(5), headers: { a: ['1', '2'], b: 'x' }, initialAge: Number.POSITIVE_INFINITY };
    expect(decodeEntry(encodeEntry(e))).toEqual(e);
  });
});
