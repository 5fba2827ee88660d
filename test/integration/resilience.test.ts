import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { Pool, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream } from '../helpers/upstream.ts';

/** Bounded load: `total` requests, `concurrency` at a time, against 127.0.0.1 only. */
const LOAD = { total: 400, concurrency: 20 };

/**
 * Upstreams that refuse connections: privileged ports nothing listens on. (A freed ephemeral port
 * can be bound again by another test file running in parallel, and then answers.)
 */
const DEAD = ['http://127.0.0.1:1', 'http://127.0.0.1:2'] as const;

/** Run `one` `total` times, `concurrency` at once; count outcomes by status (or error code). */
async function load(
  total: number,
  concurrency: number,
  one: () => Promise<number>,
): Promise<Record<string, number>> {
  const outcomes: Record<string, number> = {};
  let started = 0;
  const worker = async () => {
    while (started < total) {
      started++;
      let key: string;
      try {
        key = String(await one());
      } catch (err) {
        key = `error ${(err as { code?: string }).code ?? String(err)}`;
      }
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return outcomes;
}

async function status(url: string, init: Parameters<typeof request>[1] = {}): Promise<number> {
  const res = await request(url, init);
  await res.body.dump();
  return res.statusCode;
}

interface RacingUpstream {
  url: string;
  server: Server;
  /** Requests whose headers arrived, by `METHOD path` (dropped ones included). */
  arrived: Map<string, number>;
  /** Requests answered 200. */
  answered(): number;
  /** Reused connections cut as a request arrived on them. */
  cut(): number;
  connections(): number;
  close(): Promise<void>;
}

/**
 * An upstream that takes one request per connection while advertising keep-alive: the next
 * request on a reused connection is dropped as it arrives (the socket closed with a FIN, or reset
 * with `reset`), before any byte of an answer. That is the keep-alive race of an upstream closing
 * idle connections (its keepAliveTimeout shorter than the client's), made to happen on every reuse.
 */
async function startRacingUpstream(how: 'close' | 'reset'): Promise<RacingUpstream> {
  const arrived = new Map<string, number>();
  const served = new WeakSet<Socket>();
  let answered = 0;
  let cut = 0;
  let connections = 0;
  const server = createServer((req: IncomingMessage, res) => {
    const key = `${req.method} ${req.url}`;
    arrived.set(key, (arrived.get(key) ?? 0) + 1);
    const socket = req.socket;
    if (served.has(socket)) {
      cut++;
      if (how === 'reset') socket.resetAndDestroy();
      else socket.destroy();
      return;
    }
    served.add(socket);
    req.resume();
    req.on('end', () => {
      answered++;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' }).end('ok');
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    arrived,
    answered: () => answered,
    cut: () => cut,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The /readyz body of the gateway's admin port. */
async function readyz(gw: TestGateway): Promise<{ upstreams: Record<string, unknown> }> {
  const res = await request(`${gw.addresses.admin}/readyz`);
  return (await res.body.json()) as { upstreams: Record<string, unknown> };
}

describe('a single upstream that drops requests on reused keep-alive connections', () => {
  it.each(['close', 'reset'] as const)(
    `serves 0 errors to ${LOAD.total} idempotent requests under load (connection %s), and is never ejected`,
    async (how) => {
      const up = await startRacingUpstream(how);
      let gw: TestGateway | undefined;
      const control = new Pool(up.url);
      try {
        // Control: a plain undici pool (what the gateway used before) against the same upstream.
        const direct = await load(100, LOAD.concurrency, async () => {
          const res = await control.request({ path: '/direct', method: 'GET' });
          await res.body.dump();
          return res.statusCode;
        });
        expect(Object.keys(direct).some((k) => k.startsWith('error'))).toBe(true);

        gw = await startGateway({ svc: spec({ upstreams: [up.url], extra: { retries: 0 } }) });
        const url = `${gw.url}/svc/items`;
        const cutBefore = up.cut();
        const outcomes = await load(LOAD.total, LOAD.concurrency, () => status(url));
        expect(outcomes).toEqual({ '200': LOAD.total });
        // The race did happen, and each dropped request was resent once on a fresh connection.
        expect(up.cut() - cutBefore).toBeGreaterThan(0);
        expect(up.arrived.get('GET /items')).toBe(LOAD.total + (up.cut() - cutBefore));
        // Dropped reused connections are not the upstream's failures: no ejection, no panic.
        expect((await readyz(gw)).upstreams).toEqual({
          svc: { upstreams: 1, ejected: 0, unhealthy: 0, panic: false },
        });
      } finally {
        await control.close();
        await gw?.close();
        await up.close();
      }
    },
  );

  it('resends a small PUT on a fresh connection, but never a POST with a streamed body', async () => {
    const up = await startRacingUpstream('close');
    // retries: 0, so only the fresh-connection resend can save the PUT.
    const gw = await startGateway({ svc: spec({ upstreams: [up.url], extra: { retries: 0 } }) });
    try {
      const base = `${gw.url}/svc`;
      // Each GET leaves an idle keep-alive connection, so the next request goes out on a reused one.
      expect(await status(`${base}/items`)).toBe(200);
      expect(await status(`${base}/items/1`, { method: 'PUT', body: '{"n":1}' })).toBe(200);
      expect(up.arrived.get('PUT /items/1')).toBe(2);

      expect(await status(`${base}/items`)).toBe(200);
      // No content-length: streamed to the upstream as it arrives, so it cannot be sent twice.
      const streamed = Readable.from([Buffer.from('{"chunk":1}'), Buffer.from('{"chunk":2}')]);
      expect(await status(`${base}/upload`, { method: 'POST', body: streamed })).toBe(502);
      expect(up.arrived.get('POST /upload')).toBe(1);
    } finally {
      await gw.close();
      await up.close();
    }
  });
});

describe('panic mode', () => {
  it('a service whose only upstream answered three errors still forwards, and says so in the log and on /readyz', async () => {
    // Drops its first three requests (fresh connections, so they count as failures), then serves.
    let drops = 3;
    const up = await startUpstream({ name: 'only' });
    up.server.prependListener('request', (req: IncomingMessage) => {
      if (drops > 0) {
        drops--;
        req.socket.destroy();
      }
    });
    const logs = captureLogs('info');
    const gw = await startGateway(
      { svc: spec({ upstreams: [up.url], extra: { retries: 0 } }) },
      {},
      { logger: logs.logger },
    );
    try {
      const url = `${gw.url}/svc/items`;
      const first = [];
      for (let i = 0; i < 3; i++) first.push(await status(url));
      expect(first).toEqual([502, 502, 502]);
      expect(logs.lines.some((l) => l.msg === 'upstream ejected')).toBe(true);
      expect((await readyz(gw)).upstreams).toEqual({
        svc: { upstreams: 1, ejected: 1, unhealthy: 0, panic: true },
      });
      const panicLine = logs.lines.find((l) => String(l.msg).startsWith('upstream group in panic mode'));
      expect(panicLine).toMatchObject({ level: 40, service: 'svc', upstreams: 1, ejected: 1 });
      // Ejected, yet still the one upstream requests go to: no 503 for ejectMs.
      for (let i = 0; i < 5; i++) expect(await status(url)).toBe(200);
    } finally {
      await gw.close();
      await up.close();
    }
  });

  it('balances over every upstream once fewer than panicThreshold percent are un-ejected', async () => {
    const ups = await Promise.all(['a', 'b'].map((name) => startUpstream({ name })));
    const dead = DEAD[0];
    const gw = await startGateway({
      svc: spec({
        upstreams: [dead, ...ups.map((u) => u.url)],
        extra: { retries: 0, passiveHealth: { failures: 1, ejectMs: 60_000, panicThreshold: 100 } },
      }),
    });
    try {
      const url = `${gw.url}/svc/items`;
      // Round-robin: the dead upstream's turn comes first, fails and ejects it (2 of 3 left < 100 %).
      expect(await status(url)).toBe(502);
      expect((await readyz(gw)).upstreams).toEqual({
        svc: { upstreams: 3, ejected: 1, unhealthy: 0, panic: true },
      });
      const seen = [];
      for (let i = 0; i < 6; i++) seen.push(await status(url));
      // In panic the ejected upstream keeps its turn: one in three answers is its 502.
      expect(seen.filter((s) => s === 502).length).toBe(2);
    } finally {
      await gw.close();
      await Promise.all(ups.map((u) => u.close()));
    }
  });
});

describe('panic mode with active health checks', () => {
  it('an only upstream ejected by passive health still forwards until its probes readmit it; failing probes still mean 503', async () => {
    // Drops proxied requests (probes pass) while `failing`, fresh-connection resends included.
    let failing = true;
    const up = await startUpstream({ name: 'only' });
    up.server.prependListener('request', (req: IncomingMessage) => {
      if (failing && !(req.url ?? '').endsWith('/health')) req.socket.destroy();
    });
    const logs = captureLogs('info');
    const gw = await startGateway(
      {
        svc: spec({
          upstreams: [up.url],
          extra: {
            retries: 0,
            passiveHealth: { failures: 1 },
            healthCheck: { path: '/health', intervalMs: 50, unhealthyAfter: 2, healthyAfter: 2 },
          },
        }),
      },
      {},
      { logger: logs.logger },
    );
    try {
      const url = `${gw.url}/svc/items`;
      expect(await status(url)).toBe(502);
      failing = false;
      // Ejected until two good probes, and forwarded to meanwhile (panic), not 503.
      expect(await status(url)).toBe(200);
      const deadline = Date.now() + 5_000;
      while (!logs.lines.some((l) => l.msg === 'upstream group out of panic mode')) {
        if (Date.now() > deadline) throw new Error('still in panic after 5 s of good probes');
        await new Promise((r) => setTimeout(r, 20));
      }
      expect((await readyz(gw)).upstreams).toEqual({
        svc: { upstreams: 1, ejected: 0, unhealthy: 0, panic: false },
      });
      // Active checks are the upstream's own word: once they fail, nothing is forwarded.
      up.setHealth(503);
      while ((await status(url)) !== 503) {
        if (Date.now() > deadline + 5_000) throw new Error('never 503 with failing probes');
        await new Promise((r) => setTimeout(r, 20));
      }
      expect((await readyz(gw)).upstreams).toEqual({
        svc: { upstreams: 1, ejected: 0, unhealthy: 1, panic: false },
      });
    } finally {
      await gw.close();
      await up.close();
    }
  });
});

describe('retries', () => {
  it('retries: 2 over three upstreams with two dead loses no idempotent request', async () => {
    const live = await startUpstream({ name: 'live' });
    const gw = await startGateway({
      svc: spec({ upstreams: [DEAD[0], live.url, DEAD[1]], extra: { retries: 2 } }),
    });
    try {
      const base = `${gw.url}/svc`;
      let n = 0;
      const outcomes = await load(LOAD.total, LOAD.concurrency, () => {
        n++;
        return n % 4 === 0
          ? status(`${base}/items/${n}`, { method: 'PUT', body: `{"n":${n}}` })
          : status(`${base}/items`);
      });
      expect(outcomes).toEqual({ '200': LOAD.total });
      expect(live.seen.length).toBe(LOAD.total);
    } finally {
      await gw.close();
      await live.close();
    }
  });

  it('retries an upstream 503 on another upstream when retryOn lists 503, and passes it on when not', async () => {
    const ups = await Promise.all(['a', 'b'].map((name) => startUpstream({ name })));
    const failing = createServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5' }).end('busy');
    });
    await new Promise<void>((r) => failing.listen(0, '127.0.0.1', r));
    const failingUrl = `http://127.0.0.1:${(failing.address() as AddressInfo).port}`;
    const upstreams = [failingUrl, ...ups.map((u) => u.url)];
    // statuses: []: the failing upstream stays in rotation (its 503s would eject it by default).
    const passiveHealth = { statuses: [] };
    const gw = await startGateway({
      on: spec({
        basePath: '/on',
        upstreams,
        extra: { retries: 1, retryOn: ['connect-failure', 503], passiveHealth },
      }),
      off: spec({ basePath: '/off', upstreams, extra: { retries: 1, passiveHealth } }),
    });
    try {
      const on = [];
      const off = [];
      for (let i = 0; i < 9; i++) on.push(await status(`${gw.url}/on/items`));
      for (let i = 0; i < 9; i++) off.push(await status(`${gw.url}/off/items`));
      expect(on).toEqual(Array(9).fill(200));
      expect(off.filter((s) => s === 503).length).toBe(3);
      // A POST is never retried on a status either.
      const posts = [];
      for (let i = 0; i < 3; i++)
        posts.push(await status(`${gw.url}/on/items`, { method: 'POST', body: 'x' }));
      expect(posts.filter((s) => s === 503).length).toBe(1);
    } finally {
      await gw.close();
      await Promise.all(ups.map((u) => u.close()));
      await new Promise((r) => failing.close(r));
    }
  });

  it('the retry budget caps retries at burst + percent % of requests when every upstream fails', async () => {
    let attempts = 0;
    const servers = await Promise.all(
      [0, 1, 2].map(async () => {
        const s = createServer((_req, res) => {
          attempts++;
          res.writeHead(503, { 'content-type': 'text/plain' }).end('down');
        });
        await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
        return s;
      }),
    );
    const budget = { percent: 20, burst: 10 };
    const gw = await startGateway({
      svc: spec({
        upstreams: servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`),
        extra: { retries: 5, retryOn: [502, 503, 504], retryBudget: budget },
      }),
    });
    try {
      const requests = 200;
      const outcomes = await load(requests, LOAD.concurrency, () => status(`${gw.url}/svc/items`));
      // The upstreams' own answer is passed on once the budget is spent.
      expect(outcomes).toEqual({ '503': requests });
      const ceiling = requests * (1 + budget.percent / 100) + budget.burst;
      expect(attempts).toBeLessThanOrEqual(ceiling);
      // The budget is spent, not left unused (5 retries each would be 1200 attempts).
      expect(attempts).toBeGreaterThanOrEqual(ceiling - 2);
    } finally {
      await gw.close();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    }
  });
});
