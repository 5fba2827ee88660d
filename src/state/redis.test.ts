import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  startRedis,
  startRedisCluster,
  startRedisSentinel,
  type TestRedis,
} from '../../test/helpers/redis.ts';
import { createStore } from './create-store.ts';
import { createRedisStore, KEY_PREFIX, type RedisStore, StoreUnavailableError } from './redis.ts';
import type { Store } from './store.ts';

const logger = pino({ level: 'silent' });

let redis: TestRedis;
/** A plain client to look at what the store wrote. */
let raw: Redis;
const stores: Store[] = [];

async function openStore(
  url = redis.url,
  commandTimeoutMs?: number,
  batchHoldMs?: number,
): Promise<RedisStore> {
  const store = createRedisStore({ url, commandTimeoutMs, batchHoldMs }, logger);
  stores.push(store);
  await store.ready();
  return store;
}

beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url, { lazyConnect: true });
  await raw.connect();
});

afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  raw?.disconnect();
  await redis?.stop();
});

describe('redis store', () => {
  it('two stores (two gateway instances) admit exactly `limit` of 4x concurrent hits', async () => {
    const a = await openStore();
    const b = await openStore();
    const spec = { limit: 25, windowMs: 60_000 };
    const all = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).hit('exact', spec)));
    expect(all.filter((d) => d.allowed)).toHaveLength(25);
    const remaining = all.filter((d) => d.allowed).map((d) => d.remaining);
    expect(remaining.sort((x, y) => x - y)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    const denied = all.find((d) => !d.allowed);
    expect(denied?.retryAfterMs).toBeGreaterThan(2_000);
    expect(denied?.retryAfterMs).toBeLessThanOrEqual(2_400);
  });

  it('decides the hits of one event-loop turn in one script per 128 keys, exactly as one script per hit would', async () => {
    const store = await openStore();
    await store.hit('warm', { limit: 1, windowMs: 1_000 });
    await raw.call('CONFIG', 'RESETSTAT');
    const spec = { limit: 50, windowMs: 60_000 };
    // 300 hits over 3 counters in one turn: 3 scripts, each key named many times in each.
    const all = await Promise.all(Array.from({ length: 300 }, (_, i) => store.hit(`turn-${i % 3}`, spec)));
    const stats = (await raw.info('commandstats')) as string;
    const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    expect(calls('evalsha') + calls('eval')).toBe(3);
    for (let k = 0; k < 3; k++) {
      const mine = all.filter((_, i) => i % 3 === k);
      // In request order: the first 50 admitted with 49..0 left, the other 50 refused.
      expect(mine.map((d) => d.allowed)).toEqual(Array.from({ length: 100 }, (_, i) => i < 50));
      expect(mine.slice(0, 50).map((d) => d.remaining)).toEqual(Array.from({ length: 50 }, (_, i) => 49 - i));
      expect(mine.every((d) => d.limit === 50)).toBe(true);
    }
  });

  it('while a script is in flight, decisions asked for in later turns wait (batchHoldMs at most) and go as one script', async () => {
    const spec = { limit: 8, windowMs: 60_000 };
    // Ten hits, one per event-loop turn, while Redis holds the first script until a pause ends.
    const scripts = async (store: RedisStore, key: string) => {
      await store.hit('warm', { limit: 1, windowMs: 1_000 });
      await raw.call('CONFIG', 'RESETSTAT');
      await raw.call('CLIENT', 'PAUSE', '300', 'ALL');
      const all = [store.hit(key, spec)];
      for (let i = 0; i < 10; i++) {
        await new Promise((resolve) => setImmediate(resolve));
        all.push(store.hit(key, spec));
      }
      const decisions = await Promise.all(all);
      // Still decided one by one, in order: 8 admitted (7..0 left), 3 refused.
      expect(decisions.map((d) => d.allowed)).toEqual(Array.from({ length: 11 }, (_, i) => i < 8));
      expect(decisions.slice(0, 8).map((d) => d.remaining)).toEqual([7, 6, 5, 4, 3, 2, 1, 0]);
      const stats = (await raw.info('commandstats')) as string;
      const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      return calls('evalsha') + calls('eval');
    };
    // Held for as long as the first is in flight: one script for it, one for the ten that waited.
    expect(await scripts(await openStore(redis.url, 5_000, 60_000), 'held-batch')).toBe(2);
    // batchHoldMs 0: nothing waits, a script per turn.
    expect(await scripts(await openStore(redis.url, 5_000, 0), 'unheld')).toBe(11);
  });

  it('a decision waiting behind a script Redis does not answer fails too, and the store recovers', async () => {
    const store = await openStore(redis.url, 100);
    const spec = { limit: 10, windowMs: 60_000 };
    expect((await store.hit('held', spec)).remaining).toBe(9);
    await raw.call('CLIENT', 'PAUSE', '400', 'ALL');
    const first = store.hit('held', spec);
    // Asked for while the first is in flight (unanswered): it waits behind it.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const waiting = store.hit('held', spec);
    const results = await Promise.allSettled([first, waiting]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError);
      expect(((r as PromiseRejectedResult).reason as Error).message).toMatch(/timed out/);
    }
    expect(await raw.ping()).toBe('PONG');
    // Nothing is left in flight: the next decision goes out and is answered. The first script ran
    // once the pause ended; the waiting one too if it was written before its own deadline passed.
    const after = await store.hit('held', spec);
    expect(after.allowed).toBe(true);
    expect([6, 7]).toContain(after.remaining);
  });

  it('stores one versioned key per counter that expires when the counter has replenished', async () => {
    const store = await openStore();
    const first = await store.hit('route-1:abc', { limit: 10, windowMs: 10_000 });
    expect(first).toMatchObject({ allowed: true, limit: 10, remaining: 9, resetMs: 1_000, retryAfterMs: 0 });
    expect(KEY_PREFIX).toBe('pc:v1:');
    const ttl = await raw.pttl('pc:v1:rl:route-1:abc');
    expect(ttl).toBeGreaterThan(900);
    expect(ttl).toBeLessThanOrEqual(1_000);
  });

  it('charges cost and admits the whole burst for a fractional interval', async () => {
    const store = await openStore();
    const spec = { limit: 7, windowMs: 1_000 };
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await store.hit('frac', spec));
    expect(results.filter((d) => d.allowed)).toHaveLength(7);
    expect(await store.hit('cost', { limit: 10, windowMs: 60_000, cost: 4 })).toMatchObject({ remaining: 6 });
    expect(await store.hit('cost', { limit: 10, windowMs: 60_000, cost: 7 })).toMatchObject({
      allowed: false,
    });
  });

  it('keeps working after SCRIPT FLUSH (NOSCRIPT fallback)', async () => {
    const store = await openStore();
    expect((await store.hit('flush', { limit: 5, windowMs: 60_000 })).remaining).toBe(4);
    await raw.script('FLUSH');
    expect((await store.hit('flush', { limit: 5, windowMs: 60_000 })).remaining).toBe(3);
  });

  it('fails a decision after commandTimeoutMs when Redis stops answering, then works again', async () => {
    const store = await openStore(redis.url, 100);
    const spec = { limit: 10, windowMs: 60_000 };
    expect((await store.hit('stall', spec)).remaining).toBe(9);
    // The connection stays up but no command is answered for 400 ms.
    await raw.call('CLIENT', 'PAUSE', '400', 'ALL');
    const started = performance.now();
    const results = await Promise.allSettled([store.hit('stall', spec), store.hit('stall-2', spec)]);
    const elapsed = performance.now() - started;
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError);
      expect(((r as PromiseRejectedResult).reason as Error).message).toMatch(/timed out/);
    }
    expect(elapsed).toBeGreaterThanOrEqual(95);
    expect(elapsed).toBeLessThan(350);
    // Answered once the pause ends (this client is paused too).
    expect(await raw.ping()).toBe('PONG');
    // Once the pause ends, the timed-out decision still ran (queued before this one), as it does
    // with ioredis's own command timeout: 3 of 10 used.
    expect((await store.hit('stall', spec)).remaining).toBe(7);
  });

  it('binds sticky sessions with a ttl', async () => {
    const store = await openStore();
    expect(await store.getSticky('sess')).toBeNull();
    await store.setSticky('sess', 'http://127.0.0.1:4001', 5_000);
    expect(await store.getSticky('sess')).toBe('http://127.0.0.1:4001');
    const ttl = await raw.pttl('pc:v1:sticky:sess');
    expect(ttl).toBeGreaterThan(4_000);
  });

  it('fails fast while Redis is down, reports it in status(), and recovers by itself', async () => {
    // A command timeout far above the bound below: a store that queued the command until it timed
    // out (instead of failing fast) would take the whole 10 s.
    const store = await openStore(redis.url, 10_000);
    const spec = { limit: 100, windowMs: 60_000 };
    expect(await store.hit('outage', spec)).toMatchObject({ allowed: true, remaining: 99 });
    expect(store.status()).toEqual({ kind: 'redis', ok: true });

    await redis.stop('SIGKILL');
    try {
      await vi.waitFor(() => expect(store.status().ok).toBe(false), { timeout: 5_000, interval: 10 });
      const started = performance.now();
      const err = await store.hit('outage', spec).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect((err as StoreUnavailableError).code).toBe('PC_STORE_UNAVAILABLE');
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(store.status().error).toBeTruthy();
    } finally {
      await redis.restart();
    }
    await vi.waitFor(() => expect(store.status()).toEqual({ kind: 'redis', ok: true }), {
      timeout: 10_000,
      interval: 20,
    });
    // The restarted server is empty (no persistence): the counter starts afresh.
    expect(await store.hit('outage', spec)).toMatchObject({ allowed: true, remaining: 99 });
  });
});

