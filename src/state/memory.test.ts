import { describe, expect, it } from 'vitest';
import { createMemoryStore } from './memory.ts';

/** A clock the test moves by hand. */
function fakeClock(start = 1_700_000_000_000) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

describe('memory store rate limits (GCRA)', () => {
  it('admits exactly `limit` requests of a burst, then denies with Retry-After of one interval', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now });
    const spec = { limit: 10, windowMs: 60_000 };
    const decisions = [];
    for (let i = 0; i < 15; i++) decisions.push(await store.hit('k', spec));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(10);
    expect(decisions.slice(0, 10).map((d) => d.remaining)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    expect(decisions[0]).toMatchObject({ limit: 10, resetMs: 6_000, retryAfterMs: 0 });
    expect(decisions[9]).toMatchObject({ resetMs: 60_000 });
    // The first slot frees after one emission interval (60 s / 10).
    expect(decisions[10]).toEqual({
      allowed: false,
      limit: 10,
      remaining: 0,
      resetMs: 60_000,
      retryAfterMs: 6_000,
    });
  });

  it('replenishes one request per interval and fully after the window', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now });
    const spec = { limit: 2, windowMs: 1_000 };
    await store.hit('k', spec);
    await store.hit('k', spec);
    expect((await store.hit('k', spec)).allowed).toBe(false);
    clock.advance(499);
    const early = await store.hit('k', spec);
    expect(early).toMatchObject({ allowed: false, retryAfterMs: 1 });
    clock.advance(1);
    expect(await store.hit('k', spec)).toMatchObject({ allowed: true, remaining: 0 });
    clock.advance(1_000);
    expect(await store.hit('k', spec)).toMatchObject({ allowed: true, remaining: 1, resetMs: 500 });
  });

  it('keeps keys apart', async () => {
    const store = createMemoryStore({ now: fakeClock().now });
    const spec = { limit: 1, windowMs: 1_000 };
    expect((await store.hit('a', spec)).allowed).toBe(true);
    expect((await store.hit('b', spec)).allowed).toBe(true);
    expect((await store.hit('a', spec)).allowed).toBe(false);
  });

  it('charges `cost` units and denies a request that does not fit without charging it', async () => {
    const store = createMemoryStore({ now: fakeClock().now });
    const spec = { limit: 10, windowMs: 10_000, cost: 4 };
    expect(await store.hit('k', spec)).toMatchObject({ allowed: true, remaining: 6 });
    expect(await store.hit('k', spec)).toMatchObject({ allowed: true, remaining: 2 });
    expect(await store.hit('k', spec)).toMatchObject({ allowed: false, retryAfterMs: 2_000 });
    expect(await store.hit('k', { ...spec, cost: 2 })).toMatchObject({ allowed: true, remaining: 0 });
  });

  it('admits the whole burst when window / limit is not a whole number (float rounding)', async () => {
    const store = createMemoryStore({ now: fakeClock().now });
    for (const limit of [3, 7, 9, 11, 13, 49, 97]) {
      const spec = { limit, windowMs: 1_000 };
      let allowed = 0;
      for (let i = 0; i < limit * 2; i++) if ((await store.hit(`k${limit}`, spec)).allowed) allowed++;
      expect(allowed, `limit ${limit}`).toBe(limit);
    }
  });
});

describe('memory store bounds', () => {
  it('reclaims counters once they have fully replenished, a batch per operation', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now, sweepIntervalMs: 1_000 });
    for (let i = 0; i < 100; i++) await store.hit(`client-${i}`, { limit: 5, windowMs: 500 });
    expect(store.size().counters).toBe(100);
    clock.advance(1_000);
    // A pass examines 32 entries per operation: four operations see all 100 expired keys.
    for (let i = 0; i < 4; i++) await store.hit('late', { limit: 5, windowMs: 500 });
    expect(store.size().counters).toBe(1);
  });

  it('never holds more than maxKeys, dropping the least recently used key (a denied client counts as used)', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now, maxKeys: 3 });
    const spec = { limit: 1, windowMs: 60_000 };
    for (const k of ['a', 'b', 'c']) await store.hit(k, spec);
    await store.hit('a', spec); // denied, but used: `b` is now the least recently used
    await store.hit('d', spec);
    expect(store.size().counters).toBe(3);
    // `b` was dropped, so it starts afresh; `a` was kept and is still limited.
    expect((await store.hit('a', spec)).allowed).toBe(false);
    expect((await store.hit('b', spec)).allowed).toBe(true);
  });

  it('evicts the least recently used key when full, across 50000 inserts into a full map', async () => {
    // The bound is a count (checked here) and eviction is LRU order; its cost per insert is O(1)
    // by construction (a Map in recency order, the oldest first) and measured by no clock here.
    const store = createMemoryStore({ now: fakeClock().now, maxKeys: 50_000 });
    const spec = { limit: 10, windowMs: 3_600_000 };
    for (let i = 0; i < 50_000; i++) await store.hit(`old-${i}`, spec);
    // Touch old-0: it becomes the most recently used and must outlive every other old key.
    expect((await store.hit('old-0', spec)).remaining).toBe(8);
    for (let i = 0; i < 49_999; i++) await store.hit(`new-${i}`, spec);
    expect(store.size().counters).toBe(50_000);
    // old-0 survived with its count (two hits, a third now); old-1 was evicted and starts over.
    expect((await store.hit('old-0', spec)).remaining).toBe(7);
    expect((await store.hit('old-1', spec)).remaining).toBe(9);
  });

  it('sticky sessions expire after their ttl and are bounded too', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now, maxKeys: 2 });
    await store.setSticky('s1', 'http://a', 1_000);
    expect(await store.getSticky('s1')).toBe('http://a');
    clock.advance(999);
    await store.setSticky('s1', 'http://b', 1_000); // refresh
    clock.advance(999);
    expect(await store.getSticky('s1')).toBe('http://b');
    clock.advance(1);
    expect(await store.getSticky('s1')).toBeNull();
    for (const k of ['x', 'y', 'z']) await store.setSticky(k, 'http://a', 10_000);
    expect(store.size().sticky).toBe(2);
    expect(await store.getSticky('x')).toBeNull();
    // A session read is a use: `y` stays, `z` (least recently used) makes room.
    expect(await store.getSticky('y')).toBe('http://a');
    await store.setSticky('w', 'http://a', 10_000);
    expect(await store.getSticky('z')).toBeNull();
    expect(await store.getSticky('y')).toBe('http://a');
    expect(store.status()).toEqual({ kind: 'memory', ok: true });
  });
});
