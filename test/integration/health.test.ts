import type { AddressInfo } from 'node:net';
import { createServer, type Socket } from 'node:net';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import type { UpstreamGroup } from '../../src/upstream/group.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** Poll `cond` every `everyMs` until it holds; fail naming `what` after `timeoutMs`. */
async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  everyMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** GET through the gateway: status and the name of the upstream that answered ('' if none). */
async function get(url: string): Promise<{ status: number; upstream: string }> {
  const res = await request(url);
  await res.body.dump();
  return { status: res.statusCode, upstream: String(res.headers['x-upstream'] ?? '') };
}

/**
 * Count the health probes an upstream answers, and for each proxied request how many probes it
 * had answered when that request arrived. Listeners run in order on the same tick, so the count
 * is exact relative to `setHealth` calls made by the test.
 */
function trackProbes(up: TestUpstream): { probes(): number; proxiedAt: number[] } {
  let probes = 0;
  const proxiedAt: number[] = [];
  up.server.on('request', (req) => {
    if ((req.url ?? '').endsWith('/health')) probes++;
    else proxiedAt.push(probes);
  });
  return { probes: () => probes, proxiedAt };
}

/** The upstream group serving the gateway's (single) service in its current snapshot. */
function groupOf(gw: TestGateway): UpstreamGroup {
  for (const entry of gw.gateway.runtime.snapshot?.entries.values() ?? [])
    if (entry.target) return entry.target.group;
  throw new Error('no forwarding route in the snapshot');
}

describe('passive ejection and active readmission', () => {
  it('an upstream killed mid-run is ejected and readmitted after healthyAfter probes, with no failed GET', async () => {
    const ups = await Promise.all(['a', 'b', 'c'].map((name) => startUpstream({ name })));
    const [a, b, c] = ups as [TestUpstream, TestUpstream, TestUpstream];
    let revived: TestUpstream | undefined;
    let gw: TestGateway | undefined;
    const statuses: Record<string, number> = {};
    const served: string[] = [];
    let stop = false;
    let loops: Promise<void>[] = [];
    try {
      const g = await startGateway({
        svc: spec({
          upstreams: ups.map((u) => u.url),
          extra: {
            retries: 1,
            // unhealthyAfter 50 probes = 5 s: within this test only a passive failure can eject.
            healthCheck: {
              path: '/health',
              intervalMs: 100,
              timeoutMs: 1_000,
              unhealthyAfter: 50,
              healthyAfter: 2,
            },
            passiveHealth: { failures: 1, ejectMs: 60_000 },
          },
        }),
      });
      gw = g;
      // One sequential client and three more in parallel, all GETs, running throughout.
      const client = async () => {
        while (!stop) {
          try {
            const { status, upstream } = await get(`${g.url}/svc/items`);
            statuses[status] = (statuses[status] ?? 0) + 1;
            served.push(upstream);
          } catch (err) {
            const key = `error ${(err as { code?: string }).code ?? String(err)}`;
            statuses[key] = (statuses[key] ?? 0) + 1;
          }
        }
      };
      loops = Array.from({ length: 4 }, client);
      await until(
        'all three upstreams to serve',
        () => a.seen.length > 5 && b.seen.length > 5 && c.seen.length > 5,
      );

      await c.close();
      const group = groupOf(g);
      await until('c to leave the eligible set', () => !group.eligible().some((t) => t.url === c.url), 2_000);
      const mark = served.length;
      await until('100 more answers', () => served.length >= mark + 100);
      expect(served.slice(mark)).not.toContain('c');
      expect(group.eligible().map((t) => t.url)).toEqual([a.url, b.url]);

      revived = await startUpstream({ name: 'c', port: c.port });
      const probes = trackProbes(revived);
      const revivedSeen = revived.seen;
      await until('the revived c to get traffic', () => revivedSeen.length > 0);
      // Not a single proxied request before the second good probe: readmission is the active check's.
      expect(probes.proxiedAt[0]).toBeGreaterThanOrEqual(2);
      const markAfter = served.length;
      await until('60 more answers', () => served.length >= markAfter + 60);
      // Back in the rotation, c takes its turn again.
      expect(served.slice(markAfter).filter((n) => n === 'c').length).toBeGreaterThan(10);
    } finally {
      stop = true;
      await Promise.all(loops);
      await gw?.close();
      await Promise.all([a.close(), b.close(), revived?.close()]);
    }
    expect(Object.keys(statuses)).toEqual(['200']);
    expect(statuses['200']).toBeGreaterThan(200);
  });
});

