/**
 * `workers: 2` against a real `portcullis start` process tree: a primary and two worker processes
 * sharing one listener, one memory store (in the primary) and one admin port. The tests run in
 * order on one instance: serving, metrics, rate limit, reload, a killed worker, and last SIGTERM.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { connect as h2connect } from 'node:http2';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { spec } from '../helpers/gateway.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../helpers/otlp.ts';
import { parsePrometheus, type Sample, scrapeUntil, value } from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** The rate limit under test (per day: nothing replenishes during the file), per instance whatever the worker count. */
const LIMIT = 50;
const OPERATIONS = {
  'GET /items': 'listItems',
  'GET /counted': 'counted',
  'GET /limited': 'limited',
  'GET /guarded': 'guarded',
  'GET /after': 'after',
  'GET /tls': 'tls',
  'POST /upload': 'upload',
  'GET /slow': 'slow',
};

/** A policy file the reload test adds; BROKEN_GUARD is an edit of it that fails validation. */
const GUARD = stringify([
  { match: { service: 'svc', operations: ['guarded'] }, ipFilter: { deny: ['127.0.0.0/8'] } },
]);
const BROKEN_GUARD = stringify([
  { match: { service: 'svc', operations: ['guarded'] }, ipFilter: { deny: ['127.0.0.0/8'], typo: true } },
]);

interface ReadyBody {
  ready: boolean;
  version: string;
  workers: Array<{ worker: number; pid: number; ready: boolean; version: string | null }>;
}

