/**
 * Issue 3, sticky sessions across instances: two gateways (each its own process state, as two
 * instances would be) share one real redis-server through `state.redis`. A session cookie sends a
 * client to the same upstream through either instance; when that upstream dies, the session moves,
 * the cookie is reissued, and the new binding holds on both instances. Redis holds the binding
 * under the versioned key prefix, never the cookie's meaning in the cookie itself.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { KEY_PREFIX } from '../../src/state/redis.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const COOKIE = 'pc_affinity';
const TTL_MS = 3_600_000;

describe('stickySession across two gateway instances sharing Redis', () => {
  let redis: TestRedis;
  let client: Redis;
  const upstreams: TestUpstream[] = [];
  const gateways: TestGateway[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    for (const name of ['a', 'b', 'c']) upstreams.push(await startUpstream({ name }));
    const doc = spec({ upstreams: upstreams.map((u) => u.url), operations: { 'GET /items': 'listItems' } });
    const policies = {
      sticky: [{ match: { service: 'svc' }, stickySession: { cookie: COOKIE, ttl: '1h' } }],
    };
    for (let i = 0; i < 2; i++) {
      gateways.push(await startGateway({ svc: doc }, { state: { redis: redis.url } }, { policies }));
    }
  });
  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all(upstreams.map((u) => u.close()));
    client?.disconnect();
    await redis?.stop();
  });

  /** GET through instance `i` with an optional cookie; what answered and the Set-Cookie, if any. */
  async function call(i: number, cookie?: string) {
    const res = await fetch(`${(gateways[i] as TestGateway).url}/svc/items`, {
      headers: cookie ? { cookie } : {},
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    return { upstream: res.headers.get('x-upstream'), setCookie: res.headers.get('set-cookie') };
  }

  const stickyKeys = () => client.keys(`${KEY_PREFIX}sticky:*`);

  test('both instances use the Redis store', () => {
    for (const g of gateways) expect(g.gateway.store.kind).toBe('redis');
  });

  test('a session sticks to one upstream through either instance; it moves and is reissued when that upstream dies', async () => {
    const first = await call(0);
    expect(first.setCookie).toMatch(
      new RegExp(`^${COOKIE}=[A-Za-z0-9_-]{22}; Path=/svc; Max-Age=3600; HttpOnly; SameSite=Lax$`),
    );
    const cookie = (first.setCookie as string).split(';')[0] as string;
    const id = cookie.slice(COOKIE.length + 1);
    const home = first.upstream as string;
    const homeUpstream = upstreams.find((u) => u.name === home) as TestUpstream;

    // Redis holds <prefix>sticky:<service>:<session id> → the upstream's id; the cookie only the opaque id.
    const key = `${KEY_PREFIX}sticky:svc:${id}`;
    expect(await stickyKeys()).toContain(key);
    expect(await client.get(key)).toBe(homeUpstream.url);
    const pttl = await client.pttl(key);
    expect(pttl).toBeGreaterThan(TTL_MS - 60_000);
    expect(pttl).toBeLessThanOrEqual(TTL_MS);
    expect(cookie).not.toContain(String(homeUpstream.port));

    // Round-robin alone would spread these over all three upstreams.
    for (let n = 0; n < 8; n++) {
      const r = await call(n % 2, cookie);
      expect(r.upstream).toBe(home);
      expect(r.setCookie).toBeNull();
    }
    // A client without the cookie is balanced as usual (and gets a session of its own).
    const others = new Set<string | null>();
    for (let n = 0; n < 6; n++) others.add((await call(n % 2)).upstream);
    expect(others.size).toBeGreaterThan(1);

    await homeUpstream.close();
    // Instance 1 tries the bound upstream, fails, retries elsewhere and rebinds the session.
    const moved = await call(1, cookie);
    expect(moved.upstream).not.toBe(home);
    expect(moved.setCookie).toMatch(new RegExp(`^${cookie}; Path=/svc; Max-Age=3600;`));
    const newHome = upstreams.find((u) => u.name === moved.upstream) as TestUpstream;
    expect(await client.get(key)).toBe(newHome.url);

    // Both instances now send the session to the new upstream, without reissuing the cookie again;
    // instance 0 never saw the failure itself: it follows the binding in Redis.
    const seenBefore = newHome.seen.length;
    for (let n = 0; n < 6; n++) {
      const r = await call(n % 2, cookie);
      expect(r.upstream).toBe(moved.upstream);
      expect(r.setCookie).toBeNull();
    }
    expect(newHome.seen.length).toBe(seenBefore + 6);
  });
});

describe('stickySession when active health checks mark the bound upstream down', () => {
  let redis: TestRedis;
  let client: Redis;
  const upstreams: TestUpstream[] = [];
  const gateways: TestGateway[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    for (const name of ['a', 'b', 'c']) upstreams.push(await startUpstream({ name }));
    const doc = spec({
      upstreams: upstreams.map((u) => u.url),
      operations: { 'GET /items': 'listItems' },
      extra: { healthCheck: { path: '/health', intervalMs: 50, unhealthyAfter: 1, healthyAfter: 1 } },
    });
    const policies = { sticky: [{ match: { service: 'svc' }, stickySession: {} }] };
    for (let i = 0; i < 2; i++) {
      gateways.push(await startGateway({ svc: doc }, { state: { redis: redis.url } }, { policies }));
    }
  });
  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all(upstreams.map((u) => u.close()));
    client?.disconnect();
    await redis?.stop();
  });

  const eligibleOn = (g: TestGateway) => {
    const entry = [...(g.gateway.runtime.snapshot?.entries.values() ?? [])][0];
    return (entry?.target?.group.eligible() ?? []).map((u) => u.url);
  };

  test('the session moves without a single request reaching the unhealthy upstream, then holds on both instances', async () => {
    const call = async (i: number, cookie?: string) => {
      const res = await fetch(`${(gateways[i] as TestGateway).url}/svc/items`, {
        headers: cookie ? { cookie } : {},
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      return { upstream: res.headers.get('x-upstream'), setCookie: res.headers.get('set-cookie') };
    };
    const first = await call(0);
    const cookie = (first.setCookie as string).split(';')[0] as string;
    const key = `${KEY_PREFIX}sticky:svc:${cookie.slice(COOKIE.length + 1)}`;
    const home = upstreams.find((u) => u.name === first.upstream) as TestUpstream;
    expect((await call(1, cookie)).upstream).toBe(home.name);

    home.setHealth(503);
    await vi.waitFor(
      () => {
        for (const g of gateways) expect(eligibleOn(g)).not.toContain(home.url);
      },
      { timeout: 5_000, interval: 20 },
    );
    const servedBefore = home.seen.length;
    const moved = await call(1, cookie);
    expect(moved.upstream).not.toBe(home.name);
    expect(moved.setCookie).toMatch(new RegExp(`^${cookie}; Path=/svc;`));
    const newHome = upstreams.find((u) => u.name === moved.upstream) as TestUpstream;
    expect(await client.get(key)).toBe(newHome.url);
    for (let n = 0; n < 4; n++) {
      const r = await call(n % 2, cookie);
      expect(r.upstream).toBe(newHome.name);
      expect(r.setCookie).toBeNull();
    }
    expect(home.seen.length).toBe(servedBefore);

    // Healthy again: the session stays where it moved (no flapping back).
    home.setHealth(200);
    await vi.waitFor(
      () => {
        for (const g of gateways) expect(eligibleOn(g)).toContain(home.url);
      },
      { timeout: 5_000, interval: 20 },
    );
    for (let n = 0; n < 2; n++) expect((await call(n % 2, cookie)).upstream).toBe(newHome.name);
  });
});