describe('active health checks', () => {
  it('take an upstream out after unhealthyAfter failed probes and back after healthyAfter good ones; none healthy is 503', async () => {
    const ups = await Promise.all(['a', 'b'].map((name) => startUpstream({ name })));
    const [a, b] = ups as [TestUpstream, TestUpstream];
    let gw: TestGateway | undefined;
    try {
      gw = await startGateway({
        svc: spec({
          upstreams: ups.map((u) => u.url),
          extra: { healthCheck: { path: '/health', intervalMs: 100, unhealthyAfter: 3, healthyAfter: 2 } },
        }),
      });
      const url = `${gw.url}/svc/items`;
      const pa = trackProbes(a);
      // Round-robin over two: with both eligible, no two answers in a row come from b.
      const seq: string[] = [];
      await until('both upstreams to serve', async () => {
        seq.push((await get(url)).upstream);
        return seq.includes('a') && seq.includes('b');
      });

      a.setHealth(503);
      const bad0 = pa.probes();
      const proxied0 = pa.proxiedAt.length;
      const after: string[] = [];
      await until(
        'a to be skipped (4 answers in a row from b)',
        async () => {
          const { status, upstream } = await get(url);
          expect(status).toBe(200);
          after.push(upstream);
          return after.slice(-4).join() === 'b,b,b,b';
        },
        5_000,
        1,
      );
      const badAtArrival = pa.proxiedAt.slice(proxied0).map((p) => p - bad0);
      // Still served after the first failed probe, never after the third, and out once three failed.
      expect(badAtArrival.some((n) => n >= 1)).toBe(true);
      expect(Math.max(...badAtArrival)).toBeLessThanOrEqual(3);
      expect(pa.probes() - bad0).toBeGreaterThanOrEqual(3);

      b.setHealth(503);
      await until('no healthy upstream', async () => (await get(url)).status === 503);
      const seenBefore = a.seen.length + b.seen.length;
      const res = await request(url);
      const body = (await res.body.json()) as { code: string; status: number };
      expect(res.statusCode).toBe(503);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(body).toMatchObject({ code: 'PC_UPSTREAM_UNAVAILABLE', status: 503 });
      expect(String(res.headers['retry-after'])).toMatch(/^[1-9]\d*$/);
      expect(a.seen.length + b.seen.length).toBe(seenBefore);

      const good0 = pa.probes();
      const recovered0 = pa.proxiedAt.length;
      a.setHealth(200);
      b.setHealth(200);
      const back: string[] = [];
      await until('both upstreams to serve again', async () => {
        const { status, upstream } = await get(url);
        if (status === 200) back.push(upstream);
        return back.includes('a') && back.includes('b');
      });
      expect(pa.proxiedAt[recovered0]! - good0).toBeGreaterThanOrEqual(2);
    } finally {
      await gw?.close();
      await Promise.all(ups.map((u) => u.close()));
    }
  });
});