// Real processes on a shared 2-core machine: bounds are generous, never the point of a test.
describe('workers: 2 (node:cluster)', { timeout: 90_000 }, () => {
  let up: TestUpstream;
  /** Three upstreams of the `sticky` service, answering with their name in x-upstream. */
  const pool: TestUpstream[] = [];
  let gw: CliGateway;
  let admin: string;
  let otlp: OtlpReceiver;
  let caPem: string;
  let certDir: string;
  /** `https://localhost:<port>`: the TLS listener (HTTP/2 and HTTP/1.1) the workers share. */
  let httpsOrigin: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    up = await startUpstream({ name: 'svc' });
    for (const name of ['a', 'b', 'c']) pool.push(await startUpstream({ name }));
    otlp = await startOtlpReceiver();
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const tls = await writeCerts(certDir, 'gateway', await ca.issue({ names: ['localhost'] }));
    gw = await startCliGateway({
      config: {
        workers: 2,
        watch: true,
        telemetry: { otlp: otlp.url },
        listen: { http: { port: 0, host: '127.0.0.1' }, https: { port: 0, host: '127.0.0.1', ...tls } },
      },
      startTimeoutMs: 45_000,
      specs: {
        svc: spec({ basePath: '/svc', upstreams: [up.url], operations: OPERATIONS }),
        sticky: spec({
          basePath: '/sticky',
          upstreams: pool.map((u) => u.url),
          operations: { 'GET /items': 'stickyItems' },
        }),
      },
      policies: {
        limits: [
          { match: { service: 'sticky' }, stickySession: { cookie: 'pc_affinity', ttl: '1h' } },
          {
            match: { service: 'svc', operations: ['limited'] },
            rateLimit: { limit: LIMIT, window: '1d', key: 'ip' },
          },
        ],
      },
    });
    admin = gw.admin as string;
    const line = gw.logs.find((l) => l.msg === 'portcullis listening');
    httpsOrigin = String(line?.https).replace('127.0.0.1', 'localhost');
  }, 60_000);

  afterAll(async () => {
    if (gw && gw.child.exitCode === null && gw.child.signalCode === null) await gw.stop();
    await Promise.all(agents.map((a) => a.destroy()));
    await up?.close();
    await Promise.all(pool.map((u) => u.close()));
    await otlp?.close();
    if (certDir) await removeCertDir(certDir);
  });

  /** `count` GETs of `path` over `connections` keep-alive connections; the statuses, in order. */
  async function load(path: string, count: number, connections = 8): Promise<number[]> {
    const dispatcher = new Agent({ connections, pipelining: 1 });
    agents.push(dispatcher);
    return Promise.all(
      Array.from({ length: count }, async () => {
        const res = await request(`${gw.url}${path}`, { dispatcher });
        await res.body.dump();
        return res.statusCode;
      }),
    );
  }

  /** The access-log lines of requests to `path`. */
  function served(path: string): Array<Record<string, unknown>> {
    return gw.logs.filter((l) => l.msg === 'request' && l.path === path);
  }

  /** Worker slots that logged requests to `path`. */
  function workersServing(path: string): Set<unknown> {
    return new Set(served(path).map((l) => l.worker));
  }

  /** The admin port's /metrics, parsed strictly (a duplicate series from a bad merge throws). */
  async function scrape(): Promise<Sample[]> {
    const res = await request(`${admin}/metrics`);
    return parsePrometheus(await res.body.text());
  }

  const guardFile = () => join(gw.dir, 'policies', 'guard.yaml');
  /** Lines of the primary (no `worker` field) saying it rejected guard.yaml and kept its last good version. */
  const rejections = () =>
    gw.logs.filter(
      (l) =>
        l.worker === undefined &&
        String(l.msg).startsWith('policy file rejected') &&
        String(l.file).endsWith('guard.yaml'),
    ).length;

  /** Poll `check` every 50 ms until it holds or `timeoutMs` passed (the assertion after it says what failed). */
  async function until(check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }

  async function readyz(): Promise<ReadyBody> {
    const res = await request(`${admin}/readyz`);
    return (await res.body.json()) as ReadyBody;
  }

  /** Wait (bounded) until the log holds `n` access-log lines for `path`: each line is written after its response. */
  async function accessLogged(path: string, n: number): Promise<void> {
    for (let i = 0; i < 200 && served(path).length < n; i++) await new Promise((r) => setTimeout(r, 50));
  }

  it('two worker processes serve the one listener: each answers requests under load, and the access log names it', async () => {
    const statuses = await load('/svc/items', 200, 16);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(up.seen.filter((r) => r.url === '/items')).toHaveLength(200);
    await accessLogged('/svc/items', 200);
    const lines = served('/svc/items');
    expect(lines).toHaveLength(200);
    expect(workersServing('/svc/items')).toEqual(new Set([1, 2]));
    const pids = new Set(lines.map((l) => l.pid));
    expect(pids.size).toBe(2);
    expect(pids.has(gw.pid)).toBe(false); // the primary serves no request itself
    const body = await readyz();
    expect(body.ready).toBe(true);
    expect(body.workers.map((w) => [w.worker, w.ready])).toEqual([
      [1, true],
      [2, true],
    ]);
    expect(new Set(body.workers.map((w) => w.pid))).toEqual(pids);
    expect(body.workers.every((w) => w.version === body.version)).toBe(true);
    // Each worker exports its own spans; the resource names the worker (and carries its pid).
    const serverSpans = () =>
      otlp.spans.filter((sp) => sp.kind === 2 && sp.attributes['url.path'] === '/svc/items');
    await until(() => new Set(serverSpans().map((sp) => sp.resource['portcullis.worker'])).size === 2);
    const byWorker = new Map(
      serverSpans().map((sp) => [sp.resource['portcullis.worker'], sp.resource['process.pid']]),
    );
    expect([...byWorker.keys()].sort()).toEqual([1, 2]);
    expect(new Set(byWorker.values())).toEqual(pids);
  });

  it('the TLS listener is shared too: HTTP/2 sessions and HTTP/1.1 connections reach both workers', async () => {
    const h2Status = (session: ReturnType<typeof h2connect>) =>
      new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': '/svc/tls' });
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        stream.resume();
      });
    // One session is one connection, so one worker: several sessions spread over both.
    const sessions = Array.from({ length: 6 }, () => h2connect(httpsOrigin, { ca: caPem }));
    try {
      const h2 = await Promise.all(sessions.flatMap((s) => [h2Status(s), h2Status(s), h2Status(s)]));
      expect(h2).toEqual(Array(18).fill(200));
    } finally {
      for (const s of sessions) s.close();
    }
    const dispatcher = new Agent({ connections: 8, connect: { ca: caPem } });
    agents.push(dispatcher);
    const h1 = await Promise.all(
      Array.from({ length: 24 }, async () => {
        const res = await request(`${httpsOrigin}/svc/tls`, { dispatcher });
        await res.body.dump();
        return res.statusCode;
      }),
    );
    expect(h1).toEqual(Array(24).fill(200));
    await accessLogged('/svc/tls', 42);
    expect(workersServing('/svc/tls')).toEqual(new Set([1, 2]));
    expect(up.seen.filter((r) => r.url === '/tls')).toHaveLength(42);
  });

  it('/metrics on the admin port sums the counters of both workers exactly', async () => {
    const statuses = await load('/svc/counted', 60, 12);
    expect(statuses.every((s) => s === 200)).toBe(true);
    await accessLogged('/svc/counted', 60);
    // Both workers counted some of them: the sum below is an aggregation, not one worker's count.
    expect(workersServing('/svc/counted')).toEqual(new Set([1, 2]));
    const labels = { service: 'svc', route: '/svc/counted', method: 'GET', status_class: '2xx' };
    const samples = await scrapeUntil(
      scrape,
      (s) => value(s, 'portcullis_http_requests_total', labels) === 60,
    );
    expect(value(samples, 'portcullis_http_requests_total', labels)).toBe(60);
    expect(value(samples, 'portcullis_workers', { state: 'ready' })).toBe(2);
    // One configuration served by the instance: an info gauge of 1, not 1 per worker.
    const info = samples.filter((s) => s.name === 'portcullis_config_info');
    expect(info.map((s) => s.value)).toEqual([1]);
  });

  it('a memory-store rate limit of 50 admits exactly 50 per instance across both workers', async () => {
    const statuses = await load('/svc/limited', 3 * LIMIT, 16);
    await accessLogged('/svc/limited', 3 * LIMIT);
    expect(workersServing('/svc/limited')).toEqual(new Set([1, 2]));
    expect(statuses.filter((s) => s === 200)).toHaveLength(LIMIT);
    expect(statuses.filter((s) => s === 429)).toHaveLength(2 * LIMIT);
    expect(up.seen.filter((r) => r.url === '/limited')).toHaveLength(LIMIT);
    // Both workers refused some: each saw the counter the other one advanced.
    const denied = served('/svc/limited').filter((l) => l.status === 429);
    expect(new Set(denied.map((l) => l.worker))).toEqual(new Set([1, 2]));
  });

  it('a sticky session holds across both workers: the binding lives in the primary', async () => {
    const first = await request(`${gw.url}/sticky/items`);
    await first.body.dump();
    const cookie = String(first.headers['set-cookie']).split(';')[0] as string;
    expect(cookie).toMatch(/^pc_affinity=/);
    const home = first.headers['x-upstream'];
    const dispatcher = new Agent({ connections: 16, pipelining: 1 });
    agents.push(dispatcher);
    const answered = await Promise.all(
      Array.from({ length: 60 }, async () => {
        const res = await request(`${gw.url}/sticky/items`, { dispatcher, headers: { cookie } });
        await res.body.dump();
        return res.headers['x-upstream'];
      }),
    );
    await accessLogged('/sticky/items', 61);
    expect(workersServing('/sticky/items')).toEqual(new Set([1, 2]));
    // Round-robin over three upstreams would spread these; a per-worker store would bind twice.
    expect(new Set(answered)).toEqual(new Set([home]));
  });

  it('a policy file change reaches both workers, which switch to the same new version', async () => {
    const before = await readyz();
    expect((await load('/svc/guarded', 10)).every((s) => s === 200)).toBe(true);
    await writeFile(guardFile(), GUARD);
    let after = before;
    await until(async () => {
      after = await readyz();
      return after.version !== before.version && after.workers.every((w) => w.version === after.version);
    }, 30_000);
    expect(after.version).not.toBe(before.version);
    expect(after.workers.map((w) => w.version)).toEqual([after.version, after.version]);
    const statuses = await load('/svc/guarded', 40, 16);
    expect(statuses.every((s) => s === 403)).toBe(true);
    await accessLogged('/svc/guarded', 50);
    const refused = served('/svc/guarded').filter((l) => l.status === 403);
    expect(new Set(refused.map((l) => l.worker))).toEqual(new Set([1, 2]));
    expect(up.seen.filter((r) => r.url === '/guarded')).toHaveLength(10);
  });

  it('a policy file the primary rejects reaches no worker: both keep the last good version', async () => {
    const before = await readyz();
    const seen = rejections();
    await writeFile(guardFile(), BROKEN_GUARD);
    await until(() => rejections() > seen);
    expect(rejections()).toBeGreaterThan(seen);
    const after = await readyz();
    expect(after.version).toBe(before.version);
    expect(after.workers.map((w) => w.version)).toEqual([before.version, before.version]);
    // Only the primary read it: no worker logged anything about the file.
    expect(
      gw.logs.filter((l) => l.worker !== undefined && String(l.file ?? '').endsWith('guard.yaml')),
    ).toEqual([]);
    expect((await load('/svc/guarded', 10)).every((s) => s === 403)).toBe(true);
    await writeFile(guardFile(), GUARD);
  });

  it('a killed worker is replaced in its slot and both serve again', async () => {
    const before = await readyz();
    const victim = before.workers.find((w) => w.worker === 1);
    expect(victim).toBeDefined();
    process.kill(victim?.pid as number, 'SIGKILL');
    let after = before;
    await until(async () => {
      after = await readyz();
      const slot1 = after.workers.find((w) => w.worker === 1);
      return slot1?.ready === true && slot1.pid !== victim?.pid;
    }, 30_000);
    const replacement = after.workers.find((w) => w.worker === 1);
    expect(replacement?.ready).toBe(true);
    expect(replacement?.pid).not.toBe(victim?.pid);
    // The replacement loaded the configuration in force (the reload above included).
    expect(replacement?.version).toBe(before.version);
    expect(gw.logs.some((l) => l.msg === 'worker died; replacing it' && l.pid === victim?.pid)).toBe(true);

    const statuses = await load('/svc/after', 100, 16);
    expect(statuses.every((s) => s === 200)).toBe(true);
    await accessLogged('/svc/after', 100);
    const pids = new Set(served('/svc/after').map((l) => l.pid));
    expect(pids).toEqual(new Set(after.workers.map((w) => w.pid)));
    const samples = await scrapeUntil(scrape, (s) => value(s, 'portcullis_worker_restarts_total', {}) === 1);
    expect(value(samples, 'portcullis_worker_restarts_total', {})).toBe(1);
    // The rate-limit state lives in the primary: the dead worker took none of it along.
    expect(await load('/svc/limited', 5)).toEqual([429, 429, 429, 429, 429]);
  });

  it('a replacement that cannot build the configuration in force never serves; it starts once the file is fixed', async () => {
    const seen = rejections();
    await writeFile(guardFile(), BROKEN_GUARD);
    await until(() => rejections() > seen);
    const before = await readyz();
    const victim = before.workers.find((w) => w.worker === 2)?.pid as number;
    process.kill(victim, 'SIGKILL');
    // A replacement read the broken file, was refused (it would serve another configuration) and died.
    const failedReplacement = () =>
      gw.logs.some((l) => l.msg === 'worker died; replacing it' && l.worker === 2 && l.pid !== victim);
    await until(failedReplacement, 30_000);
    // Its start left the broken file out (another version): the primary did not admit it.
    expect(
      gw.logs.some((l) => String(l.msg).startsWith('worker cannot build the configuration in force')),
    ).toBe(true);
    // Exit code 78 (not admitted), and each quick death of the slot waits longer before the next try.
    const deaths = gw.logs.filter((l) => l.msg === 'worker died; replacing it' && l.worker === 2);
    expect(deaths[0]).toMatchObject({ pid: victim, signal: 'SIGKILL' });
    expect(deaths[1]).toMatchObject({ code: 78 });
    expect(deaths[1]?.respawnInMs as number).toBeGreaterThan(deaths[0]?.respawnInMs as number);
    const meanwhile = await readyz();
    expect(meanwhile.workers.find((w) => w.worker === 2)?.ready).toBe(false);
    // Worker 1 alone serves, with the last good policies.
    const marker = served('/svc/guarded').length;
    expect((await load('/svc/guarded', 10)).every((s) => s === 403)).toBe(true);
    await accessLogged('/svc/guarded', marker + 10);
    expect(
      new Set(
        served('/svc/guarded')
          .slice(marker)
          .map((l) => l.worker),
      ),
    ).toEqual(new Set([1]));

    await writeFile(guardFile(), GUARD);
    let after = meanwhile;
    await until(async () => {
      after = await readyz();
      return after.workers.every((w) => w.ready);
    }, 40_000);
    expect(after.workers.map((w) => w.version)).toEqual([before.version, before.version]);
    expect(after.workers.find((w) => w.worker === 2)?.pid).not.toBe(victim);
  }, 90_000);

  it('a gateway.yaml live setting (limits.bodyBytes) reaches both workers on SIGHUP', async () => {
    const file = join(gw.dir, 'gateway.yaml');
    const doc = parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(file, stringify({ ...doc, limits: { bodyBytes: 64 } }));
    process.kill(gw.pid, 'SIGHUP');
    const post = async (dispatcher?: Agent) => {
      const res = await request(`${gw.url}/svc/upload`, {
        method: 'POST',
        body: 'x'.repeat(1000),
        dispatcher,
      });
      await res.body.dump();
      return res.statusCode;
    };
    // Each worker says so once it applied the new settings.
    const applied = () =>
      new Set(
        gw.logs
          .filter((l) => l.msg === 'gateway.yaml reloaded' && l.worker !== undefined)
          .map((l) => l.worker),
      );
    await until(() => applied().size === 2);
    expect(applied()).toEqual(new Set([1, 2]));
    const marker = served('/svc/upload').length;
    const dispatcher = new Agent({ connections: 8 });
    agents.push(dispatcher);
    const statuses = await Promise.all(Array.from({ length: 40 }, () => post(dispatcher)));
    expect(statuses).toEqual(Array(40).fill(413));
    await accessLogged('/svc/upload', marker + 40);
    expect(
      new Set(
        served('/svc/upload')
          .slice(marker)
          .map((l) => l.worker),
      ),
    ).toEqual(new Set([1, 2]));
  });

  it('SIGTERM drains both workers: slow in-flight requests (summed on /upstreams) complete, then the primary exits 0', async () => {
    const slowMs = 1500;
    const count = 6;
    const arrived = new Promise<void>((resolve) => {
      let n = 0;
      const onRequest = (req: { url?: string }) => {
        if (!req.url?.startsWith('/slow') || ++n < count) return;
        up.server.off('request', onRequest);
        resolve();
      };
      up.server.on('request', onRequest);
    });
    // Each on its own connection, spread over the workers by the shared listener.
    const inFlight = Array.from({ length: count }, async () => {
      const dispatcher = new Agent({ connections: 1 });
      agents.push(dispatcher);
      const res = await request(`${gw.url}/svc/slow?ms=${slowMs}`, { dispatcher });
      await res.body.dump();
      return res.statusCode;
    });
    await arrived;
    // The admin port's /upstreams is the instance's view: the in-flight requests of both workers.
    const upstreams = await request(`${admin}/upstreams`);
    const view = (await upstreams.body.json()) as {
      services: Record<string, { upstreams: Array<{ url: string; inFlight: number }> }>;
    };
    expect(view.services.svc?.upstreams).toMatchObject([{ url: up.url, inFlight: count }]);
    const exit = gw.stop();
    expect(await Promise.all(inFlight)).toEqual(Array(count).fill(200));
    expect(await exit).toBe(0);
    const drained = served(`/svc/slow`).filter((l) => l.status === 200);
    expect(drained).toHaveLength(count);
    expect(new Set(drained.map((l) => l.worker))).toEqual(new Set([1, 2]));
    const done = gw.logs.filter((l) => l.msg === 'shutdown complete');
    // Both workers and the primary (the line without a worker field) finished their drain.
    expect(new Set(done.map((l) => l.worker))).toEqual(new Set([1, 2, undefined]));
  });
});
