import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startCliGateway } from '../helpers/cli.ts';
import { spec } from '../helpers/gateway.ts';
import { parsePrometheus, total } from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/portcullis.js');
/** Requests per test: several times the 64 KiB a pipe holds, in access-log lines. */
const REQUESTS = 600;
const CONCURRENCY = 20;

/**
 * Send `count` GETs to `url`, `CONCURRENCY` at a time; resolves the status codes (0: no answer,
 * e.g. refused once the gateway stopped listening) and the `X-Request-Id` of every answer received
 * whole.
 */
async function load(agent: Agent, url: string, count: number): Promise<number[] & { ids: string[] }> {
  const statuses = Object.assign([] as number[], { ids: [] as string[] });
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        const res = await request(url, { dispatcher: agent });
        await res.body.dump();
        statuses.push(res.statusCode);
        statuses.ids.push(String(res.headers['x-request-id']));
      } catch (err) {
        if (process.env.DEBUG_LOAD) console.error(err);
        statuses.push(0);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return statuses;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

describe('access log of a gateway process', () => {
  let up: TestUpstream;
  const agent = new Agent({ connections: CONCURRENCY });
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    up = await startUpstream({ keepBodies: false, delayMs: 5 });
  });
  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null && child.pid)
        process.kill(child.pid, 'SIGKILL');
    }
    await agent.close();
    await up?.close();
  });

  it('writes one line per request and loses none in a normal shutdown (SIGTERM with requests in flight)', async () => {
    const gw = await startCliGateway({ specs: { svc: spec({ basePath: '/svc', upstreams: [up.url] }) } });
    children.push(gw.child);
    const closed = once(gw.child, 'close');
    // SIGTERM while the load still runs: the drained requests are logged too.
    const statuses = load(agent, `${gw.url}/svc/items`, REQUESTS);
    await new Promise((r) => setTimeout(r, 200));
    const stopped = gw.stop();
    const done = await statuses;
    expect(await stopped).toBe(0);
    await closed;
    // Every answer the client got has its line. A request sent on a keep-alive connection the
    // drain had just ended (the HTTP/1.1 close race) gets no answer and no line: it was not run.
    const logged = new Set(
      gw.logs.filter((l) => l.msg === 'request' && l.status === 200).map((l) => l.reqId),
    );
    expect(done.ids.length).toBeGreaterThan(0);
    expect(done.ids.length).toBe(done.filter((s) => s === 200).length);
    expect(done.ids.filter((id) => !logged.has(id))).toEqual([]);
    // No request was processed and then cut: one that reached a connection the drain had ended is
    // dropped unread (the client may resend it), and in-flight answers carry `Connection: close`.
    expect(gw.logs.filter((l) => l.msg === 'request' && l.aborted === true)).toEqual([]);
    expect(gw.logs.at(-1)?.msg).toBe('shutdown complete');
  });

  it('drops and counts lines when stdout stalls, and keeps serving (stdout a pipe nobody reads)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-stall-'));
    try {
      await mkdir(join(dir, 'openapi'));
      await writeFile(
        join(dir, 'openapi', 'svc.yaml'),
        stringify(spec({ basePath: '/svc', upstreams: [up.url] })),
      );
      const [port, adminPort] = [await freePort(), await freePort()];
      await writeFile(
        join(dir, 'gateway.yaml'),
        stringify({
          listen: { http: { port, host: '127.0.0.1' } },
          admin: { port: adminPort, host: '127.0.0.1' },
          watch: false,
          logBufferBytes: 16384,
        }),
      );
      const env = Object.fromEntries(
        Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_')),
      );
      // stdout is a pipe this test never reads: once the pipe's buffer is full, writes stall.
      const child = spawn(process.execPath, [BIN, 'start', '--config', join(dir, 'gateway.yaml')], {
        cwd: dir,
        env,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      children.push(child);
      const exited = once(child, 'exit');
      const admin = `http://127.0.0.1:${adminPort}`;
      await expect
        .poll(async () => (await fetch(`${admin}/readyz`).catch(() => undefined))?.status, {
          timeout: 15_000,
          interval: 100,
        })
        .toBe(200);

      // Long paths make long lines (a 404 is logged like any answer): far more than the pipe
      // (or socket pair) under stdout holds.
      const statuses = await load(agent, `http://127.0.0.1:${port}/svc/${'x'.repeat(2000)}`, REQUESTS);
      expect(statuses.filter((s) => s === 404)).toHaveLength(REQUESTS);
      const metrics = parsePrometheus(await (await fetch(`${admin}/metrics`)).text());
      // 600 lines of ~2.3 KB: the pipe and the 16 KiB buffer hold far fewer than half of them.
      const dropped = total(metrics, 'portcullis_log_lines_dropped_total');
      expect(dropped).toBeGreaterThan(REQUESTS / 2);
      expect(dropped).toBeLessThanOrEqual(REQUESTS);
      expect(total(metrics, 'portcullis_http_requests_total')).toBeGreaterThanOrEqual(REQUESTS);

      // Shutdown waits a bounded time for the stalled stdout, then exits 0.
      process.kill(child.pid!, 'SIGTERM');
      const [code] = await exited;
      expect(code).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
