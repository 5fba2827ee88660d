/**
 * One global limit across gateway processes: two child processes, each with its own Redis store
 * and rateLimit hooks (exactly what a gateway builds per route), share one real redis-server.
 * Of 4N concurrent requests spread over both, exactly N are admitted; killing Redis gives each
 * `onStoreError` behaviour, and the limit is global again once Redis is back.
 *
 * Two suites: two real `portcullis start --config` processes (HTTP, 429 problem+json, RateLimit
 * fields, Redis killed and restarted), and two plain child processes running the policy hook with
 * each `onStoreError` choice (which the CLI suite, on the default `local`, does not cover).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

describe('rate limit shared through Redis by two policy processes', () => {
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

/** A `portcullis start --config <file>` child and its JSON log lines. */
interface Gateway {
  child: ChildProcess;
  http: string;
  logs: Array<Record<string, unknown>>;
}

/** Start the CLI on this Node with ports 0 on 127.0.0.1; resolves on its "portcullis listening" line. */
function startGateway(configFile: string): Promise<Gateway> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_')));
  const child = spawn(
    process.execPath,
    [join(REPO_ROOT, 'bin/portcullis.js'), 'start', '--config', configFile],
    {
      env: {
        ...env,
        PORTCULLIS_HTTP_PORT: '0',
        PORTCULLIS_HTTP_HOST: '127.0.0.1',
        PORTCULLIS_ADMIN_PORT: '0',
        PORTCULLIS_ADMIN_HOST: '127.0.0.1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (t: string) => {
    stderr += t;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`portcullis did not listen within 10 s:\n${stderr}`)),
      10_000,
    );
    child.once('exit', (code) =>
      reject(new Error(`portcullis exited (${code}) before listening:\n${stderr}`)),
    );
    let partial = '';
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'portcullis listening' && typeof entry.http === 'string') {
            clearTimeout(timer);
            resolve({ child, http: entry.http, logs });
          }
        } catch {
          // not a log line
        }
      }
    });
  });
}

const SPEC = `openapi: 3.1.0
info: { title: Svc, version: 1.0.0 }
x-portcullis: { basePath: /svc, mock: true }
paths:
  /ping:
    get:
      operationId: ping
      responses:
        '200':
          description: ok
          content: { application/json: { example: { pong: true } } }
`;

describe('rate limit across two portcullis processes (CLI, real Redis)', () => {
  let cliRedis: TestRedis;
  let dir: string;
  let gateways: Gateway[] = [];

  beforeAll(async () => {
    cliRedis = await startRedis();
    dir = await mkdtemp(join(tmpdir(), 'portcullis-rate-limit-'));
    await writeFile(join(dir, 'gateway.yaml'), `watch: false\nstate: { redis: ${cliRedis.url} }\n`);
    await mkdir(join(dir, 'openapi'));
    await mkdir(join(dir, 'policies'));
    await writeFile(join(dir, 'openapi', 'svc.yaml'), SPEC);
    await writeFile(
      join(dir, 'policies', 'svc.yaml'),
      `- match: { service: svc }\n  rateLimit: { limit: ${N}, window: 1m, key: ip }\n`,
    );
    const configFile = join(dir, 'gateway.yaml');
    gateways = await Promise.all([startGateway(configFile), startGateway(configFile)]);
  });

  afterAll(async () => {
    await Promise.all(gateways.map((g) => stopGateway(g.child)));
    await cliRedis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** 4N concurrent GETs, alternating between the two gateways: the responses. */
  async function httpBurst(): Promise<Response[]> {
    return Promise.all(Array.from({ length: 4 * N }, (_, i) => fetch(`${gateways[i % 2]?.http}/svc/ping`)));
  }

  it('admits exactly N of 4N, answers the rest 429 with Retry-After and RateLimit fields', async () => {
    const responses = await httpBurst();
    const ok = responses.filter((r) => r.status === 200);
    const limited = responses.filter((r) => r.status === 429);
    expect(ok).toHaveLength(N);
    expect(limited).toHaveLength(3 * N);
    expect(ok[0]?.headers.get('ratelimit-policy')).toBe(`"default";q=${N};w=60`);
    expect(ok[0]?.headers.get('ratelimit')).toMatch(/^"default";r=\d+;t=\d+$/);
    const rejected = limited[0] as Response;
    expect(rejected.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(Number(rejected.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(rejected.headers.get('ratelimit')).toMatch(/^"default";r=0;t=\d+$/);
    expect(await rejected.json()).toMatchObject({ status: 429, code: 'PC_RATE_LIMITED' });
    await Promise.all(responses.filter((r) => !r.bodyUsed).map((r) => r.body?.cancel()));
  });

  it('with Redis killed each process limits on its own (onStoreError: local), and shares again once it is back', async () => {
    await cliRedis.stop('SIGKILL');
    try {
      const during = await httpBurst();
      expect(during.filter((r) => r.status === 200)).toHaveLength(2 * N);
      expect(during.filter((r) => r.status === 429)).toHaveLength(2 * N);
      await Promise.all(during.map((r) => r.body?.cancel()));
    } finally {
      await cliRedis.restart();
    }
    // Each process logs when its store reconnects (ioredis backs off at most 2 s between tries).
    await vi.waitFor(
      () => expect(gateways.every((g) => g.logs.some((l) => l.msg === 'redis store recovered'))).toBe(true),
      { timeout: 10_000, interval: 50 },
    );
    // The restarted Redis is empty: one fresh shared counter again.
    const after = await httpBurst();
    expect(after.filter((r) => r.status === 200)).toHaveLength(N);
    expect(after.filter((r) => r.status === 429)).toHaveLength(3 * N);
    await Promise.all(after.map((r) => r.body?.cancel()));
  });
});

/** SIGTERM a gateway and wait for it to exit; SIGKILL if it has not within 10 s. */
function stopGateway(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined)
    return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
