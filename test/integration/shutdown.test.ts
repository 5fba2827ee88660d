import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as h2connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCa, writeCerts } from '../helpers/certs.ts';
import { spec } from '../helpers/gateway.ts';
import { type CliGateway, killChildren, startCli } from '../helpers/spawn.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** How long the upstream holds the in-flight request: long enough to signal in the middle of it. */
const SLOW_MS = 1000;

describe('graceful shutdown of the CLI process', () => {
  let up: TestUpstream;
  let root: string;
  // One agent per test client; closed in afterAll so no socket outlives the file.
  const agents: Agent[] = [];

  beforeAll(async () => {
    up = await startUpstream({ name: 'slow' });
    root = await mkdtemp(join(tmpdir(), 'portcullis-shutdown-'));
  });
  afterAll(async () => {
    killChildren();
    await Promise.all(agents.map((a) => a.destroy()));
    await up?.close();
    await rm(root, { recursive: true, force: true });
  });

  /** A project folder with one service forwarding to `up`, started as `portcullis start --config`. */
  async function startProject(
    name: string,
    limits: Record<string, number>,
    opts: { https?: boolean } = {},
  ): Promise<CliGateway> {
    const dir = join(root, name);
    await mkdir(join(dir, 'openapi'), { recursive: true });
    await writeFile(
      join(dir, 'openapi', 'svc.yaml'),
      stringify(spec({ basePath: '/svc', upstreams: [up.url] })),
    );
    const config: Record<string, unknown> = { watch: false, limits };
    const env: Record<string, string> = {};
    if (opts.https) {
      const pair = await writeCerts(dir, 'gateway', await (await createCa()).issue({ names: ['localhost'] }));
      // http2 is the default: one TLS server speaking h2 and, through allowHTTP1, HTTP/1.1.
      config.listen = { https: { port: 8443, ...pair } };
      env.PORTCULLIS_HTTPS_PORT = '0';
    }
    await writeFile(join(dir, 'gateway.yaml'), stringify(config));
    return startCli(['start', '--config', 'gateway.yaml'], { cwd: dir, env });
  }

  /** A request on its own connection, so the drain has exactly one in-flight request to wait for. */
  async function send(url: string) {
    const dispatcher = new Agent({ connections: 1, connect: { ca: (await createCa()).cert } });
    agents.push(dispatcher);
    return request(url, { dispatcher, headersTimeout: 15_000, bodyTimeout: 15_000 });
  }

  /** Resolves when the upstream has received a request for `path` (so it is in flight at the gateway). */
  function upstreamReceived(path: string): Promise<void> {
    return new Promise((resolve) => {
      const onRequest = (req: { url?: string }) => {
        if (!req.url?.startsWith(path)) return;
        up.server.off('request', onRequest);
        resolve();
      };
      up.server.on('request', onRequest);
    });
  }

  it('SIGTERM mid-request: the request completes, readiness drops, new connections are refused, exit 0', async () => {
    const gw = await startProject('drain', { shutdownGraceMs: 8000 });
    const http = gw.addresses.http as string;
    const admin = gw.addresses.admin as string;
    expect((await request(`${admin}/readyz`)).statusCode).toBe(200);

    const arrived = upstreamReceived('/slow');
    const inFlight = send(`${http}/svc/slow?ms=${SLOW_MS}`);
    await arrived;

    const signalled = Date.now();
    process.kill(gw.pid, 'SIGTERM');
    await gw.waitForLog('shutting down: draining in-flight requests');

    // During the drain the admin port still answers, and says "not ready" so balancers stop sending.
    const readyz = await request(`${admin}/readyz`);
    expect(readyz.statusCode).toBe(503);
    expect(await readyz.body.json()).toMatchObject({ ready: false });

    // The public listener no longer accepts connections.
    await expect(send(`${http}/svc/items`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    const res = await inFlight;
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ upstream: 'slow', url: `/slow?ms=${SLOW_MS}` });

    const exit = await gw.waitForExit(8000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalled).toBeLessThan(SLOW_MS + 3000);
    // The drain waited for the request rather than cutting it.
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(SLOW_MS / 2);
    expect(gw.logs.some((l) => l.msg === 'shutdown complete')).toBe(true);
    await expect(send(`${admin}/readyz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('exits 0 without waiting for in-flight requests when nothing is in flight', async () => {
    const gw = await startProject('idle', { shutdownGraceMs: 8000 });
    // An idle keep-alive connection must not hold the drain open.
    const idle = await send(`${gw.addresses.http}/svc/items`);
    await idle.body.dump();
    const signalled = Date.now();
    process.kill(gw.pid, 'SIGTERM');
    expect(await gw.waitForExit(5000)).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalled).toBeLessThan(2000);
  });

  it('a request hanging past limits.shutdownGraceMs is cut and the process still exits within about that bound', async () => {
    const graceMs = 300;
    const gw = await startProject('hang', { shutdownGraceMs: graceMs });
    const arrived = upstreamReceived('/slow');
    const hanging = send(`${gw.addresses.http}/svc/slow?ms=20000`).then(
      (res) => res.body.text().then(() => ({ status: res.statusCode })),
      (err: Error & { code?: string }) => ({ error: err.code ?? err.message }),
    );
    await arrived;

    const signalled = Date.now();
    process.kill(gw.pid, 'SIGTERM');
    expect(await gw.waitForExit(5000)).toEqual({ code: 0, signal: null });
    const took = Date.now() - signalled;
    expect(took).toBeGreaterThanOrEqual(graceMs - 50);
    expect(took).toBeLessThan(graceMs + 2000);
    // The client learns its request was cut (no fake 200).
    expect(await hanging).not.toEqual({ status: 200 });
  });

  describe('over HTTPS (one TLS listener for HTTP/2 and HTTP/1.1)', () => {
    /** One GET over an HTTP/2 session that then stays open, idle. */
    async function h2Get(origin: string, path: string) {
      const session = h2connect(origin, { ca: (await createCa()).cert });
      session.on('error', () => {}); // the gateway closing the session is expected here
      const status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': path });
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        stream.resume();
      });
      return { status, session };
    }

    it('idle HTTP/1.1 keep-alive and HTTP/2 sessions do not hold the drain open; the busy one completes', async () => {
      const gw = await startProject('https-drain', { shutdownGraceMs: 8000 }, { https: true });
      const https = (gw.addresses.https as string).replace('127.0.0.1', 'localhost');
      const idleH1 = await send(`${https}/svc/items`);
      expect(idleH1.statusCode).toBe(200);
      await idleH1.body.dump();
      const idleH2 = await h2Get(https, '/svc/items');
      expect(idleH2.status).toBe(200);

      const arrived = upstreamReceived('/slow');
      const inFlight = send(`${https}/svc/slow?ms=${SLOW_MS}`);
      await arrived;
      const signalled = Date.now();
      process.kill(gw.pid, 'SIGTERM');
      try {
        const res = await inFlight;
        expect(res.statusCode).toBe(200);
        expect(await res.body.json()).toMatchObject({ upstream: 'slow' });
        expect(await gw.waitForExit(10_000)).toEqual({ code: 0, signal: null });
        expect(Date.now() - signalled).toBeLessThan(SLOW_MS + 3000);
      } finally {
        idleH2.session.destroy();
      }
    });

    it('a request hanging past shutdownGraceMs is cut and the process exits within about that bound', async () => {
      const graceMs = 300;
      const gw = await startProject('https-hang', { shutdownGraceMs: graceMs }, { https: true });
      const https = (gw.addresses.https as string).replace('127.0.0.1', 'localhost');
      const arrived = upstreamReceived('/slow');
      const hanging = send(`${https}/svc/slow?ms=20000`).then(
        (res) => res.body.text().then(() => ({ status: res.statusCode })),
        (err: Error & { code?: string }) => ({ error: err.code ?? err.message }),
      );
      await arrived;
      const signalled = Date.now();
      process.kill(gw.pid, 'SIGTERM');
      expect(await gw.waitForExit(5000)).toEqual({ code: 0, signal: null });
      expect(Date.now() - signalled).toBeLessThan(graceMs + 2000);
      expect(await hanging).not.toEqual({ status: 200 });
    });
  });
});