describe('createStore', () => {
  it('returns a memory store without Redis settings', async () => {
    const store = await createStore({}, logger);
    expect(store.kind).toBe('memory');
    await store.close();
  });

  it('does not fail startup when Redis is unreachable: status says why', async () => {
    const dead = await startRedis();
    await dead.stop();
    const started = performance.now();
    const store = await createStore({ redis: dead.url, connectTimeoutMs: 500 }, logger);
    stores.push(store);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(store.kind).toBe('redis');
    expect(store.status().ok).toBe(false);
    expect(store.status().error).toMatch(/ECONNREFUSED|connect/);
    await expect(store.hit('x', { limit: 1, windowMs: 1_000 })).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe('redis store topologies', () => {
  it('Redis Cluster: two stores admit exactly `limit` per key, keys spread over the masters', async () => {
    const cluster = await startRedisCluster();
    try {
      const a = createRedisStore({ cluster: { nodes: cluster.nodes } }, logger);
      const b = createRedisStore({ cluster: { nodes: cluster.nodes } }, logger);
      stores.push(a, b);
      await Promise.all([a.ready(), b.ready()]);
      // ready() settles with the first attempt either way; a cluster client is ready once it has
      // the slot map, which can take another round while the nodes finish agreeing.
      await vi.waitFor(
        () => {
          expect(a.status()).toEqual({ kind: 'redis', ok: true });
          expect(b.status()).toEqual({ kind: 'redis', ok: true });
        },
        { timeout: 10_000, interval: 20 },
      );
      const spec = { limit: 5, windowMs: 60_000 };
      // Several keys so that they land in different slots, i.e. on different masters.
      for (const key of ['k1', 'k2', 'k3', 'k4']) {
        const all = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).hit(key, spec)));
        expect(
          all.filter((d) => d.allowed),
          key,
        ).toHaveLength(5);
      }
      const perNode = await Promise.all(
        cluster.nodes.map(async (node) => {
          const client = new Redis(`redis://${node}`);
          try {
            return await client.dbsize();
          } finally {
            client.disconnect();
          }
        }),
      );
      expect(perNode.reduce((x, y) => x + y, 0)).toBe(4);
      expect(perNode.filter((n) => n > 0).length).toBeGreaterThan(1);
      await a.setSticky('s', 'http://u1', 5_000);
      expect(await b.getSticky('s')).toBe('http://u1');
    } finally {
      await cluster.stop();
    }
  });

  it('Sentinel: finds the master through the sentinel and enforces the limit', async () => {
    const sentinel = await startRedisSentinel();
    try {
      const store = createRedisStore(
        { sentinel: { name: sentinel.name, sentinels: [sentinel.sentinel] } },
        logger,
      );
      stores.push(store);
      await store.ready();
      expect(store.status()).toEqual({ kind: 'redis', ok: true });
      const all = await Promise.all(
        Array.from({ length: 12 }, () => store.hit('sentinel', { limit: 3, windowMs: 1_000 })),
      );
      expect(all.filter((d) => d.allowed)).toHaveLength(3);
      const check = new Redis(sentinel.master.url);
      try {
        expect(await check.exists('pc:v1:rl:sentinel')).toBe(1);
      } finally {
        check.disconnect();
      }
    } finally {
      await sentinel.stop();
    }
  });
});
