import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const NAMES = ['a', 'b', 'c'] as const;

/** GET `url` through the gateway; the name of the upstream that answered (every answer must be 200). */
async function hit(url: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await request(url, { headers });
  await res.body.dump();
  expect(res.statusCode, url).toBe(200);
  return String(res.headers['x-upstream']);
}

/** Run `total` calls of `fn(i)` with `concurrency` in flight at any time; results in call order. */
async function load<T>(total: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(total);
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

function countBy(names: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = Object.fromEntries(NAMES.map((n) => [n, 0]));
  for (const n of names) counts[n] = (counts[n] ?? 0) + 1;
  return counts;
}

/** 300 distinct public client addresses, deterministic. */
function clientIps(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `198.${18 + (i % 2)}.${Math.floor(i / 250)}.${(i % 250) + 1}`);
}

describe('load balancing over three real upstreams', () => {
  let fast: TestUpstream[] = [];
  /** a is slow (200 ms per answer), b and c answer at once. */
  let mixed: TestUpstream[] = [];

  beforeAll(async () => {
    fast = await Promise.all(NAMES.map((name) => startUpstream({ name })));
    mixed = await Promise.all(NAMES.map((name) => startUpstream({ name, delayMs: name === 'a' ? 200 : 0 })));
  });
  afterAll(async () => {
    await Promise.all([...fast, ...mixed].map((u) => u.close()));
  });

  /** Run `fn` against a gateway whose one service `svc` balances over `upstreams` (weight 1 unless given). */
  async function withGateway<T>(
    upstreams: TestUpstream[],
    extra: Record<string, unknown>,
    fn: (gw: TestGateway) => Promise<T>,
    opts: { weights?: number[]; config?: Record<string, unknown> } = {},
  ): Promise<T> {
    const list = upstreams.map((u, i) => ({ url: u.url, weight: opts.weights?.[i] ?? 1 }));
    const gw = await startGateway({ svc: spec({ upstreams: list, extra }) }, opts.config);
    try {
      return await fn(gw);
    } finally {
      await gw.close();
    }
  }

  it('round-robin splits 300 requests into exact thirds (weights ignored)', async () => {
    const names = await withGateway(
      fast,
      { loadBalancing: 'round-robin' },
      (gw) => load(300, 8, () => hit(`${gw.url}/svc/items`)),
      { weights: [3, 1, 1] },
    );
    expect(countBy(names)).toEqual({ a: 100, b: 100, c: 100 });
  });

  it('weighted 3:1:1 sends 60/20/20 % of 300 requests', async () => {
    const names = await withGateway(
      fast,
      { loadBalancing: 'weighted' },
      (gw) => load(300, 8, () => hit(`${gw.url}/svc/items`)),
      { weights: [3, 1, 1] },
    );
    const counts = countBy(names);
    expect(Math.abs(counts.a! / 300 - 0.6), `a got ${counts.a}`).toBeLessThanOrEqual(0.02);
    expect(Math.abs(counts.b! / 300 - 0.2), `b got ${counts.b}`).toBeLessThanOrEqual(0.02);
    expect(Math.abs(counts.c! / 300 - 0.2), `c got ${counts.c}`).toBeLessThanOrEqual(0.02);
  });

  // Six clients in a loop; a takes 200 ms per answer, b and c answer at once.
  const slowCases = [
    { algorithm: 'round-robin', check: (share: number) => expect(share).toBeCloseTo(1 / 3, 5) },
    { algorithm: 'least-connections', check: (share: number) => expect(share).toBeLessThan(0.12) },
    { algorithm: 'random-two', check: (share: number) => expect(share).toBeLessThan(0.2) },
  ] as const;
  it.each(slowCases)(
    '$algorithm under concurrent load: share of the slow upstream',
    async ({ algorithm, check }) => {
      const total = 120;
      const names = await withGateway(mixed, { loadBalancing: algorithm }, (gw) =>
        load(total, 6, () => hit(`${gw.url}/svc/items`)),
      );
      const counts = countBy(names);
      check(counts.a! / total);
      // The fast upstreams took the rest between them.
      expect(counts.b! + counts.c!).toBe(total - counts.a!);
    },
  );

  it('ip-hash keeps each client (X-Forwarded-For from a trusted proxy) on one upstream; removing one upstream moves only its clients', async () => {
    const ips = clientIps(300);
    await withGateway(
      fast,
      { loadBalancing: 'ip-hash' },
      async (gw) => {
        const route = (ip: string) => hit(`${gw.url}/svc/items`, { 'x-forwarded-for': ip });
        // Three rounds per client: every round must agree with the first.
        const rounds = [];
        for (let r = 0; r < 3; r++) rounds.push(await load(ips.length, 10, (i) => route(ips[i]!)));
        const before = rounds[0]!;
        expect(rounds[1]).toEqual(before);
        expect(rounds[2]).toEqual(before);
        const counts = countBy(before);
        for (const n of NAMES) expect(counts[n], `${n} clients`).toBeGreaterThan(60);

        // Drop b from the spec: a new group, new ring without b.
        const [a, , c] = fast as [TestUpstream, TestUpstream, TestUpstream];
        await gw.writeSpec(
          'svc',
          spec({
            upstreams: [a.url, c.url],
            extra: { loadBalancing: 'ip-hash' },
          }),
        );
        const result = await gw.gateway.runtime.reload();
        expect(result.ok).toBe(true);
        const after = await load(ips.length, 10, (i) => route(ips[i]!));
        let moved = 0;
        for (let i = 0; i < ips.length; i++) {
          if (after[i] === before[i]) continue;
          moved++;
          expect(before[i], `${ips[i]} moved off an upstream that is still there`).toBe('b');
        }
        expect(after).not.toContain('b');
        expect(moved).toBe(counts.b);
        expect(moved / ips.length).toBeGreaterThan(0.2);
        expect(moved / ips.length).toBeLessThan(0.47);
      },
      { config: { trustProxy: ['127.0.0.0/8'] } },
    );
  });
});
