import { connect as h2connect } from 'node:http2';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { spec } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** How long the upstream holds the in-flight request: long enough to signal in the middle of it. */
const SLOW_MS = 1000;

describe('graceful shutdown of the CLI process', () => {
  let up: TestUpstream;
  let caPem: string;
  let certDir: string;
  let tlsPair: { cert: string; key: string };
  // One agent per test client; destroyed in afterAll so no socket outlives the file.
  const agents: Agent[] = [];
  const started: CliGateway[] = [];

  beforeAll(async () => {
    up = await startUpstream({ name: 'slow' });
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    tlsPair = await writeCerts(certDir, 'gateway', await ca.issue({ names: ['localhost'] }));
  });
  afterAll(async () => {
    // Only children still running (a failed test) get stopped here; stop() kills by PID after its bound.
    await Promise.all(
      started.filter((g) => g.child.exitCode === null && g.child.signalCode === null).map((g) => g.stop()),
    );
    await Promise.all(agents.map((a) => a.destroy()));
    await up?.close();
    if (certDir) await removeCertDir(certDir);
  });

  /** `portcullis start` (child process) with one service forwarding to `up`. */
  async function startProject(
    limits: Record<string, number>,
    opts: { https?: boolean } = {},
  ): Promise<CliGateway> {
    const listen = opts.https
      ? // http2 is the default: one TLS server speaking h2 and, through allowHTTP1, HTTP/1.1.
        { http: { port: 0, host: '127.0.0.1' }, https: { port: 0, host: '127.0.0.1', ...tlsPair } }
      : undefined;
    const gw = await startCliGateway({
      specs: { svc: spec({ basePath: '/svc', upstreams: [up.url] }) },
      config: { limits, ...(listen ? { listen } : {}) },
    });
    started.push(gw);
    return gw;
  }

  /** The `https://localhost:<port>` address from the child's "portcullis listening" line. */
  function httpsOrigin(gw: CliGateway): string {
    const line = gw.logs.find((l) => l.msg === 'portcullis listening');
    return String(line?.https).replace('127.0.0.1', 'localhost');
  }

  /** Resolves once the child has logged `msg` (checked as each chunk of stdout is parsed). */
  function logged(gw: CliGateway, msg: string, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const stdout = gw.child.stdout;
      const done = (err?: Error) => {
        clearTimeout(timer);
        stdout?.off('data', check);
        if (err) reject(err);
        else resolve();
      };
      // Registered after the helper's own parser, so gw.logs already holds the chunk's lines.
      const check = () => {
        if (gw.logs.some((l) => l.msg === msg)) done();
      };
      const timer = setTimeout(
        () => done(new Error(`no "${msg}" log line within ${timeoutMs} ms`)),
        timeoutMs,
      );
      stdout?.on('data', check);
      check();
    });
  }

  /** A request on its own connection, so the drain has exactly one in-flight request to wait for. */
  function send(url: string) {
    const dispatcher = new Agent({ connections: 1, connect: { ca: caPem } });
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

  /** A GET to /svc/slow that outlives any grace period; resolves how it ended for the client. */
  function hangingRequest(origin: string) {
    return send(`${origin}/svc/slow?ms=20000`).then(
      (res) => res.body.text().then(() => ({ status: res.statusCode })),
      (err: Error & { code?: string }) => ({ error: err.code ?? err.message }),
    );
  }

  it('SIGTERM mid-request: the request completes, readiness drops, new connections are refused, exit 0', async () => {
    const gw = await startProject({ shutdownGraceMs: 8000 });
    const admin = gw.admin as string;
    expect((await request(`${admin}/readyz`)).statusCode).toBe(200);

    const arrived = upstreamReceived('/slow');
    const inFlight = send(`${gw.url}/svc/slow?ms=${SLOW_MS}`);
    await arrived;

    const signalled = Date.now();
    const exited = gw.stop(); // SIGTERM now
    await logged(gw, 'shutting down: draining in-flight requests');

    // During the drain the admin port still answers, and says "not ready" so balancers stop sending.
    const readyz = await request(`${admin}/readyz`);
    expect(readyz.statusCode).toBe(503);
    expect(await readyz.body.json()).toMatchObject({ ready: false });

    // The public listener no longer accepts connections.
    await expect(send(`${gw.url}/svc/items`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    const res = await inFlight;
    expect(res.statusCode).toBe(200);
    // Its answer ends the keep-alive connection: the client sends nothing more on it.
    expect(res.headers.connection).toBe('close');
    expect(await res.body.json()).toMatchObject({ upstream: 'slow', url: `/slow?ms=${SLOW_MS}` });

    expect(await exited).toBe(0);
    const took = Date.now() - signalled;
    // The drain waited for the request rather than cutting it, and no longer than it needed.
    expect(took).toBeGreaterThanOrEqual(SLOW_MS / 2);
    expect(took).toBeLessThan(SLOW_MS + 3000);
    expect(gw.logs.some((l) => l.msg === 'shutdown complete')).toBe(true);
    await expect(send(`${admin}/readyz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('an idle keep-alive connection does not hold the drain open', async () => {
    const gw = await startProject({ shutdownGraceMs: 8000 });
    const idle = await send(`${gw.url}/svc/items`);
    await idle.body.dump();
    const signalled = Date.now();
    expect(await gw.stop()).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(2000);
  });

  it('a request hanging past limits.shutdownGraceMs is cut and the process still exits within about that bound', async () => {
    const graceMs = 300;
    const gw = await startProject({ shutdownGraceMs: graceMs });
    const arrived = upstreamReceived('/slow');
    const hanging = hangingRequest(gw.url);
    await arrived;

    const signalled = Date.now();
    expect(await gw.stop()).toBe(0);
    const took = Date.now() - signalled;
    expect(took).toBeGreaterThanOrEqual(graceMs - 50);
    expect(took).toBeLessThan(graceMs + 2000);
    // The client learns its request was cut (no fake 200).
    expect(await hanging).not.toEqual({ status: 200 });
  });

  describe('over HTTPS (one TLS listener for HTTP/2 and HTTP/1.1)', () => {
    /** One GET over an HTTP/2 session that then stays open, idle. */
    async function h2Get(origin: string, path: string) {
      const session = h2connect(origin, { ca: caPem });
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
      const gw = await startProject({ shutdownGraceMs: 8000 }, { https: true });
      const https = httpsOrigin(gw);
      const idleH1 = await send(`${https}/svc/items`);
      expect(idleH1.statusCode).toBe(200);
      await idleH1.body.dump();
      const idleH2 = await h2Get(https, '/svc/items');
      expect(idleH2.status).toBe(200);

      const arrived = upstreamReceived('/slow');
      const inFlight = send(`${https}/svc/slow?ms=${SLOW_MS}`);
      await arrived;
      const signalled = Date.now();
      const exited = gw.stop();
      try {
        const res = await inFlight;
        expect(res.statusCode).toBe(200);
        expect(await res.body.json()).toMatchObject({ upstream: 'slow' });
        expect(await exited).toBe(0);
        expect(Date.now() - signalled).toBeLessThan(SLOW_MS + 3000);
      } finally {
        idleH2.session.destroy();
      }
    });

    it('a request hanging past shutdownGraceMs is cut and the process exits within about that bound', async () => {
      const graceMs = 300;
      const gw = await startProject({ shutdownGraceMs: graceMs }, { https: true });
      const arrived = upstreamReceived('/slow');
      const hanging = hangingRequest(httpsOrigin(gw));
      await arrived;
      const signalled = Date.now();
      expect(await gw.stop()).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(graceMs + 2000);
      expect(await hanging).not.toEqual({ status: 200 });
    });
  });
});
