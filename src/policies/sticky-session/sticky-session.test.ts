import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeEach, describe, expect, test } from 'vitest';
import { policySlice } from '../../../test/helpers/policy.ts';
import { startUpstream, type TestUpstream } from '../../../test/helpers/upstream.ts';
import type { Route, ServiceSettings } from '../../registry/types.ts';
import { createMemoryStore } from '../../state/memory.ts';
import type { Store } from '../../state/store.ts';
import { parseDuration, type StickySessionConfig, stickySessionPolicy } from './sticky-session.ts';

const _logger = pino({ level: 'silent' });
const route = { service: 'shop', operationId: 'op', method: 'GET', specPath: '/x' } as Route;

const open: Array<{ close(): Promise<unknown> }> = [];
afterAll(async () => {
  await Promise.all(open.map((o) => o.close()));
});

/** One gateway instance: Fastify → sticky chain → real forwarder over its own round-robin group. */
async function gateway(
  upstreams: TestUpstream[],
  store: Store,
  config: StickySessionConfig = {},
  extra: Partial<ServiceSettings> = {},
): Promise<FastifyInstance> {
  const slice = await policySlice({
    kind: stickySessionPolicy,
    config,
    upstreams: upstreams.map((u) => u.url),
    settings: {
      basePath: '/shop',
      passiveHealth: { failures: 1, ejectMs: 60_000, panicThreshold: 0, statuses: [], maxEjectMs: 60_000 },
      retries: 1,
      ...extra,
    },
    route,
    store,
    trustProxy: ['127.0.0.1'], // X-Forwarded-Proto: https marks a TLS request
    exposeDecisions: true,
  });
  open.push(slice);
  return slice.app;
}

const upstreamOf = (body: string) => (JSON.parse(body) as { upstream: string }).upstream;
const cookieOf = (setCookie: string | string[] | undefined) => String(setCookie).split(';')[0] as string;

describe('stickySession', () => {
  let a: TestUpstream;
  let b: TestUpstream;
  beforeEach(async () => {
    a = await startUpstream({ name: 'a' });
    b = await startUpstream({ name: 'b' });
    open.push(a, b);
  });

  test('a new session gets an opaque HttpOnly cookie and then always reaches the same upstream', async () => {
    const gw = await gateway([a, b], createMemoryStore());
    const first = await gw.inject({ url: '/shop/x' });
    const setCookie = String(first.headers['set-cookie']);
    expect(setCookie).toMatch(
      /^pc_affinity=[A-Za-z0-9_-]{22}; Path=\/shop; Max-Age=3600; HttpOnly; SameSite=Lax$/,
    );
    expect(setCookie).not.toContain(String(a.port));
    expect(setCookie).not.toContain(String(b.port));
    const home = upstreamOf(first.body);
    for (let i = 0; i < 6; i++) {
      const res = await gw.inject({
        url: '/shop/x',
        headers: { cookie: `theme=dark; ${cookieOf(setCookie)}` },
      });
      expect(upstreamOf(res.body)).toBe(home);
      expect(res.headers['set-cookie']).toBeUndefined();
    }
    // Without affinity the same gateway alternates (round-robin): the stickiness above is the policy's doing.
    const spread = new Set<string>();
    for (let i = 0; i < 4; i++) spread.add(upstreamOf((await gw.inject({ url: '/shop/x' })).body));
    expect(spread).toEqual(new Set(['a', 'b']));
  });

  test('another gateway instance sharing the store sends the session to the same upstream', async () => {
    const store = createMemoryStore();
    const gw1 = await gateway([a, b], store);
    const gw2 = await gateway([a, b], store);
    const first = await gw1.inject({ url: '/shop/x' });
    const home = upstreamOf(first.body);
    const cookie = cookieOf(first.headers['set-cookie']);
    for (let i = 0; i < 4; i++) {
      const res = await gw2.inject({ url: '/shop/x', headers: { cookie } });
      expect(upstreamOf(res.body)).toBe(home);
    }
  });

  test('when the bound upstream fails, the session moves and the cookie is reissued', async () => {
    const gw = await gateway([a, b], createMemoryStore());
    const first = await gw.inject({ url: '/shop/x' });
    const cookie = cookieOf(first.headers['set-cookie']);
    const [home, other] = upstreamOf(first.body) === 'a' ? [a, b] : [b, a];
    await home.close();
    const moved = await gw.inject({ url: '/shop/x', headers: { cookie } });
    expect(moved.statusCode).toBe(200);
    expect(upstreamOf(moved.body)).toBe(other.name);
    expect(cookieOf(moved.headers['set-cookie'])).toBe(cookie);
    const after = await gw.inject({ url: '/shop/x', headers: { cookie } });
    expect(upstreamOf(after.body)).toBe(other.name);
    expect(after.headers['set-cookie']).toBeUndefined();
  });

  test('a forged or malformed cookie is ignored and a fresh session issued', async () => {
    const gw = await gateway([a, b], createMemoryStore());
    const res = await gw.inject({ url: '/shop/x', headers: { cookie: `pc_affinity=${a.url}` } });
    expect(res.statusCode).toBe(200);
    expect(String(res.headers['set-cookie'])).toMatch(/^pc_affinity=[A-Za-z0-9_-]{22};/);
  });

  test('Secure on TLS requests; SameSite=None always Secure; custom name, ttl and path', async () => {
    const gw = await gateway([a, b], createMemoryStore(), {
      cookie: 'aff',
      ttl: '15m',
      sameSite: 'None',
      path: '/',
    });
    const res = await gw.inject({ url: '/shop/x' });
    expect(res.headers['set-cookie']).toMatch(
      /^aff=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=None; Secure$/,
    );
    const gw2 = await gateway([a, b], createMemoryStore());
    const tls = await gw2.inject({ url: '/shop/x', headers: { 'x-forwarded-proto': 'https' } });
    expect(tls.headers['set-cookie']).toMatch(/; Secure$/);
  });

  const failing: Store = {
    ...createMemoryStore(),
    getSticky: () => Promise.reject(new Error('redis down')),
  };
  test('store down, onStoreError balance (default): the request is still served', async () => {
    const gw = await gateway([a, b], failing);
    const res = await gw.inject({
      url: '/shop/x',
      headers: { cookie: 'pc_affinity=AAAAAAAAAAAAAAAAAAAAAA' },
    });
    expect(res.statusCode).toBe(200);
  });
  test('store down, onStoreError deny: 503 store-unavailable', async () => {
    const gw = await gateway([a, b], failing, { onStoreError: 'deny' });
    const res = await gw.inject({
      url: '/shop/x',
      headers: { cookie: 'pc_affinity=AAAAAAAAAAAAAAAAAAAAAA' },
    });
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('PC_STORE_UNAVAILABLE');
  });

  test('dry-run sets no cookie, writes nothing and records what it would bind', async () => {
    const store = createMemoryStore();
    const gw = await gateway([a, b], store, { mode: 'dry-run' });
    const res = await gw.inject({ url: '/shop/x' });
    expect(res.headers['set-cookie']).toBeUndefined();
    expect(store.size().sticky).toBe(0);
    expect(JSON.parse(String(res.headers['x-test-decisions']))).toEqual([
      { policy: 'stickySession', outcome: 'allow', reason: 'dry-run', detail: { action: 'would-bind' } },
    ]);
  });

  test('parseDuration', () => {
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(() => parseDuration('1 hour')).toThrow();
  });
});
