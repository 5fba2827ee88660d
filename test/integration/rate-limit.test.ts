/**
 * Issue 3 acceptance, through the real gateway: two `portcullis start` processes share one real
 * redis-server and enforce one global limit. Of 4N concurrent requests spread over both, exactly
 * N are admitted and the rest get 429 problem+json with Retry-After and the IETF RateLimit /
 * RateLimit-Policy fields. Killing Redis gives each route its configured `onStoreError` (three
 * routes: allow, deny, local), /readyz reports the store down then up, and once Redis is back
 * the limit is global again without any restart. Redis holds only versioned, hashed keys.
 *
 * Client addresses come from X-Forwarded-For (the test is a trusted proxy), so every burst uses
 * a fresh `key: ip` counter.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';

/** The limit under test, per minute and client address. */
const N = 20;
const WINDOW_MS = 60_000;
const MODES = ['allow', 'deny', 'local'] as const;
type Mode = (typeof MODES)[number];

/** One mock route per onStoreError choice, each with its own counter (scope route). */
const SPEC = {
  openapi: '3.1.0',
  info: { title: 'Svc', version: '1.0.0' },
  'x-portcullis': { basePath: '/svc', mock: true },
  paths: Object.fromEntries(
    MODES.map((mode) => [
      `/${mode}`,
      {
        get: {
          operationId: mode,
          responses: {
            '200': { description: 'ok', content: { 'application/json': { example: { mode } } } },
          },
        },
      },
    ]),
  ),
};

const RULES = MODES.map((mode) => ({
  match: { service: 'svc', operations: [mode] },
  rateLimit: { limit: N, window: '1m', key: 'ip', onStoreError: mode },
}));

/** One answer, body read (so no socket is left half-consumed). */
interface Answer {
  gateway: number;
  status: number;
  headers: Headers;
  body: string;
}

let redis: TestRedis;
let gateways: CliGateway[] = [];
/** Client addresses handed out so far: each burst gets a fresh one, so a fresh counter. */
let nextClient = 1;

beforeAll(async () => {
  redis = await startRedis();
  const start = () =>
    startCliGateway({
      config: { state: { redis: redis.url }, trustProxy: ['127.0.0.1'] },
      specs: { svc: SPEC },
      policies: { 'rate-limit': RULES },
    });
  gateways = await Promise.all([start(), start()]);
}, 30_000);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop().catch(() => undefined)));
  await redis?.stop();
});

function freshClient(): string {
  const n = nextClient++;
  return `198.51.${100 + (n >> 8)}.${n & 255}`;
}

/** 4N concurrent GETs from one client address, alternating between the two gateways. */
async function burst(mode: Mode, ip: string): Promise<Answer[]> {
  return Promise.all(
    Array.from({ length: 4 * N }, async (_, i) => {
      const gateway = i % 2;
      const res = await fetch(`${gateways[gateway]?.url}/svc/${mode}`, {
        headers: { 'x-forwarded-for': ip },
        signal: AbortSignal.timeout(10_000),
      });
      return { gateway, status: res.status, headers: res.headers, body: await res.text() };
    }),
  );
}

/** How many answers had each status, e.g. `{ 200: 20, 429: 60 }`. */
function countStatuses(answers: Answer[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const a of answers) counts[a.status] = (counts[a.status] ?? 0) + 1;
  return counts;
}

/** `store` of each gateway's /readyz (admin port), with the readiness status code. */
async function readiness(): Promise<Array<{ status: number; ready: boolean; storeOk: boolean }>> {
  return Promise.all(
    gateways.map(async (g) => {
      const res = await fetch(`${g.admin}/readyz`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.json()) as { ready: boolean; store: { kind: string; ok: boolean } };
      expect(body.store.kind).toBe('redis');
      return { status: res.status, ready: body.ready, storeOk: body.store.ok };
    }),
  );
}

/** Every key Redis holds, with its remaining TTL (ms) and value. */
async function redisContents(): Promise<Array<{ key: string; pttl: number; value: string | null }>> {
  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await client.connect();
    const keys = (await client.keys('*')).sort();
    // Awaited here: the client is disconnected in finally.
    return await Promise.all(
      keys.map(async (key) => ({ key, pttl: await client.pttl(key), value: await client.get(key) })),
    );
  } finally {
    client.disconnect();
  }
}

/** The Redis key the gateway must use for a client of a route: versioned prefix, hashed address. */
function expectedKey(mode: Mode, ip: string): string {
  const hash = createHash('sha256').update(`ip:${ip}`).digest('base64url').slice(0, 22);
  return `pc:v1:rl:svc/${mode}:${N}/${WINDOW_MS}:ip:${hash}`;
}

