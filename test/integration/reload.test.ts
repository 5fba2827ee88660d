import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReloadResult, Runtime } from '../../src/runtime.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** Client loops hammering service A during the watched run. */
const LOOPS = 8;
/** The hammer runs at least this long, and until every reload step is done. */
const HAMMER_MS = 3000;
/**
 * A change must be served within this long of the file being written. Typical: 200-400 ms
 * (debounce 100 ms + load); the target is ~1 s, doubled because the hammer, the gateway and the
 * upstreams share this process's event loop on a possibly busy machine.
 */
const PICKUP_MS = 2000;
/** Gap between polls while waiting for a change to be served. */
const POLL_MS = 20;

const A_OPS = {
  'GET /items': 'listItems',
  'GET /items/{id}': 'getItem',
  'POST /items': 'createItem',
  'GET /slow': 'slow',
};
const A_OPS_PLUS = { ...A_OPS, 'GET /extra': 'extra' };
const INVALID_YAML = 'openapi: 3.1.0\ninfo: { title: A, version: 1.0.0\npaths: [\n';

/** Every reload result of a runtime, and a way to await one that matches. */
function recordReloads(runtime: Runtime) {
  const results: ReloadResult[] = [];
  const waiters = new Set<() => void>();
  runtime.onReload((r) => {
    results.push(r);
    for (const w of waiters) w();
  });
  return {
    results,
    /** The first result after index `from` that matches, within `timeoutMs`. */
    next(from: number, match: (r: ReloadResult) => boolean, timeoutMs = PICKUP_MS): Promise<ReloadResult> {
      return new Promise((resolveResult, reject) => {
        const check = () => {
          const hit = results.slice(from).find(match);
          if (!hit) return;
          cleanup();
          resolveResult(hit);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `no matching reload within ${timeoutMs} ms; got ${JSON.stringify(results.slice(from))}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Poll `url` until `accept(status)`; resolves the milliseconds it took, rejects after `timeoutMs`. */
async function servedWithin(
  url: string,
  accept: (status: number) => boolean,
  timeoutMs: number,
): Promise<number> {
  const start = performance.now();
  for (;;) {
    const res = await request(url);
    await res.body.dump();
    if (accept(res.statusCode)) return performance.now() - start;
    if (performance.now() - start > timeoutMs)
      throw new Error(`${url} still answers ${res.statusCode} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function statusOf(url: string): Promise<number> {
  const res = await request(url);
  await res.body.dump();
  return res.statusCode;
}

/** The issues of a result that name `file`. */
function issuesFor(r: ReloadResult, file: string) {
  return r.issues.filter((i) => i.file.endsWith(file));
}

/**
 * LOOPS client loops against service A: fast GETs, POSTs with a body, and slow requests that are
 * in flight while the table is swapped. Every answer must be A's 200.
 */
function hammer(base: string) {
  const agent = new Agent({ connections: LOOPS });
  const failures: string[] = [];
  let ok = 0;
  let stopping = false;
  const kinds = [
    { path: '/a/items/7', method: 'GET' as const },
    { path: '/a/items', method: 'POST' as const, body: JSON.stringify({ name: 'x'.repeat(512) }) },
    { path: '/a/slow?ms=150', method: 'GET' as const },
    { path: '/a/items', method: 'GET' as const },
  ];
  const loops = Array.from({ length: LOOPS }, async (_, i) => {
    const kind = kinds[i % kinds.length]!;
    while (!stopping) {
      try {
        const res = await request(`${base}${kind.path}`, {
          method: kind.method,
          body: kind.body,
          dispatcher: agent,
        });
        const text = await res.body.text();
        if (res.statusCode === 200 && res.headers['x-upstream'] === 'a') ok++;
        else failures.push(`${kind.method} ${kind.path} → ${res.statusCode} ${text.slice(0, 200)}`);
      } catch (err) {
        failures.push(`${kind.method} ${kind.path} → ${(err as Error).message}`);
      }
    }
  });
  return {
    async stop(): Promise<{ ok: number; failures: string[] }> {
      stopping = true;
      await Promise.all(loops);
      await agent.close();
      return { ok, failures };
    },
  };
}

describe('hot reload under load (watch: true)', () => {
  let upA: TestUpstream;
  let upB: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    upA = await startUpstream({ name: 'a', keepBodies: false });
    upB = await startUpstream({ name: 'b', keepBodies: false });
    gw = await startGateway(
      { a: spec({ title: 'A', basePath: '/a', upstreams: [upA.url], operations: A_OPS }) },
      { watch: true },
    );
    // Changes made before the watcher's first scan could be taken for its initial state.
    await gw.gateway.runtime.watch();
  });
  afterAll(async () => {
    await gw?.close();
    await upA?.close();
    await upB?.close();
  });

  it('adds, changes, rejects and removes specs while A answers every request with 200', async () => {
    const reloads = recordReloads(gw.gateway.runtime);
    const started = performance.now();
    const load = hammer(gw.url);
    const steps: Record<string, number> = {};
    try {
      // B appears.
      await gw.writeSpec('b', spec({ title: 'B', basePath: '/b', upstreams: [upB.url], operations: A_OPS }));
      steps.addB = await servedWithin(`${gw.url}/b/items`, (s) => s === 200, PICKUP_MS);

      // A gains an operation; its other routes keep serving (the hammer checks them).
      await gw.writeSpec(
        'a',
        spec({ title: 'A', basePath: '/a', upstreams: [upA.url], operations: A_OPS_PLUS }),
      );
      steps.changeA = await servedWithin(`${gw.url}/a/extra`, (s) => s === 200, PICKUP_MS);

      // A YAML syntax error: rejected, named, and A's last good version (with /extra) keeps serving.
      let mark = reloads.results.length;
      await gw.writeRaw('a.yaml', INVALID_YAML);
      const syntax = await reloads.next(mark, (r) => issuesFor(r, 'a.yaml').length > 0);
      expect(syntax.ok).toBe(false);
      expect(await statusOf(`${gw.url}/a/extra`)).toBe(200);

      // A schema error: same, and the issue points at the field.
      mark = reloads.results.length;
      await gw.writeSpec(
        'a',
        spec({
          title: 'A',
          basePath: '/a',
          upstreams: [upA.url],
          operations: A_OPS_PLUS,
          extra: { loadBalancing: 'nope' },
        }),
      );
      const schema = await reloads.next(mark, (r) =>
        issuesFor(r, 'a.yaml').some((i) => `${i.path} ${i.message}`.includes('loadBalancing')),
      );
      expect(schema.ok).toBe(false);
      expect(await statusOf(`${gw.url}/a/extra`)).toBe(200);

      // B goes away while A's file is still invalid: B is unrouted, A keeps its last good routes.
      await gw.removeSpec('b');
      steps.removeB = await servedWithin(`${gw.url}/b/items`, (s) => s === 404, PICKUP_MS);
      const gone = await request(`${gw.url}/b/items`);
      expect(gone.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(await gone.body.json()).toMatchObject({ code: 'PC_ROUTE_NOT_FOUND', status: 404 });
      expect(await statusOf(`${gw.url}/a/extra`)).toBe(200);

      // A is fixed: the next reload is clean.
      mark = reloads.results.length;
      await gw.writeSpec('a', spec({ title: 'A', basePath: '/a', upstreams: [upA.url], operations: A_OPS }));
      await reloads.next(mark, (r) => r.ok);
      expect(await statusOf(`${gw.url}/a/extra`)).toBe(404);

      const left = HAMMER_MS - (performance.now() - started);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
    } finally {
      const { ok, failures } = await load.stop();
      const seconds = (performance.now() - started) / 1000;
      console.info(
        `hot reload under load: ${ok} requests to A answered 200, ${failures.length} failed, over ${seconds.toFixed(1)} s; ` +
          `pick-up ms ${JSON.stringify(Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Math.round(v)])))}`,
      );
      expect(failures).toEqual([]);
      expect(ok).toBeGreaterThan(100);
    }
  });
});

describe('reload() called directly', () => {
  let upA: TestUpstream;
  let upB: TestUpstream;
  let gw: TestGateway;
  const specA = (ops: Record<string, string> = A_OPS, extra: Record<string, unknown> = {}) =>
    spec({ title: 'A', basePath: '/a', upstreams: [upA.url], operations: ops, extra });
  const specB = (basePath = '/b') => spec({ title: 'B', basePath, upstreams: [upB.url], operations: A_OPS });

  beforeAll(async () => {
    upA = await startUpstream({ name: 'a' });
    upB = await startUpstream({ name: 'b' });
  });
  afterAll(async () => {
    await gw?.close();
    await upA?.close();
    await upB?.close();
  });

  /** A new gateway over A and B as first written (each test starts from the same files). */
  async function fresh(): Promise<TestGateway> {
    await gw?.close();
    gw = await startGateway({ a: specA(), b: specB() });
    return gw;
  }

  const status = async (path: string) => {
    const res = await request(`${gw.url}${path}`);
    await res.body.dump();
    return { status: res.statusCode, upstream: res.headers['x-upstream'] };
  };

  it('serves a new operation as soon as reload() resolves, reusing the upstream connection', async () => {
    await fresh();
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
    const connections = upA.connections();
    await gw.writeSpec('a', specA(A_OPS_PLUS));
    const r = await gw.gateway.runtime.reload();
    expect(r).toMatchObject({ ok: true, issues: [] });
    expect(await status('/a/extra')).toEqual({ status: 200, upstream: 'a' });
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
    // Unchanged upstream config: the same pool, so the kept-alive connection is reused.
    expect(upA.connections()).toBe(connections);
  });

  it('an unchanged spec keeps its Service, Route objects and compiled validators across reloads', async () => {
    await fresh();
    await gw.writePolicyRaw('b.yaml', '- match: { service: b }\n  validate: { request: true }\n');
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    const entriesOf = (service: string) =>
      [...(gw.gateway.runtime.snapshot?.entries.values() ?? [])].filter((e) => e.service.name === service);
    const before = entriesOf('b');
    const beforeA = entriesOf('a');
    expect(before.map((e) => e.chain.applied.map((p) => p.kind))).toEqual(before.map(() => ['validate']));

    // Another spec changes, then b is rewritten byte for byte: b is not parsed or compiled again.
    await gw.writeSpec('a', specA(A_OPS_PLUS));
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    await gw.writeSpec('b', specB());
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    const after = entriesOf('b');
    expect(after[0]?.service).toBe(before[0]?.service);
    expect(after.map((e) => e.route)).toEqual(before.map((e) => e.route));
    for (const [i, e] of after.entries()) {
      expect(e.route).toBe(before[i]?.route);
      expect(e.chain.hooks[0]).toBe(before[i]?.chain.hooks[0]);
    }
    // The changed spec got new objects.
    expect(entriesOf('a')[0]?.service).not.toBe(beforeA[0]?.service);

    // Editing b itself parses it again.
    await gw.writeSpec('b', specB('/b2'));
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    expect(entriesOf('b')[0]?.service).not.toBe(before[0]?.service);
    expect(entriesOf('b')[0]?.chain.hooks[0]).not.toBe(before[0]?.chain.hooks[0]);
    await gw.writeSpec('b', specB());
    await rm(join(gw.dir, 'policies', 'b.yaml'));
  });

  it('a shared $ref target in openapi/shared/ is not a service, and editing it reloads the spec using it', async () => {
    await fresh();
    await mkdir(join(gw.dir, 'openapi', 'shared'), { recursive: true });
    const shared = (type: string) =>
      `Id: { name: id, in: path, required: true, schema: { type: ${type} } }\n`;
    await writeFile(join(gw.dir, 'openapi', 'shared', 'params.yaml'), shared('integer'));
    await gw.writeRaw(
      'c.yaml',
      `openapi: 3.1.0
info: { title: C, version: 1.0.0 }
x-portcullis: { basePath: /c, upstreams: [{ url: "${upA.url}" }] }
paths:
  /things/{id}:
    get:
      operationId: getThing
      parameters: [{ $ref: "./shared/params.yaml#/Id" }]
      responses: { "200": { description: ok } }
`,
    );
    await gw.writePolicyRaw('c.yaml', '- match: { service: c }\n  validate: { request: true }\n');
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true, issues: [] });
    expect([...(gw.gateway.runtime.snapshot?.table.services.keys() ?? [])].sort()).toEqual(['a', 'b', 'c']);
    expect((await status('/c/things/abc')).status).toBe(400);
    await writeFile(join(gw.dir, 'openapi', 'shared', 'params.yaml'), shared('string'));
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    expect(await status('/c/things/abc')).toEqual({ status: 200, upstream: 'a' });
    await rm(join(gw.dir, 'openapi', 'c.yaml'));
    await rm(join(gw.dir, 'policies', 'c.yaml'));
    await rm(join(gw.dir, 'openapi', 'shared'), { recursive: true });
  });

  it('rejects an invalid file with issues naming it, and keeps its last good routes', async () => {
    await fresh();
    const version = gw.gateway.runtime.snapshot?.version;

    await gw.writeRaw('a.yaml', INVALID_YAML);
    const syntax = await gw.gateway.runtime.reload();
    expect(syntax.ok).toBe(false);
    expect(syntax.issues.length).toBeGreaterThan(0);
    expect(syntax.issues.every((i) => i.file.endsWith('a.yaml'))).toBe(true);
    expect(syntax.version).toBe(version);
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });

    await gw.writeSpec('a', specA(A_OPS_PLUS, { loadBalancing: 'nope' }));
    const schema = await gw.gateway.runtime.reload();
    expect(schema.ok).toBe(false);
    expect(schema.issues).toEqual([
      expect.objectContaining({
        file: expect.stringMatching(/a\.yaml$/),
        path: expect.stringContaining('loadBalancing'),
      }),
    ]);
    // The rejected version's new operation is not served; the last good one is.
    expect((await status('/a/extra')).status).toBe(404);
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
    expect(await status('/b/items')).toEqual({ status: 200, upstream: 'b' });
  });

  it('does not serve a new file that fails validation, and keeps serving the others', async () => {
    await fresh();
    await gw.writeRaw('c.yaml', INVALID_YAML);
    const r = await gw.gateway.runtime.reload();
    expect(r.ok).toBe(false);
    expect(r.issues.every((i) => i.file.endsWith('c.yaml'))).toBe(true);
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
    expect(gw.gateway.runtime.snapshot?.table.services.has('c')).toBe(false);
  });

  it('unroutes a deleted spec: its routes answer 404 problem+json', async () => {
    await fresh();
    await gw.removeSpec('b');
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    const res = await request(`${gw.url}/b/items`);
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(await res.body.json()).toMatchObject({
      code: 'PC_ROUTE_NOT_FOUND',
      status: 404,
      instance: '/b/items',
    });
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
  });

  it('rejects a basePath conflict as a whole and keeps the previous table serving', async () => {
    await fresh();
    const version = gw.gateway.runtime.snapshot?.version;
    await gw.writeSpec('b', specB('/a'));
    const r = await gw.gateway.runtime.reload();
    expect(r.ok).toBe(false);
    expect(r.version).toBe(version);
    expect(r.issues.some((i) => i.message.includes('basePath') && i.file.endsWith('b.yaml'))).toBe(true);
    expect(gw.gateway.runtime.snapshot?.version).toBe(version);
    expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
    expect(await status('/b/items')).toEqual({ status: 200, upstream: 'b' });

    // Resolved: the next reload applies B's new basePath.
    await gw.writeSpec('b', specB('/b2'));
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    expect(await status('/b2/items')).toEqual({ status: 200, upstream: 'b' });
    expect((await status('/b/items')).status).toBe(404);
  });

  it('keeps every route when the spec folder is briefly missing (replaced by a deploy)', async () => {
    await fresh();
    const openapi = join(gw.dir, 'openapi');
    await rename(openapi, `${openapi}.old`);
    try {
      const r = await gw.gateway.runtime.reload();
      expect(r.ok).toBe(false);
      expect(r.issues[0]?.message).toMatch(/cannot read spec folder/);
      expect(await status('/a/items')).toEqual({ status: 200, upstream: 'a' });
      expect(await status('/b/items')).toEqual({ status: 200, upstream: 'b' });
    } finally {
      await rename(`${openapi}.old`, openapi);
    }
  });

  it('a reload() requested while one runs reflects the files as they were when it was called', async () => {
    await fresh();
    const first = gw.gateway.runtime.reload();
    await gw.writeSpec('a', specA(A_OPS_PLUS));
    const second = gw.gateway.runtime.reload();
    expect(await second).toMatchObject({ ok: true });
    expect(await status('/a/extra')).toEqual({ status: 200, upstream: 'a' });
    // Whether the first run read a.yaml before the write is a race; the second is a run of its own.
    expect(await second).not.toBe(await first);
  });
});
