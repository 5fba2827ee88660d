import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { resolveGatewayConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/logger.ts';
import { POLICY_KINDS } from '../../src/policies/index.ts';
import { Runtime } from '../../src/runtime.ts';
import { createMemoryStore } from '../../src/state/memory.ts';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { startCliGateway } from '../helpers/cli.ts';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Request } from '../helpers/h2.ts';
import { parsePrometheus, type Sample, scrapeUntil, value } from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** An upstream that refuses connections: a privileged port nothing listens on. */
const DEAD = 'http://127.0.0.1:1';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

async function get(url: string): Promise<Answer> {
  const res = await request(url);
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

/** Which test upstream answered (its `x-upstream` header), or the status when none did. */
async function who(url: string): Promise<string> {
  const a = await get(url);
  return a.status === 200 ? String(a.headers['x-upstream']) : String(a.status);
}

interface UpstreamView {
  url: string;
  zone: string | null;
  weight: number;
  health: string;
  ejectedUntil: string | null;
  receivingTraffic: boolean;
  consecutiveFailures: number;
  ejections: number;
  inFlight: number;
  pending: number;
}
interface UpstreamsBody {
  version: string;
  zone: string | null;
  services: Record<
    string,
    {
      panic: boolean;
      inZone: boolean | null;
      preferZone: boolean;
      loadBalancing: string;
      circuitBreaker: { maxRequests: number; maxPending: number };
      passiveHealth: { failures: number; statuses: number[]; ejectMs: number; maxEjectMs: number };
      upstreams: UpstreamView[];
    }
  >;
}

async function upstreams(gw: TestGateway): Promise<UpstreamsBody> {
  const res = await request(`${gw.addresses.admin}/upstreams`);
  expect(res.statusCode).toBe(200);
  return (await res.body.json()) as UpstreamsBody;
}

/** The view of `url` in service `svc`. */
async function viewOf(gw: TestGateway, svc: string, url: string): Promise<UpstreamView | undefined> {
  return (await upstreams(gw)).services[svc]?.upstreams.find((u) => u.url === url);
}

async function scrape(gw: TestGateway): Promise<Sample[]> {
  const res = await request(`${gw.addresses.admin}/metrics`);
  return parsePrometheus(await res.body.text());
}

interface ScriptedUpstream {
  url: string;
  name: string;
  /** Requests that reached it. */
  hits(): number;
  /** Requests held (not answered yet). */
  held(): number;
  /** Answer every held request, and stop holding. */
  releaseAll(): void;
  /** Hold the next requests until releaseAll(). */
  hold(): void;
  /** The status of the next answers (default 200). */
  answer(status: number): void;
  close(): Promise<void>;
}

/** An upstream whose answers the test scripts: a status, or holding requests until released. */
async function startScripted(name: string): Promise<ScriptedUpstream> {
  let status = 200;
  let holding = false;
  let hits = 0;
  const held: ServerResponse[] = [];
  const reply = (res: ServerResponse) => {
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'text/plain', 'x-upstream': name }).end(`${name} ${status}`);
  };
  const server = createServer((req: IncomingMessage, res) => {
    hits++;
    req.resume();
    req.on('end', () => {
      if (holding) held.push(res);
      else reply(res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    name,
    hits: () => hits,
    held: () => held.length,
    hold() {
      holding = true;
    },
    releaseAll() {
      holding = false;
      for (const res of held.splice(0)) reply(res);
    },
    answer(s) {
      status = s;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function until(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  await expect.poll(check, { timeout: 5_000, interval: 20, message: what }).toBe(true);
}

describe('passive health counts 5xx answers', () => {
  it('an upstream answering 503 three times in a row is ejected; its siblings take every request', async () => {
    const bad = await startScripted('bad');
    const good = await startUpstream({ name: 'good' });
    bad.answer(503);
    const gw = await startGateway({
      svc: spec({
        upstreams: [bad.url, good.url],
        extra: { retries: 0, passiveHealth: { ejectMs: 60_000 } },
      }),
    });
    try {
      const url = `${gw.url}/svc/items`;
      const seen = [];
      for (let i = 0; i < 6; i++) seen.push(await who(url));
      // Round-robin: bad's three turns are its 503s (passed on: retries 0), then it is ejected.
      expect(seen).toEqual(['503', 'good', '503', 'good', '503', 'good']);
      expect(await viewOf(gw, 'svc', bad.url)).toMatchObject({
        health: 'ejected',
        ejections: 1,
        receivingTraffic: false,
      });
      for (let i = 0; i < 6; i++) expect(await who(url)).toBe('good');
      expect(bad.hits()).toBe(3);
      const samples = await scrape(gw);
      expect(
        value(samples, 'portcullis_upstream_ejections_total', { service: 'svc', upstream: bad.url }),
      ).toBe(1);
      expect(
        value(samples, 'portcullis_upstream_ejections_total', { service: 'svc', upstream: good.url }),
      ).toBe(0);
    } finally {
      await gw.close();
      await bad.close();
      await good.close();
    }
  });

  it('500 does not count by default, but does when listed in passiveHealth.statuses; a success ends the streak', async () => {
    const flaky = await startScripted('flaky');
    const good = await startUpstream({ name: 'good' });
    const gw = await startGateway({
      byDefault: spec({ basePath: '/default', upstreams: [flaky.url, good.url], extra: { retries: 0 } }),
      listed: spec({
        basePath: '/listed',
        upstreams: [flaky.url, good.url],
        extra: { retries: 0, passiveHealth: { statuses: [500, 503], ejectMs: 60_000 } },
      }),
    });
    try {
      flaky.answer(500);
      for (let i = 0; i < 8; i++) await who(`${gw.url}/default/items`);
      expect(await viewOf(gw, 'byDefault', flaky.url)).toMatchObject({
        health: 'healthy',
        consecutiveFailures: 0,
      });

      // listed: 500, 500, then a 200 ends the streak; 503 counts too: 503, 500, 500 ejects.
      const script = [500, 500, 200, 503, 500, 500];
      for (const status of script) {
        flaky.answer(status);
        expect(await who(`${gw.url}/listed/items`)).toBe(status === 200 ? 'flaky' : String(status));
        expect(await who(`${gw.url}/listed/items`)).toBe('good');
      }
      expect(await viewOf(gw, 'listed', flaky.url)).toMatchObject({ health: 'ejected', ejections: 1 });
      for (let i = 0; i < 4; i++) expect(await who(`${gw.url}/listed/items`)).toBe('good');
    } finally {
      await gw.close();
      await flaky.close();
      await good.close();
    }
  });

  it('ejection time grows with each ejection in a row', async () => {
    const bad = await startScripted('bad');
    const good = await startUpstream({ name: 'good' });
    bad.answer(502);
    const logs = captureLogs('info');
    const gw = await startGateway(
      {
        svc: spec({
          upstreams: [bad.url, good.url],
          extra: { retries: 0, passiveHealth: { failures: 1, ejectMs: 150, maxEjectMs: 60_000 } },
        }),
      },
      {},
      { logger: logs.logger },
    );
    try {
      const url = `${gw.url}/svc/items`;
      for (let n = 1; n <= 3; n++) {
        // Requests until bad's turn comes (it is back once its ejection ended) and ejects it again.
        await until(`ejection ${n}`, async () => {
          await who(url);
          return (await viewOf(gw, 'svc', bad.url))?.ejections === n;
        });
      }
      const ejections = logs.lines.filter((l) => l.msg === 'upstream ejected');
      expect(ejections.map((l) => [l.upstream, l.reason, l.ejections, l.ejectMs])).toEqual([
        [bad.url, 'status 502', 1, 150],
        [bad.url, 'status 502', 2, 300],
        [bad.url, 'status 502', 3, 450],
      ]);
      expect(
        value(await scrape(gw), 'portcullis_upstream_ejections_total', { service: 'svc', upstream: bad.url }),
      ).toBe(3);
    } finally {
      await gw.close();
      await bad.close();
      await good.close();
    }
  });
});

describe('circuit breaker', () => {
  it('beyond maxRequests in flight and maxPending waiting, answers 503 PC_UPSTREAM_OVERLOADED with Retry-After', async () => {
    const up = await startScripted('only');
    up.hold();
    const gw = await startGateway({
      svc: spec({ upstreams: [up.url], extra: { circuitBreaker: { maxRequests: 2, maxPending: 1 } } }),
    });
    try {
      const url = `${gw.url}/svc/items`;
      const first = [get(url), get(url)];
      await until('two requests held upstream', () => up.held() === 2);
      const third = get(url);
      await until('the third waiting', async () => (await viewOf(gw, 'svc', up.url))?.pending === 1);
      expect(await viewOf(gw, 'svc', up.url)).toMatchObject({ inFlight: 2, pending: 1 });
      const during = await scrape(gw);
      const series = { service: 'svc', upstream: up.url };
      expect(value(during, 'portcullis_upstream_requests_in_flight', series)).toBe(2);
      expect(value(during, 'portcullis_upstream_requests_pending', series)).toBe(1);

      const refused = await get(url);
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(refused.body)).toMatchObject({ code: 'PC_UPSTREAM_OVERLOADED', status: 503 });
      expect(refused.body).not.toContain('127.0.0.1');
      expect(up.hits()).toBe(2);

      up.releaseAll();
      const answers = await Promise.all([...first, third]);
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
      // The waiting request went upstream once a slot freed; the refused one never did.
      expect(up.hits()).toBe(3);
      expect(await viewOf(gw, 'svc', up.url)).toMatchObject({ inFlight: 0, pending: 0 });
      const samples = await scrape(gw);
      const labels = { service: 'svc', upstream: up.url };
      expect(
        value(samples, 'portcullis_upstream_breaker_rejections_total', { ...labels, reason: 'max-pending' }),
      ).toBe(1);
      expect(
        value(samples, 'portcullis_upstream_breaker_rejections_total', {
          ...labels,
          reason: 'pending-timeout',
        }),
      ).toBe(0);
    } finally {
      up.releaseAll();
      await gw.close();
      await up.close();
    }
  });

  it('a request waits at most timeoutMs for a slot, then gets 503 without reaching the upstream', async () => {
    // Streams a byte every 50 ms until told to stop: busy far longer than timeoutMs, yet never idle
    // long enough for the body timeout, so its slot stays taken.
    let streaming = true;
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'text/plain' });
      const tick = setInterval(() => {
        if (streaming) res.write('.');
        else {
          clearInterval(tick);
          res.end();
        }
      }, 50);
      res.on('close', () => clearInterval(tick));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const upUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const gw = await startGateway({
      svc: spec({
        upstreams: [upUrl],
        extra: { retries: 0, timeoutMs: 300, circuitBreaker: { maxRequests: 1, maxPending: 5 } },
      }),
    });
    try {
      const url = `${gw.url}/svc/items`;
      const busy = await request(url);
      expect(busy.statusCode).toBe(200);
      const waited = await get(url);
      expect(waited.status).toBe(503);
      expect(JSON.parse(waited.body)).toMatchObject({ code: 'PC_UPSTREAM_OVERLOADED' });
      expect(waited.headers['retry-after']).toBe('1');
      // The waiting one never reached the upstream; the busy one ends whole once it stops.
      expect(hits).toBe(1);
      streaming = false;
      expect((await busy.body.text()).length).toBeGreaterThan(0);
      await scrapeUntil(
        () => scrape(gw),
        (s) =>
          value(s, 'portcullis_upstream_breaker_rejections_total', {
            service: 'svc',
            upstream: upUrl,
            reason: 'pending-timeout',
          }) === 1,
      );
    } finally {
      streaming = false;
      await gw.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('holds for HTTP/2 clients too: the refused stream gets 503 problem+json with Retry-After', async () => {
    const up = await startScripted('only');
    up.hold();
    const ca = await createCa();
    const certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    const gw = await startGateway(
      { svc: spec({ upstreams: [up.url], extra: { circuitBreaker: { maxRequests: 1, maxPending: 0 } } }) },
      { listen: { https: { port: 0, host: '127.0.0.1', ...pair } } },
    );
    try {
      const origin = `https://localhost:${new URL(gw.addresses.https ?? '').port}`;
      const held = h2Request(origin, ca.cert, '/svc/items');
      await until('one stream held upstream', () => up.held() === 1);
      const refused = await h2Request(origin, ca.cert, '/svc/items/7');
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(JSON.parse(refused.body)).toMatchObject({ code: 'PC_UPSTREAM_OVERLOADED' });
      up.releaseAll();
      expect((await held).status).toBe(200);
      expect(up.hits()).toBe(1);
    } finally {
      up.releaseAll();
      await gw.close();
      await up.close();
      await removeCertDir(certDir);
    }
  });

  it('a full upstream sits out while another has a free slot', async () => {
    const a = await startScripted('a');
    const b = await startUpstream({ name: 'b' });
    a.hold();
    const gw = await startGateway({
      svc: spec({ upstreams: [a.url, b.url], extra: { circuitBreaker: { maxRequests: 1, maxPending: 0 } } }),
    });
    try {
      const url = `${gw.url}/svc/items`;
      const held = get(url);
      await until('a holds one request', () => a.held() === 1);
      // Round-robin would give a every other turn; while it is full, b takes them all.
      for (let i = 0; i < 4; i++) expect(await who(url)).toBe('b');
      a.releaseAll();
      expect((await held).status).toBe(200);
      expect(a.hits()).toBe(1);
    } finally {
      a.releaseAll();
      await gw.close();
      await a.close();
      await b.close();
    }
  });
});

describe('locality: preferZone', () => {
  it("sends traffic to the gateway's zone while it has a healthy upstream, fails over to the others, and back", async () => {
    const ups = await Promise.all(['near', 'far1', 'far2'].map((name) => startUpstream({ name })));
    const [near, far1, far2] = ups as [TestUpstream, TestUpstream, TestUpstream];
    const logs = captureLogs('info');
    const gw = await startGateway(
      {
        zoned: spec({
          basePath: '/zoned',
          upstreams: [
            { url: near.url, zone: 'eu-1a' },
            { url: far1.url, zone: 'eu-1b' },
            { url: far2.url, zone: 'eu-1b' },
          ] as never,
          extra: {
            preferZone: true,
            healthCheck: { path: '/health', intervalMs: 50, unhealthyAfter: 1, healthyAfter: 1 },
          },
        }),
        // The same upstreams without preferZone: every zone alike.
        spread: spec({ basePath: '/spread', upstreams: ups.map((u) => u.url) }),
      },
      { zone: 'eu-1a' },
      { logger: logs.logger },
    );
    try {
      const zoned = `${gw.url}/zoned/items`;
      const seen = async (n: number, url = zoned) => {
        const out: string[] = [];
        for (let i = 0; i < n; i++) out.push(await who(url));
        return out;
      };
      expect(await seen(6)).toEqual(Array(6).fill('near'));
      expect((await seen(6, `${gw.url}/spread/items`)).sort()).toEqual(
        ['far1', 'far1', 'far2', 'far2', 'near', 'near'].sort(),
      );
      expect((await upstreams(gw)).zone).toBe('eu-1a');
      expect((await upstreams(gw)).services.zoned).toMatchObject({ preferZone: true, inZone: true });

      near.setHealth(503);
      await until('failed over', async () => (await who(zoned)) !== 'near');
      expect((await seen(6)).sort()).toEqual(['far1', 'far1', 'far1', 'far2', 'far2', 'far2']);
      expect((await upstreams(gw)).services.zoned).toMatchObject({ inZone: false, panic: false });
      expect(
        logs.lines.some((l) => String(l.msg).startsWith("no eligible upstream in the gateway's zone")),
      ).toBe(true);

      near.setHealth(200);
      await until('back in zone', async () => (await who(zoned)) === 'near');
      expect(await seen(6)).toEqual(Array(6).fill('near'));
      expect((await upstreams(gw)).services.zoned?.inZone).toBe(true);
    } finally {
      await gw.close();
      await Promise.all(ups.map((u) => u.close()));
    }
  });

  it('fails over at once when the zone’s only upstream is ejected by passive health', async () => {
    const near = await startScripted('near');
    const far = await startUpstream({ name: 'far' });
    const gw = await startGateway(
      {
        svc: spec({
          upstreams: [
            { url: near.url, zone: 'z1' },
            { url: far.url, zone: 'z2' },
          ] as never,
          extra: {
            retries: 1,
            retryOn: ['connect-failure', 503],
            preferZone: true,
            passiveHealth: { failures: 1 },
          },
        }),
      },
      { zone: 'z1' },
    );
    try {
      const url = `${gw.url}/svc/items`;
      expect(await who(url)).toBe('near');
      near.answer(503);
      // The 503 ejects near; the retry goes to the other zone: the client sees no failure.
      expect(await who(url)).toBe('far');
      for (let i = 0; i < 4; i++) expect(await who(url)).toBe('far');
      expect(near.hits()).toBe(2);
    } finally {
      await gw.close();
      await near.close();
      await far.close();
    }
  });
});

describe('a reload that changes some upstreams', () => {
  it('keeps the state of unchanged URLs, drops removed ones and starts added ones healthy', async () => {
    const kept = await startScripted('kept');
    const removed = await startUpstream({ name: 'removed' });
    const added = await startUpstream({ name: 'added' });
    const doc = (urls: string[], extra: Record<string, unknown>) =>
      spec({
        upstreams: urls,
        extra: { retries: 0, passiveHealth: { failures: 1, ejectMs: 60_000 }, ...extra },
      });
    const gw = await startGateway({ svc: doc([DEAD, kept.url, removed.url], {}) });
    try {
      const url = `${gw.url}/svc/items`;
      // Round-robin: DEAD's turn fails and ejects it; kept holds the next request in flight.
      expect(await who(url)).toBe('502');
      kept.hold();
      const inFlight = get(url);
      await until('kept holds one request', () => kept.held() === 1);
      const before = await upstreams(gw);
      expect(before.services.svc?.upstreams.map((u) => [u.url, u.health, u.ejections, u.inFlight])).toEqual([
        [DEAD, 'ejected', 1, 0],
        [kept.url, 'healthy', 0, 1],
        [removed.url, 'healthy', 0, 0],
      ]);

      // A changed upstream block (one removed, one added, a new timeout and weights).
      await gw.writeSpec(
        'svc',
        doc([DEAD, kept.url, added.url], { timeoutMs: 20_000, loadBalancing: 'weighted' }),
      );
      const result = await gw.gateway.runtime.reload();
      expect(result.ok).toBe(true);
      expect(result.version).not.toBe(before.version);

      const after = await upstreams(gw);
      expect(after.services.svc?.loadBalancing).toBe('weighted');
      expect(after.services.svc?.upstreams.map((u) => [u.url, u.health, u.ejections, u.inFlight])).toEqual([
        [DEAD, 'ejected', 1, 0],
        [kept.url, 'healthy', 0, 1],
        [added.url, 'healthy', 0, 0],
      ]);
      // Still ejected: no request goes to DEAD (no 502), none to the removed upstream.
      kept.releaseAll();
      expect((await inFlight).status).toBe(200);
      const seen = [];
      for (let i = 0; i < 6; i++) seen.push(await who(url));
      expect(seen.sort()).toEqual(['added', 'added', 'added', 'kept', 'kept', 'kept']);
      expect(removed.seen.length).toBe(0);
      // The request that was in flight across the reload gave its slot back to the kept state.
      expect(await viewOf(gw, 'svc', kept.url)).toMatchObject({ inFlight: 0 });
    } finally {
      kept.releaseAll();
      await gw.close();
      await Promise.all([kept.close(), removed.close(), added.close()]);
    }
  });
});

describe('GET /upstreams (admin port)', () => {
  it('lists every forwarding group with each upstream’s URL, zone, weight, health, counts and breaker limits', async () => {
    const a = await startUpstream({ name: 'a' });
    const gw = await startGateway(
      {
        shop: spec({
          basePath: '/shop',
          upstreams: [{ url: a.url, weight: 3, zone: 'z1' }, { url: DEAD }] as never,
          extra: { retries: 0, loadBalancing: 'weighted', circuitBreaker: { maxRequests: 50 } },
        }),
        mocked: { ...spec({ basePath: '/mocked' }), 'x-portcullis': { basePath: '/mocked', mock: true } },
      },
      { zone: 'z1' },
    );
    try {
      // weighted 3:1: the fourth pick is DEAD's, a connection failure.
      for (let i = 0; i < 4; i++) await who(`${gw.url}/shop/items`);
      const body = await upstreams(gw);
      expect(body.zone).toBe('z1');
      expect(body.version).toMatch(/^[0-9a-f]+$/);
      // A mock service has no upstream group.
      expect(Object.keys(body.services)).toEqual(['shop']);
      expect(body.services.shop).toEqual({
        loadBalancing: 'weighted',
        preferZone: false,
        panic: false,
        inZone: null,
        circuitBreaker: { maxRequests: 50, maxPending: 1024 },
        passiveHealth: { failures: 3, statuses: [502, 503, 504], ejectMs: 10_000, maxEjectMs: 300_000 },
        upstreams: [
          {
            url: a.url,
            zone: 'z1',
            weight: 3,
            health: 'healthy',
            ejectedUntil: null,
            receivingTraffic: true,
            consecutiveFailures: 0,
            ejections: 0,
            inFlight: 0,
            pending: 0,
          },
          {
            url: DEAD,
            zone: null,
            weight: 1,
            health: 'healthy',
            ejectedUntil: null,
            receivingTraffic: true,
            consecutiveFailures: 1,
            ejections: 0,
            inFlight: 0,
            pending: 0,
          },
        ],
      });
      // Operator-only like the rest of the admin port: a foreign Host is refused.
      const foreign = await request(`${gw.addresses.admin}/upstreams`, { headers: { host: 'evil.example' } });
      expect(foreign.statusCode).toBe(421);
      expect(await foreign.body.text()).not.toContain(a.url);
    } finally {
      await gw.close();
      await a.close();
    }
  });
});

describe('GET /upstreams with workers: 2', () => {
  it('shows the workers’ groups merged (worst health, summed in-flight), not the idle primary’s', async () => {
    const bad = await startScripted('bad');
    const good = await startUpstream({ name: 'good' });
    bad.answer(503);
    const gw = await startCliGateway({
      config: { workers: 2, zone: 'z1' },
      startTimeoutMs: 45_000,
      specs: {
        svc: spec({
          upstreams: [{ url: bad.url, zone: 'z2' }, { url: good.url }] as never,
          extra: { retries: 0, passiveHealth: { failures: 1, ejectMs: 60_000 } },
        }),
      },
    });
    try {
      // Fresh connections, so the kernel spreads them over both workers; each ejects bad on its turn.
      for (let i = 0; i < 20; i++) {
        const res = await request(`${gw.url}/svc/items`, { reset: true });
        await res.body.dump();
      }
      const res = await request(`${gw.admin}/upstreams`);
      const body = (await res.body.json()) as UpstreamsBody;
      expect(body.zone).toBe('z1');
      // Each worker ejected bad on its first turn; the merged view shows the worst any worker sees.
      expect(body.services.svc?.upstreams).toEqual([
        expect.objectContaining({ url: bad.url, zone: 'z2', health: 'ejected', inFlight: 0, pending: 0 }),
        expect.objectContaining({ url: good.url, zone: null, health: 'healthy', inFlight: 0, pending: 0 }),
      ]);
      expect(body.services.svc?.upstreams[0]?.ejections).toBe(1);
    } finally {
      await gw.stop();
      await bad.close();
      await good.close();
    }
  }, 60_000);
});

describe('a reload the workers refuse (commit vote)', () => {
  it('the group still serving keeps probing its upstreams', async () => {
    let probes = 0;
    const server = createServer((req, res) => {
      if (req.url === '/health') probes++;
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-vote-health-'));
    await mkdir(join(dir, 'openapi'));
    const write = (urls: string[]) =>
      writeFile(
        join(dir, 'openapi', 'svc.yaml'),
        stringify(spec({ upstreams: urls, extra: { healthCheck: { path: '/health', intervalMs: 50 } } })),
      );
    await write([url]);
    const runtime = new Runtime({
      config: resolveGatewayConfig({ watch: false }, { baseDir: dir, env: {} }),
      logger: createLogger('silent'),
      store: createMemoryStore(),
      kinds: POLICY_KINDS,
      beforeSwap: async () => false,
    });
    try {
      await runtime.load();
      await until('probing', () => probes >= 2);
      await write([url, DEAD]); // a changed upstream block: a new group is built, then refused
      expect((await runtime.reload()).ok).toBe(false);
      const before = probes;
      await until('still probing after the refused reload', () => probes >= before + 3);
    } finally {
      await runtime.close();
      await rm(dir, { recursive: true, force: true });
      await new Promise((r) => server.close(r));
    }
  });
});
