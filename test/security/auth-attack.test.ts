/**
 * Issue 9, part 6 and 7, as an attacker would try it against a real gateway and upstream:
 * - guessing credentials (basic, API key, JWT) from one address hits the route's `key: ip` limit:
 *   the failed attempts are counted and answered 429 past it, while a good credential from another
 *   address still works; with Redis, the store holds one hashed counter per address;
 * - failed attempts are visible: `portcullis_auth_failures_total` on /metrics, client address and
 *   reason on the access log line;
 * - an identity header an auth policy of a service forwards (`forwardSubject`, `forwardClaims`) is
 *   stripped from every request to that service: sibling routes without auth and pass-through too;
 * - IPv6 clients are counted per /64.
 * Client addresses come from X-Forwarded-For (the test is a trusted proxy).
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { forge, OIDC_DEFAULT_AUDIENCE, startOidc, type TestOidc } from '../helpers/oidc.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** Attempts admitted per minute and client address on every guarded route. */
const N = 5;
/** bcrypt of "open sesame" (cost 4: the test needs no real work factor). */
const ALICE_HASH = '$2b$04$MDf/fngxrZi5mk8x8SDIs./Jt3Fcj1cwBd3Yxc/ue6pXEUJCyazP6';
const API_KEY = 'k-test-0123456789abcdef';
const FILES = {
  'policies/secrets/keys.yaml': `ci-robot: ${API_KEY}\n`,
  'policies/secrets/users.htpasswd': `alice:${ALICE_HASH}\n`,
};

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

const GUARD_OPERATIONS = {
  'GET /basic': 'basicOp',
  'GET /key': 'keyOp',
  'GET /jwt': 'jwtOp',
  'GET /open': 'openOp',
};

function guardRules(oidc: TestOidc): unknown[] {
  const limit = (key: string) => ({ limit: N, window: '1m', key });
  return [
    {
      match: { service: 'guard', operations: ['basicOp'] },
      auth: { basic: { usersFile: 'secrets/users.htpasswd' } },
      rateLimit: limit('ip'),
    },
    {
      match: { service: 'guard', operations: ['keyOp'] },
      auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
      rateLimit: limit('apiKey'),
    },
    {
      match: { service: 'guard', operations: ['jwtOp'] },
      auth: { jwt: { issuer: oidc.issuer, audience: OIDC_DEFAULT_AUDIENCE } },
      // Keyed by subject: a request without a verified identity is counted by its address.
      rateLimit: limit('subject'),
    },
    {
      match: { service: 'guard', operations: ['openOp'] },
      rateLimit: { limit: 2, window: '1m', key: 'ip' },
    },
  ];
}