describe('a hung health endpoint', () => {
  it('gets one probe at a time, each cut off after timeoutMs, and is taken out', async () => {
    // Accepts connections and reads requests, never answers. A probe is in flight from its request
    // until the gateway gives up on its connection (the server reads EOF, or a reset).
    const sockets = new Set<Socket>();
    let probes = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const hung = createServer((socket) => {
      sockets.add(socket);
      let probing = false;
      const done = () => {
        if (probing) inFlight--;
        probing = false;
      };
      socket.on('data', (d) => {
        if (!d.toString('latin1').startsWith('GET /health ')) return;
        probes++;
        probing = true;
        maxInFlight = Math.max(maxInFlight, ++inFlight);
      });
      socket.on('end', done);
      socket.on('error', done);
      socket.on('close', () => {
        done();
        sockets.delete(socket);
      });
    });
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const hungUrl = `http://127.0.0.1:${(hung.address() as AddressInfo).port}`;
    let good: TestUpstream | undefined;
    let gw: TestGateway | undefined;
    try {
      good = await startUpstream({ name: 'good' });
      // Probes are due every 20 ms but each takes 300: without one-at-a-time they would pile up.
      gw = await startGateway({
        svc: spec({
          upstreams: [hungUrl, good.url],
          extra: {
            healthCheck: {
              path: '/health',
              intervalMs: 20,
              timeoutMs: 300,
              unhealthyAfter: 2,
              healthyAfter: 1,
            },
          },
        }),
      });
      const group = groupOf(gw);
      await until('the hung upstream to be taken out', () => group.eligible().length === 1, 3_000);
      expect(group.eligible()[0]?.url).toBe(good.url);
      // unhealthyAfter probes failed, one after the other (piled up, ~30 would be in flight by now).
      expect(probes).toBeGreaterThanOrEqual(2);
      expect(maxInFlight).toBe(1);
      for (let i = 0; i < 4; i++)
        expect(await get(`${gw.url}/svc/items`)).toEqual({ status: 200, upstream: 'good' });
    } finally {
      await gw?.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => hung.close(r));
      await good?.close();
    }
  });
});

describe('reload with unchanged upstream config', () => {
  it('keeps the pools (no new connection), the round-robin position and the ejection', async () => {
    const ups = await Promise.all(['a', 'b', 'c'].map((name) => startUpstream({ name })));
    const [a, b, c] = ups as [TestUpstream, TestUpstream, TestUpstream];
    let revived: TestUpstream | undefined;
    const extra = { retries: 1, passiveHealth: { failures: 1, ejectMs: 60_000 } };
    const upstreams = ups.map((u) => u.url);
    let gw: TestGateway | undefined;
    try {
      await c.close();
      gw = await startGateway({ svc: spec({ upstreams, extra, operations: { 'GET /items': 'listItems' } }) });
      const url = `${gw.url}/svc/items`;
      // a, b, then c refuses: ejected, and the request is retried on a.
      const first = [];
      for (let i = 0; i < 3; i++) first.push(await get(url));
      expect(first).toEqual([
        { status: 200, upstream: 'a' },
        { status: 200, upstream: 'b' },
        { status: 200, upstream: 'a' },
      ]);
      // c is back up, but stays ejected for ejectMs (no active checks here).
      revived = await startUpstream({ name: 'c', port: c.port });
      const before: string[] = [];
      for (let i = 0; i < 8; i++) before.push((await get(url)).upstream);
      expect(before).toEqual(['b', 'a', 'b', 'a', 'b', 'a', 'b', 'a']);
      expect([a.connections(), b.connections()]).toEqual([1, 1]);
      const group = groupOf(gw);

      await gw.writeSpec(
        'svc',
        spec({ upstreams, extra, operations: { 'GET /items': 'listItems', 'GET /extra': 'extra' } }),
      );
      const result = await gw.gateway.runtime.reload();
      expect(result.ok).toBe(true);
      expect(groupOf(gw)).toBe(group);

      const later: string[] = [];
      later.push((await get(`${gw.url}/svc/extra`)).upstream);
      for (let i = 0; i < 9; i++) later.push((await get(url)).upstream);
      // The rotation resumes where it was (a served last, so b is next; a new balancer would start
      // at a), and c is still ejected (a new group would send it every third request).
      expect(later).toEqual(['b', 'a', 'b', 'a', 'b', 'a', 'b', 'a', 'b', 'a']);
      expect([a.connections(), b.connections()]).toEqual([1, 1]);
      expect(revived.seen).toEqual([]);
    } finally {
      await gw?.close();
      await Promise.all([a.close(), b.close(), revived?.close()]);
    }
  });
});