/** Exactly N admitted over both processes, 3N refused with the full 429 contract. */
function expectGlobalLimit(answers: Answer[], label: string): void {
  expect(countStatuses(answers), label).toEqual({ 200: N, 429: 3 * N });
  // Both processes served and refused: the counter is shared, not split.
  for (const g of [0, 1])
    expect(
      answers.some((a) => a.gateway === g && a.status === 429),
      label,
    ).toBe(true);
  const ok = answers.filter((a) => a.status === 200);
  for (const a of ok) {
    expect(a.headers.get('ratelimit-policy'), label).toBe(`"default";q=${N};w=60`);
    expect(a.headers.get('ratelimit'), label).toMatch(/^"default";r=\d+;t=\d+$/);
  }
  // One counter decided every request in turn: the admitted ones saw N-1, N-2, …, 0 remaining.
  const remaining = ok.map((a) => Number(/;r=(\d+);/.exec(a.headers.get('ratelimit') ?? '')?.[1]));
  expect(
    remaining.sort((x, y) => x - y),
    label,
  ).toEqual(Array.from({ length: N }, (_, i) => i));
  for (const a of answers.filter((x) => x.status === 429)) {
    expect(a.headers.get('content-type'), label).toMatch(/^application\/problem\+json/);
    const retryAfter = Number(a.headers.get('retry-after'));
    expect(retryAfter, label).toBeGreaterThan(0);
    expect(retryAfter, label).toBeLessThanOrEqual(WINDOW_MS / 1000);
    expect(a.headers.get('ratelimit-policy'), label).toBe(`"default";q=${N};w=60`);
    expect(a.headers.get('ratelimit'), label).toMatch(/^"default";r=0;t=\d+$/);
    expect(JSON.parse(a.body), label).toMatchObject({
      status: 429,
      code: 'PC_RATE_LIMITED',
      type: expect.stringContaining('rate-limited'),
    });
  }
}

describe('rate limit across two portcullis processes sharing one redis-server', () => {
  it('admits exactly N of 4N concurrent requests, every time, and stores only versioned hashed keys', async () => {
    expect(await readiness()).toEqual([
      { status: 200, ready: true, storeOk: true },
      { status: 200, ready: true, storeOk: true },
    ]);
    const used: Array<[Mode, string]> = [];
    for (let round = 0; round < 3; round++) {
      for (const mode of MODES) {
        const ip = freshClient();
        used.push([mode, ip]);
        expectGlobalLimit(await burst(mode, ip), `round ${round} ${mode} ${ip}`);
      }
    }

    const contents = await redisContents();
    expect(contents.map((c) => c.key)).toEqual(used.map(([mode, ip]) => expectedKey(mode, ip)).sort());
    const nowUs = Date.now() * 1000;
    for (const { key, pttl, value } of contents) {
      for (const [, ip] of used) expect(key).not.toContain(ip);
      // The GCRA TAT in µs: N admitted requests pushed it a whole window ahead, and it expires then.
      expect(pttl).toBeGreaterThan(WINDOW_MS - 10_000);
      expect(pttl).toBeLessThanOrEqual(WINDOW_MS);
      expect(Number(value)).toBeGreaterThan(nowUs + (WINDOW_MS - 10_000) * 1000);
    }
  });

  it('follows onStoreError while Redis is down (allow, deny, local), and enforces globally again once it is back', async () => {
    await redis.stop('SIGKILL');
    try {
      // A down store degrades the gateway but does not make it unready.
      await vi.waitFor(
        async () =>
          expect(await readiness()).toEqual([
            { status: 200, ready: true, storeOk: false },
            { status: 200, ready: true, storeOk: false },
          ]),
        { timeout: 5_000, interval: 50 },
      );

      const allowed = await burst('allow', freshClient());
      expect(countStatuses(allowed)).toEqual({ 200: 4 * N });
      // Nothing was counted, so no RateLimit fields are claimed.
      for (const a of allowed) expect(a.headers.get('ratelimit')).toBeNull();

      const denied = await burst('deny', freshClient());
      expect(countStatuses(denied)).toEqual({ 503: 4 * N });
      for (const a of denied) {
        expect(a.headers.get('content-type')).toMatch(/^application\/problem\+json/);
        expect(a.headers.get('retry-after')).toBe('1');
        expect(JSON.parse(a.body)).toMatchObject({ status: 503, code: 'PC_STORE_UNAVAILABLE' });
      }

      // local: each process enforces N on its own, so 2N in all.
      const local = await burst('local', freshClient());
      expect(countStatuses(local)).toEqual({ 200: 2 * N, 429: 2 * N });
      for (const g of [0, 1])
        expect(local.filter((a) => a.gateway === g && a.status === 200)).toHaveLength(N);
      for (const a of local.filter((x) => x.status === 429))
        expect(a.headers.get('ratelimit')).toMatch(/^"default";r=0;t=\d+$/);
    } finally {
      await redis.restart();
    }

    // No restart of the gateways: each store reconnects by itself (backoff at most 2 s).
    await vi.waitFor(
      async () =>
        expect(await readiness()).toEqual([
          { status: 200, ready: true, storeOk: true },
          { status: 200, ready: true, storeOk: true },
        ]),
      { timeout: 10_000, interval: 50 },
    );
    for (const g of gateways) expect(g.logs.some((l) => l.msg === 'redis store recovered')).toBe(true);

    // The restarted Redis is empty; every route shares one counter across both processes again.
    const used: Array<[Mode, string]> = [];
    for (const mode of MODES) {
      const ip = freshClient();
      used.push([mode, ip]);
      expectGlobalLimit(await burst(mode, ip), `after recovery ${mode}`);
    }
    const keys = (await redisContents()).map((c) => c.key);
    expect(keys).toEqual(used.map(([mode, ip]) => expectedKey(mode, ip)).sort());
  });
});
