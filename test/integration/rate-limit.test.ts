/**
 * One global limit across gateway processes: two child processes, each with its own Redis store
 * and rateLimit hooks (exactly what a gateway builds per route), share one real redis-server.
 * Of 4N concurrent requests spread over both, exactly N are admitted; killing Redis gives each
 * `onStoreError` behaviour, and the limit is global again once Redis is back.
 *
 * The children run the policy hook directly rather than the whole CLI gateway, because the
 * pipeline wiring (policies → routes in gateway.ts) is not in place yet; the HTTP part (fields
 * and 429 rendering) is covered by the policy's unit tests and problem.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startRedis, type TestRedis } from '../helpers/redis.ts';
import { REPO_ROOT } from '../helpers/spawn.ts';

/** The limit under test. */
const N = 10;
const MODES = ['allow', 'deny', 'local'] as const;
type Mode = (typeof MODES)[number];

/** What a worker answers to a burst: how many requests each outcome got. */
interface BurstResult {
  allowed: number;
  limited: number;
  unavailable: number;
  other: string[];
}

/**
 * The worker: plain ESM run with `node -e` from the repository root, importing the real store and
 * policy (.ts, type-stripped). It answers `{ id, ... }` to `{ id, cmd }` messages over IPC.
 */
const WORKER = `
import { pino } from 'pino';
import { createRedisStore } from './src/state/redis.ts';
import { rateLimitPolicy } from './src/policies/rate-limit/rate-limit.ts';
const logger = pino({ level: 'silent' });
const store = createRedisStore({ url: process.env.REDIS_URL }, logger);
await store.ready();
const route = { service: 'svc', operationId: 'op', method: 'GET', specPath: '/x', publicPath: '/svc/x', tags: [] };
const service = { name: 'svc' };
const hooks = {};
for (const mode of ['allow', 'deny', 'local']) {
  hooks[mode] = await rateLimitPolicy.create(
    { limit: ${N}, window: '1m', key: 'ip', onStoreError: mode },
    { config: {}, store, logger, route, service, baseDir: '.', readBody: () => Promise.reject(new Error('unused')) },
  );
}
async function one(mode, ip) {
  const ctx = { req: { headers: {} }, reply: {}, route, service, clientIp: ip, setUpstreamHeaders: {},
    removeUpstreamHeaders: new Set(), responseHeaders: {}, responseEdits: [], decisions: [] };
  try { await hooks[mode](ctx); return 'allowed'; }
  catch (err) { return err.code === 'PC_RATE_LIMITED' ? 'limited' : err.code === 'PC_STORE_UNAVAILABLE' ? 'unavailable' : String(err); }
}
process.on('message', async (m) => {
  if (m.cmd === 'status') return process.send({ id: m.id, status: store.status() });
  if (m.cmd === 'close') { await store.close(); process.send({ id: m.id }); return process.disconnect(); }
  const outcomes = await Promise.all(Array.from({ length: m.n }, () => one(m.mode, m.ip)));
  const count = (o) => outcomes.filter((x) => x === o).length;
  process.send({ id: m.id, allowed: count('allowed'), limited: count('limited'), unavailable: count('unavailable'),
    other: outcomes.filter((x) => !['allowed', 'limited', 'unavailable'].includes(x)) });
});
process.send({ ready: true });
`;

interface Worker {
  child: ChildProcess;
  request<T>(msg: Record<string, unknown>): Promise<T>;
}

function startWorker(redisUrl: string): Promise<Worker> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', WORKER], {
    cwd: REPO_ROOT,
    env: { ...process.env, REDIS_URL: redisUrl },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let nextId = 0;
  const pending = new Map<number, (reply: unknown) => void>();
  child.on('message', (reply: { id?: number }) => {
    if (reply.id !== undefined) pending.get(reply.id)?.(reply);
  });
  const worker: Worker = {
    child,
    request<T>(msg: Record<string, unknown>) {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`worker did not answer ${JSON.stringify(msg)}`)),
          10_000,
        );
        pending.set(id, (reply) => {
          clearTimeout(timer);
          pending.delete(id);
          resolve(reply as T);
        });
        child.send({ ...msg, id });
      });
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('worker did not start within 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready`)));
    child.on('message', (m: { ready?: boolean }) => {
      if (m.ready) {
        clearTimeout(timer);
        resolve(worker);
      }
    });
  });
}

let redis: TestRedis;
let workers: Worker[] = [];

/** 4N requests from one client address, half to each process, all at once; the totals. */
async function burst(mode: Mode, ip: string): Promise<BurstResult> {
  const results = await Promise.all(
    workers.map((w) => w.request<BurstResult>({ cmd: 'burst', mode, ip, n: (4 * N) / workers.length })),
  );
  return {
    allowed: results.reduce((s, r) => s + r.allowed, 0),
    limited: results.reduce((s, r) => s + r.limited, 0),
    unavailable: results.reduce((s, r) => s + r.unavailable, 0),
    other: results.flatMap((r) => r.other),
  };
}

async function statuses(): Promise<boolean[]> {
  const replies = await Promise.all(
    workers.map((w) => w.request<{ status: { ok: boolean } }>({ cmd: 'status' })),
  );
  return replies.map((r) => r.status.ok);
}

beforeAll(async () => {
  redis = await startRedis();
  workers = await Promise.all([startWorker(redis.url), startWorker(redis.url)]);
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.request({ cmd: 'close' }).catch(() => undefined)));
  for (const w of workers) {
    if (w.child.exitCode === null && w.child.signalCode === null && w.child.pid)
      process.kill(w.child.pid, 'SIGKILL');
  }
  await redis?.stop();
});

describe('rate limit shared through Redis by two gateway processes', () => {
  it('admits exactly N of 4N concurrent requests, then follows onStoreError while Redis is down, then recovers', async () => {
    for (const [i, mode] of MODES.entries()) {
      expect(await burst(mode, `198.51.100.${i}`), mode).toEqual({
        allowed: N,
        limited: 3 * N,
        unavailable: 0,
        other: [],
      });
    }

    await redis.stop('SIGKILL');
    try {
      await vi.waitFor(async () => expect(await statuses()).toEqual([false, false]), {
        timeout: 5_000,
        interval: 20,
      });
      expect(await burst('allow', '203.0.113.1')).toEqual({
        allowed: 4 * N,
        limited: 0,
        unavailable: 0,
        other: [],
      });
      expect(await burst('deny', '203.0.113.2')).toEqual({
        allowed: 0,
        limited: 0,
        unavailable: 4 * N,
        other: [],
      });
      // local: each process enforces N on its own.
      expect(await burst('local', '203.0.113.3')).toEqual({
        allowed: 2 * N,
        limited: 2 * N,
        unavailable: 0,
        other: [],
      });
    } finally {
      await redis.restart();
    }

    await vi.waitFor(async () => expect(await statuses()).toEqual([true, true]), {
      timeout: 10_000,
      interval: 20,
    });
    for (const [i, mode] of MODES.entries()) {
      expect(await burst(mode, `192.0.2.${i}`), mode).toEqual({
        allowed: N,
        limited: 3 * N,
        unavailable: 0,
        other: [],
      });
    }
  });
});