/** One answer with its body read. */
async function call(
  gw: TestGateway,
  path: string,
  client: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(`${gw.url}${path}`, { headers: { 'x-forwarded-for': client, ...headers } });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/** `count` attempts in turn (a guessing client waits for each answer); their statuses. */
async function attempts(
  gw: TestGateway,
  path: string,
  client: string,
  headersOf: (i: number) => Record<string, string>,
  count: number,
) {
  const answers = [];
  for (let i = 0; i < count; i++) answers.push(await call(gw, path, client, headersOf(i)));
  return answers;
}

describe('credential guessing against the rate limit (memory store)', () => {
  let oidc: TestOidc;
  let upstream: TestUpstream;
  let gw: TestGateway;
  const logs = captureLogs('info');

  beforeAll(async () => {
    oidc = await startOidc();
    upstream = await startUpstream({ name: 'u1' });
    gw = await startGateway(
      { guard: spec({ basePath: '/guard', upstreams: [upstream.url], operations: GUARD_OPERATIONS }) },
      { trustProxy: ['127.0.0.1'], logLevel: 'info' },
      { files: FILES, policies: { guard: guardRules(oidc) }, logger: logs.logger },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
  });

  interface Guesser {
    name: string;
    path: string;
    wrong: (i: number) => Record<string, string>;
    good?: Record<string, string>;
    goodFromAttacker?: number;
  }
  const guessers: Guesser[] = [
    {
      name: 'wrong basic-auth passwords',
      path: '/guard/basic',
      wrong: (i: number) => ({ authorization: basic('alice', `guess-${i}`) }),
      good: { authorization: basic('alice', 'open sesame') },
      // The limit counts the address: the right password is refused from it as well.
      goodFromAttacker: 429,
    },
    {
      name: 'wrong API keys (limit keyed by apiKey falls back to the address)',
      path: '/guard/key',
      wrong: (i: number) => ({ 'x-api-key': `k-guess-${i}-0123456789abcdef` }),
      good: { 'x-api-key': API_KEY },
      // A valid key is counted by its name: its own bucket, untouched by the guesses.
      goodFromAttacker: 200,
    },
    {
      name: 'garbage and unsigned JWTs (limit keyed by subject falls back to the address)',
      path: '/guard/jwt',
      wrong: (i: number) => ({
        authorization: `Bearer ${i % 2 ? 'not.a.jwt' : forge.algNone({ sub: 'admin', iss: 'x', aud: OIDC_DEFAULT_AUDIENCE })}`,
      }),
    },
  ];

  test.each(guessers)('$name: 401 for the first N, then 429; the upstream sees none', async (g) => {
    const attacker = `198.51.100.${guessers.indexOf(g) + 10}`;
    const before = upstream.seen.length;
    const answers = await attempts(gw, g.path, attacker, g.wrong, 2 * N);
    expect(answers.map((a) => a.status)).toEqual([...Array(N).fill(401), ...Array(N).fill(429)]);
    for (const [i, a] of answers.entries()) {
      expect(a.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(a.headers.get('ratelimit-policy')).toBe(`"default";q=${N};w=60`);
      expect(a.headers.get('ratelimit')).toMatch(
        new RegExp(`^"default";r=${Math.max(0, N - 1 - i)};t=\\d+$`),
      );
      if (a.status === 401) {
        expect(a.body).toMatchObject({ code: 'PC_UNAUTHORIZED' });
        expect(a.headers.get('www-authenticate')).toBeTruthy();
      } else {
        expect(a.body).toMatchObject({ code: 'PC_RATE_LIMITED', status: 429 });
        expect(Number(a.headers.get('retry-after'))).toBeGreaterThan(0);
      }
    }
    expect(upstream.seen.length).toBe(before);
    if (g.good) expect((await call(gw, g.path, attacker, g.good)).status).toBe(g.goodFromAttacker);
  });

  test('a good credential from another address still works on every guarded route', async () => {
    const token = await oidc.token({});
    const goods: Array<[string, Record<string, string>]> = [
      ['/guard/basic', { authorization: basic('alice', 'open sesame') }],
      ['/guard/key', { 'x-api-key': API_KEY }],
      ['/guard/jwt', { authorization: `Bearer ${token}` }],
    ];
    for (const [path, headers] of goods) {
      const before = upstream.seen.length;
      const res = await call(gw, path, '198.51.100.200', headers);
      expect(res.status, path).toBe(200);
      expect(upstream.seen.length, path).toBe(before + 1);
    }
  });

  test('rejected attempts are counted on /metrics by reason and logged with the client address', async () => {
    const attacker = '198.51.100.99';
    await attempts(
      gw,
      '/guard/basic',
      attacker,
      (i) => ({ authorization: basic('mallory', `x${i}`) }),
      N + 2,
    );
    const text = await (await fetch(`${gw.addresses.admin}/metrics`)).text();
    const line = text
      .split('\n')
      .find(
        (l) =>
          l.startsWith('portcullis_auth_failures_total{') &&
          l.includes('service="guard"') &&
          l.includes('route="/guard/basic"') &&
          l.includes('reason="invalid_credentials"') &&
          l.includes('outcome="deny"'),
      );
    // Per attacker, the N attempts under the limit and the one that reached it: past it a client is
    // refused before its credentials are checked (no auth decision, no bcrypt).
    expect(Number(line?.split(' ').at(-1))).toBe(2 * (N + 1));
    // And by client, bounded to the top few: the attacker is named with its rejected attempts.
    const top = text
      .split('\n')
      .find((l) => l.startsWith(`portcullis_auth_failures_top_clients{client="${attacker}"}`));
    expect(Number(top?.split(' ').at(-1))).toBeGreaterThanOrEqual(N + 1);
    const mine = logs.lines.filter((l) => l.msg === 'request' && l.clientIp === attacker);
    expect(mine).toHaveLength(N + 2);
    expect(mine[0]).toMatchObject({
      status: 401,
      code: 'PC_UNAUTHORIZED',
      policies: [{ policy: 'auth', outcome: 'deny', reason: 'invalid_credentials' }],
    });
    expect(mine[N]).toMatchObject({
      status: 429,
      code: 'PC_RATE_LIMITED',
      policies: [
        { policy: 'auth', outcome: 'deny', reason: 'invalid_credentials' },
        { policy: 'rateLimit', outcome: 'deny', reason: 'limit' },
      ],
    });
    expect(mine[N + 1]).toMatchObject({
      status: 429,
      code: 'PC_RATE_LIMITED',
      policies: [{ policy: 'rateLimit', outcome: 'deny', reason: 'limit' }],
    });
  });

  test('IPv6 clients are counted per /64; IPv4-mapped addresses as IPv4', async () => {
    const open = (client: string) => call(gw, '/guard/open', client).then((r) => r.status);
    expect(await open('2001:db8:a:b::1')).toBe(200);
    expect(await open('2001:db8:a:b:ffff:ffff:ffff:fffe')).toBe(200);
    // Same /64, any spelling: the bucket is shared and full.
    expect(await open('2001:db8:a:b::99')).toBe(429);
    expect(await open('2001:0db8:000a:000b:0000:0000:0000:0001')).toBe(429);
    // The neighbouring /64 is another client.
    expect(await open('2001:db8:a:c::1')).toBe(200);
    expect(await open('203.0.113.9')).toBe(200);
    expect(await open('::ffff:203.0.113.9')).toBe(200);
    expect(await open('203.0.113.9')).toBe(429);
  });
});

describe('credential guessing with the Redis store', () => {
  let redis: TestRedis;
  let upstream: TestUpstream;
  let oidc: TestOidc;
  let gw: TestGateway;

  beforeAll(async () => {
    redis = await startRedis();
    oidc = await startOidc();
    upstream = await startUpstream({ name: 'u1' });
    gw = await startGateway(
      { guard: spec({ basePath: '/guard', upstreams: [upstream.url], operations: GUARD_OPERATIONS }) },
      { trustProxy: ['127.0.0.1'], state: { redis: redis.url } },
      { files: FILES, policies: { guard: guardRules(oidc) } },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
    await redis?.stop();
  });

  /** The counter the gateway keeps in Redis for a client of a guarded route (hashed address). */
  const counterKey = (operation: string, limit: number, key: string, client: string) =>
    `pc:v1:rl:guard/${operation}:${limit}/60000:${key}:${createHash('sha256')
      .update(`ip:${client}`)
      .digest('base64url')
      .slice(0, 22)}`;

  test('N wrong passwords, then 429; Redis holds one counter per address, none in clear', async () => {
    const attacker = '192.0.2.66';
    const answers = await attempts(
      gw,
      '/guard/basic',
      attacker,
      (i) => ({ authorization: basic('alice', `guess-${i}`) }),
      N + 3,
    );
    expect(answers.map((a) => a.status)).toEqual([...Array(N).fill(401), 429, 429, 429]);
    expect(
      (await call(gw, '/guard/basic', '192.0.2.67', { authorization: basic('alice', 'open sesame') })).status,
    ).toBe(200);
    // Two addresses of one IPv6 /64 guess API keys: one counter, keyed by the network.
    for (const client of ['2001:db8:5:6::1', '2001:db8:5:6::2'])
      expect((await call(gw, '/guard/key', client, { 'x-api-key': 'k-wrong-0123456789abcdef' })).status).toBe(
        401,
      );

    const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await client.connect();
      const keys = (await client.keys('*')).sort();
      expect(keys).toEqual(
        [
          counterKey('basicOp', N, 'ip', attacker),
          counterKey('basicOp', N, 'ip', '192.0.2.67'),
          counterKey('keyOp', N, 'apiKey', '2001:db8:5:6::/64'),
        ].sort(),
      );
      const dump = JSON.stringify(await Promise.all(keys.map((k) => client.get(k))));
      expect(`${keys.join()}${dump}`).not.toMatch(/192\.0\.2|2001:db8|alice|guess/);
      // The attacker's counter is a GCRA TAT: a full burst (N windows' worth) is booked ahead.
      const pttl = await client.pttl(counterKey('basicOp', N, 'ip', attacker));
      expect(pttl).toBeGreaterThan(50_000);
      expect(pttl).toBeLessThanOrEqual(60_000);
    } finally {
      client.disconnect();
    }
  });
});

describe('identity-header spoofing on sibling routes of an authenticated service', () => {
  let oidc: TestOidc;
  let upstream: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    oidc = await startOidc();
    upstream = await startUpstream({ name: 'u1' });
    gw = await startGateway(
      {
        ident: spec({ basePath: '/ident', upstreams: [upstream.url] }),
        // Pass-through: paths the spec does not declare are forwarded too.
        loose: spec({
          basePath: '/loose',
          upstreams: [upstream.url],
          operations: { 'GET /items': 'listItems' },
          extra: { passThrough: true },
        }),
        other: spec({ basePath: '/other', upstreams: [upstream.url] }),
      },
      {},
      {
        files: FILES,
        policies: {
          ident: [
            {
              match: { service: 'ident', operations: ['listItems'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' }, forwardSubject: 'X-User' },
            },
            {
              match: { service: 'ident', operations: ['createItem'] },
              auth: {
                jwt: {
                  issuer: oidc.issuer,
                  audience: OIDC_DEFAULT_AUDIENCE,
                  forwardClaims: { 'x-tenant': 'client_id' },
                },
              },
            },
            {
              match: { service: 'loose', operations: ['listItems'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' }, forwardSubject: 'x-user' },
            },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
  });

  /** Send `headers` to `path`; what the upstream received (the request must be forwarded). */
  async function forwarded(path: string, headers: Record<string, string>, method = 'GET') {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}${path}`, { method, headers });
    await res.arrayBuffer();
    expect(res.status, path).toBe(200);
    expect(upstream.seen.length, path).toBe(before + 1);
    return upstream.seen.at(-1)?.headers ?? {};
  }

  const spoofs: Array<{ name: string; path: string; headers: Record<string, string> }> = [
    {
      name: 'X-User on a sibling route without auth',
      path: '/ident/items/7',
      headers: { 'X-User': 'admin' },
    },
    { name: 'upper-case X-USER', path: '/ident/items/7', headers: { 'X-USER': 'admin' } },
    { name: 'on a route of another method', path: '/ident/slow?ms=1', headers: { 'x-user': 'admin' } },
    {
      name: 'a forwarded claim header (jwt forwardClaims)',
      path: '/ident/bytes?n=1',
      headers: { 'X-Tenant': 'evil' },
    },
    {
      name: 'on a pass-through path of the service',
      path: '/loose/anything/else',
      headers: { 'X-User': 'admin' },
    },
    {
      name: 'on a declared route of the pass-through service',
      path: '/loose/items',
      headers: { 'x-user': 'admin', 'x-api-key': API_KEY },
    },
  ];
  test.each(spoofs)('stripped: $name', async (s) => {
    const seen = await forwarded(s.path, s.headers);
    expect(seen['x-tenant']).toBeUndefined();
    if (s.path === '/loose/items') expect(seen['x-user']).toBe('ci-robot');
    else expect(seen['x-user']).toBeUndefined();
  });

  test('the authenticated route forwards the verified subject, never the client copy', async () => {
    const seen = await forwarded('/ident/items', { 'x-api-key': API_KEY, 'X-User': 'admin' });
    expect(seen['x-user']).toBe('ci-robot');
  });

  test('a service whose policies forward no identity passes the header through unchanged', async () => {
    const seen = await forwarded('/other/items/7', { 'X-User': 'admin' });
    expect(seen['x-user']).toBe('admin');
  });
});
