/**
 * The `cache` policy through a real gateway, against a real upstream whose answers each test
 * scripts per path, with both stores: memory, and a real redis-server. Then two gateway instances
 * sharing one Redis cache: an entry stored through one is served by the other, and a purge or an
 * unsafe method through one invalidates it for both.
 *
 * Staleness comes from the upstream's `Age` header (a response already older than its max-age),
 * never from waiting.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  request,
  type Server,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Request } from '../helpers/h2.ts';
import { parsePrometheus, scrapeUntil, total } from '../helpers/prometheus.ts';
import { startRedis, type TestRedis } from '../helpers/redis.ts';

interface Scripted {
  status?: number;
  headers?: OutgoingHttpHeaders;
  body?: string;
  /** Answer after this many ms (coalescing). */
  delayMs?: number;
}
type Script = (req: { method: string; headers: IncomingHttpHeaders; n: number }) => Scripted;

/** An upstream whose answer per path (no query) is scripted by the test; it records every request. */
class ScriptedUpstream {
  readonly scripts = new Map<string, Script>();
  readonly seen: Array<{ method: string; path: string; url: string; headers: IncomingHttpHeaders }> = [];
  server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const url = req.url ?? '/';
      const path = url.split('?')[0] ?? '/';
      req.resume();
      req.on('end', () => {
        this.seen.push({ method: req.method ?? '', path, url, headers: req.headers });
        const n = this.hits(path);
        const script = this.scripts.get(path);
        const out = script ? script({ method: req.method ?? '', headers: req.headers, n }) : { status: 404 };
        const send = () => {
          const body = out.body ?? `body of ${path} #${n}`;
          res.writeHead(out.status ?? 200, { 'content-type': 'text/plain', ...out.headers });
          res.end(req.method === 'HEAD' || out.status === 304 ? undefined : body);
        };
        if (out.delayMs) setTimeout(send, out.delayMs);
        else send();
      });
    });
    await new Promise<void>((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Requests this upstream got for `path`. */
  hits(path: string): number {
    return this.seen.filter((s) => s.path === path).length;
  }

  last(path: string) {
    return this.seen.filter((s) => s.path === path).at(-1);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((ok) => this.server.close(() => ok()));
  }
}

const API_KEY = 'cache-test-key-0123456789';
process.env.PORTCULLIS_CACHE_TEST_KEYS = `tester=${API_KEY}`;

function spec(upstream: string) {
  const get = (operationId: string) => ({
    get: {
      operationId,
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
      responses: { '200': { description: 'ok' } },
    },
  });
  return {
    openapi: '3.1.0',
    info: { title: 'Svc', version: '1.0.0' },
    'x-portcullis': { basePath: '/svc', upstreams: [{ url: upstream }], passThrough: true, retries: 0 },
    paths: {
      '/ttl/{id}': get('ttl'),
      '/targeted/{id}': get('targeted'),
      '/small/{id}': get('small'),
      '/keyed/{id}': get('keyed'),
      '/packed/{id}': get('packed'),
    },
  };
}

/** A second service whose rule caches GETs only (as DESIGN's example does). */
function getOnlySpec(upstream: string) {
  return {
    openapi: '3.1.0',
    info: { title: 'Ro', version: '1.0.0' },
    'x-portcullis': { basePath: '/ro', upstreams: [{ url: upstream }], passThrough: true, retries: 0 },
    paths: {
      '/items/{id}': {
        get: {
          operationId: 'roGet',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'ok' } },
        },
        put: {
          operationId: 'roPut',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': { description: 'ok' } },
        },
      },
    },
  };
}

const RULES = [
  { match: { service: 'svc' }, cache: {} },
  { match: { service: 'ro', methods: ['GET'] }, cache: {} },
  { match: { service: 'svc', operations: ['ttl'] }, cache: { ttl: '1h' } },
  { match: { service: 'svc', operations: ['targeted'] }, cache: { targeted: 'Acme-Cache-Control' } },
  { match: { service: 'svc', operations: ['small'] }, cache: { maxEntryBytes: 16 } },
  { match: { service: 'svc', operations: ['packed'] }, compress: {} },
  {
    match: { service: 'svc', operations: ['keyed'] },
    auth: { apiKey: { keysEnv: 'PORTCULLIS_CACHE_TEST_KEYS' } },
  },
];

let counter = 0;
/** A path no other test uses. */
const fresh = (prefix = 'p') => `/${prefix}-${++counter}`;

async function get(gw: TestGateway, path: string, headers: Record<string, string> = {}, method = 'GET') {
  const r = await fetch(gw.url + path, { method, headers });
  return { status: r.status, headers: r.headers, body: await r.text() };
}

/** A GET with exactly these headers (fetch adds its own to conditional requests). */
function rawGet(gw: TestGateway, path: string, headers: Record<string, string>, method = 'GET') {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string; raw: Buffer }>(
    (ok, fail) => {
      const req = request(gw.url + path, { headers, method }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          ok({ status: res.statusCode ?? 0, headers: res.headers, body: raw.toString(), raw });
        });
      });
      req.on('error', fail);
      req.end();
    },
  );
}

describe.each(['memory', 'redis'] as const)('cache policy, %s store', (storeKind) => {
  const up = new ScriptedUpstream();
  let redis: TestRedis | undefined;
  let gw: TestGateway;

  beforeAll(async () => {
    await up.start();
    if (storeKind === 'redis') redis = await startRedis();
    gw = await startGateway(
      { svc: spec(up.url), ro: getOnlySpec(up.url) },
      redis ? { state: { redis: redis.url } } : {},
      { policies: { cache: RULES } },
    );
    if (redis) {
      // The cache's Redis connection comes up after the gateway listens (no offline queue: until
      // it is ready, answers are served uncached); the tests start once an entry round-trips.
      up.scripts.set('/warm-up', () => ({ headers: { 'cache-control': 'max-age=60' } }));
      await vi.waitFor(
        async () => expect((await get(gw, '/svc/warm-up')).headers.get('cache-status')).toMatch(/hit/),
        { timeout: 10_000, interval: 50 },
      );
    }
  });
  afterAll(async () => {
    await gw?.close();
    await up.close();
    await redis?.stop();
  });

  /** Script `path` (under the upstream, without /svc) and return the public path. */
  const script = (path: string, s: Script) => {
    up.scripts.set(path, s);
    return `/svc${path}`;
  };

  it('reuses a fresh response (max-age): one upstream request, Age and Cache-Status on the hit', async () => {
    const p = fresh();
    const pub = script(p, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    const a = await get(gw, pub);
    const b = await get(gw, pub);
    expect(a.status).toBe(200);
    expect(a.headers.get('cache-status')).toMatch(/^Portcullis; fwd=uri-miss; fwd-status=200; stored$/);
    expect(a.headers.get('age')).toBeNull();
    expect(b.body).toBe(a.body);
    expect(b.headers.get('age')).toMatch(/^\d+$/);
    expect(b.headers.get('cache-status')).toMatch(/^Portcullis; hit; ttl=\d+$/);
    expect(b.headers.get('x-request-id')).not.toBe(a.headers.get('x-request-id'));
    expect(up.hits(p)).toBe(1);
    // The cache announces itself to the origin as a surrogate (Surrogate-Control is on by default).
    expect(up.last(p)?.headers['surrogate-capability']).toBe('portcullis="Surrogate/1.0"');
  });

  it.each([
    ['no-store', 'no-store, max-age=60'],
    ['private', 'private, max-age=60'],
    ['max-age=0', 'max-age=0'],
    ['an invalid max-age', 'max-age=60a'],
  ])('never serves a stored %s response', async (_what, cc) => {
    const p = fresh();
    const pub = script(p, () => ({ headers: { 'cache-control': cc } }));
    await get(gw, pub);
    const b = await get(gw, pub);
    expect(b.status).toBe(200);
    expect(b.headers.get('age')).toBeNull();
    expect(up.hits(p)).toBe(2);
  });

  it('prefers s-maxage over max-age (shared cache)', async () => {
    const p = fresh();
    const pub = script(p, () => ({ headers: { 'cache-control': 'max-age=0, s-maxage=60' } }));
    await get(gw, pub);
    await get(gw, pub);
    expect(up.hits(p)).toBe(1);
  });

  it("obeys CDN-Cache-Control over Cache-Control, and a rule's targeted field over both", async () => {
    const p = fresh();
    const pub = script(p, () => ({
      headers: { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' },
    }));
    await get(gw, pub);
    await get(gw, pub);
    expect(up.hits(p)).toBe(1);

    const id = fresh('t');
    const t = script(`/targeted${id}`, () => ({
      headers: {
        'cache-control': 'max-age=60',
        'cdn-cache-control': 'max-age=60',
        'acme-cache-control': 'no-store',
      },
    }));
    await get(gw, t);
    await get(gw, t);
    expect(up.hits(`/targeted${id}`)).toBe(2);
  });

  it('revalidates a no-cache response with its ETag; a 304 refreshes the stored headers', async () => {
    const p = fresh();
    const pub = script(p, ({ headers, n }) =>
      n === 1
        ? { headers: { 'cache-control': 'no-cache', etag: '"v1"', 'x-version': 'one' }, body: 'payload' }
        : headers['if-none-match'] === '"v1"'
          ? { status: 304, headers: { etag: '"v1"', 'x-version': 'two' } }
          : { body: 'unexpected full answer' },
    );
    await get(gw, pub);
    const b = await get(gw, pub);
    expect(b.status).toBe(200);
    expect(b.body).toBe('payload');
    expect(b.headers.get('x-version')).toBe('two');
    expect(b.headers.get('cache-status')).toBe('Portcullis; fwd=stale; fwd-status=304');
    expect(up.last(p)?.headers['if-none-match']).toBe('"v1"');
  });

  it('validates a stale must-revalidate response with If-Modified-Since', async () => {
    const lm = 'Wed, 01 Jan 2020 00:00:00 GMT';
    const p = fresh();
    const pub = script(p, ({ headers, n }) =>
      n === 1
        ? { headers: { 'cache-control': 'max-age=10, must-revalidate', age: '100', 'last-modified': lm } }
        : {
            status: headers['if-modified-since'] === lm ? 304 : 500,
            headers: { 'cache-control': 'max-age=60' },
          },
    );
    const a = await get(gw, pub);
    const b = await get(gw, pub);
    expect(b.status).toBe(200);
    expect(b.body).toBe(a.body);
    expect(up.hits(p)).toBe(2);
    // The 304 made it fresh again (max-age=60): the third comes from the store.
    const c = await get(gw, pub);
    expect(c.headers.get('cache-status')).toMatch(/hit/);
    expect(up.hits(p)).toBe(2);
  });

  it('keeps variants apart by Vary (secondary keys)', async () => {
    const p = fresh();
    const pub = script(p, ({ headers }) => ({
      headers: { 'cache-control': 'max-age=60', vary: 'Accept-Language' },
      body: `lang ${headers['accept-language']}`,
    }));
    expect((await get(gw, pub, { 'accept-language': 'en' })).body).toBe('lang en');
    expect((await get(gw, pub, { 'accept-language': 'fr' })).body).toBe('lang fr');
    expect((await get(gw, pub, { 'accept-language': 'en' })).body).toBe('lang en');
    expect((await get(gw, pub, { 'accept-language': 'fr' })).body).toBe('lang fr');
    expect(up.hits(p)).toBe(2);
    const star = fresh();
    const s = script(star, () => ({ headers: { 'cache-control': 'max-age=60', vary: '*' } }));
    await get(gw, s);
    await get(gw, s);
    expect(up.hits(star)).toBe(2);
  });

  it('never reuses a response to a request with Authorization unless it is public, s-maxage or must-revalidate', async () => {
    const p = fresh();
    const pub = script(p, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    await get(gw, pub, { authorization: 'Bearer alice' });
    await get(gw, pub, { authorization: 'Bearer bob' });
    expect(up.hits(p)).toBe(2);
    const q = fresh();
    const pubQ = script(q, () => ({ headers: { 'cache-control': 'public, max-age=60' } }));
    await get(gw, pubQ, { authorization: 'Bearer alice' });
    await get(gw, pubQ, { authorization: 'Bearer bob' });
    expect(up.hits(q)).toBe(1);
  });

  it('never stores Set-Cookie: only the client whose request fetched the response gets it', async () => {
    const p = fresh();
    const pub = script(p, () => ({
      headers: { 'cache-control': 'max-age=60', 'set-cookie': 'session=alice' },
    }));
    const a = await get(gw, pub);
    const b = await get(gw, pub);
    expect(a.headers.get('set-cookie')).toBe('session=alice');
    expect(b.headers.get('cache-status')).toMatch(/hit/);
    expect(b.headers.get('set-cookie')).toBeNull();
    expect(up.hits(p)).toBe(1);
  });

  it("answers HEAD from the GET entry, a Range from the stored full response, and a client's If-None-Match with 304", async () => {
    const p = fresh();
    const pub = script(p, () => ({
      headers: { 'cache-control': 'max-age=60', etag: '"abc"' },
      body: '0123456789',
    }));
    await get(gw, pub);
    const head = await get(gw, pub, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers.get('content-length')).toBe('10');
    const range = await get(gw, pub, { range: 'bytes=2-5' });
    expect(range.status).toBe(206);
    expect(range.body).toBe('2345');
    expect(range.headers.get('content-range')).toBe('bytes 2-5/10');
    const suffix = await get(gw, pub, { range: 'bytes=-3' });
    expect(suffix.body).toBe('789');
    const outside = await get(gw, pub, { range: 'bytes=20-' });
    expect(outside.status).toBe(416);
    expect(outside.headers.get('content-range')).toBe('bytes */10');
    // node:http, not fetch: fetch adds Cache-Control: no-cache to a conditional request (Fetch standard).
    const cond = await rawGet(gw, pub, { 'if-none-match': 'W/"abc"' });
    expect(cond.status).toBe(304);
    expect(cond.headers.etag).toBe('"abc"');
    expect(cond.headers['cache-status']).toMatch(/hit/);
    expect(up.seen.filter((s) => s.path === p).map((s) => [s.method, s.headers.range])).toEqual([
      ['GET', undefined],
    ]);
  });

  it('invalidates the URL and the same-origin Location / Content-Location after a successful unsafe method', async () => {
    const p = fresh();
    const other = fresh();
    const third = fresh();
    const pub = script(p, ({ method }) =>
      method === 'POST'
        ? {
            status: 201,
            headers: { location: `/svc${other}`, 'content-location': `http://elsewhere.example/svc${third}` },
          }
        : { headers: { 'cache-control': 'max-age=60' } },
    );
    const pubOther = script(other, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    const pubThird = script(third, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    for (const x of [pub, pubOther, pubThird]) await get(gw, x);
    const post = await get(gw, pub, {}, 'POST');
    expect(post.status).toBe(201);
    expect(post.headers.get('cache-status')).toBe('Portcullis; fwd=method; fwd-status=201');
    await get(gw, pub);
    await get(gw, pubOther);
    await get(gw, pubThird);
    expect(up.hits(p)).toBe(3); // GET, POST, GET again
    expect(up.hits(other)).toBe(2);
    expect(up.hits(third)).toBe(1); // another origin's URL is not this cache's to drop
  });

  it('invalidates through routes that do not cache: a rule caching GETs only, a PUT or POST to the URL', async () => {
    const id = fresh('ro');
    up.scripts.set(`/items${id}`, ({ method, n }) =>
      method === 'GET' ? { headers: { 'cache-control': 'max-age=60' }, body: `v${n}` } : { status: 200 },
    );
    expect((await get(gw, `/ro/items${id}`)).body).toBe('v1');
    expect((await get(gw, `/ro/items${id}`)).body).toBe('v1');
    expect((await get(gw, `/ro/items${id}`, {}, 'PUT')).status).toBe(200); // declared operation, no cache rule
    expect((await get(gw, `/ro/items${id}`)).body).toBe('v3');
    // POST is not declared on this path: 405 (pass-through covers undeclared paths only), never
    // forwarded, so the entry stays.
    expect((await get(gw, `/ro/items${id}`, {}, 'POST')).status).toBe(405);
    expect((await get(gw, `/ro/items${id}`)).body).toBe('v3');
  });

  it('keeps the entry after a failed unsafe method', async () => {
    const p = fresh();
    const pub = script(p, ({ method }) =>
      method === 'DELETE' ? { status: 500 } : { headers: { 'cache-control': 'max-age=60' } },
    );
    await get(gw, pub);
    expect((await get(gw, pub, {}, 'DELETE')).status).toBe(500);
    expect((await get(gw, pub)).headers.get('cache-status')).toMatch(/hit/);
    expect(up.hits(p)).toBe(2);
  });

  it('serves stale while revalidating in the background (stale-while-revalidate)', async () => {
    const p = fresh();
    const pub = script(p, ({ n }) => ({
      headers: { 'cache-control': 'max-age=10, stale-while-revalidate=600', age: n === 1 ? '20' : '0' },
      body: `version ${n}`,
    }));
    await get(gw, pub);
    const stale = await get(gw, pub);
    expect(stale.body).toBe('version 1');
    expect(stale.headers.get('cache-status')).toMatch(/detail=stale-while-revalidate/);
    await vi.waitFor(() => expect(up.hits(p)).toBe(2));
    await vi.waitFor(async () => expect((await get(gw, pub)).body).toBe('version 2'));
  });

  it('serves stale on an upstream error within stale-if-error, and passes the error on without it', async () => {
    const p = fresh();
    const pub = script(p, ({ n }) =>
      n === 1
        ? { headers: { 'cache-control': 'max-age=10, stale-if-error=600', age: '20' }, body: 'good' }
        : { status: 503, body: 'down' },
    );
    await get(gw, pub);
    const b = await get(gw, pub);
    expect(b.status).toBe(200);
    expect(b.body).toBe('good');
    expect(b.headers.get('cache-status')).toMatch(/detail=stale-if-error; fwd-status=503/);

    const q = fresh();
    const pubQ = script(q, ({ n }) =>
      n === 1 ? { headers: { 'cache-control': 'max-age=10', age: '20' } } : { status: 503, body: 'down' },
    );
    await get(gw, pubQ);
    expect((await get(gw, pubQ)).status).toBe(503);
  });

  it('coalesces concurrent misses of one URL into one upstream request', async () => {
    const p = fresh();
    const pub = script(p, () => ({ headers: { 'cache-control': 'max-age=60' }, delayMs: 300 }));
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(gw, pub)));
    expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
    expect(new Set(answers.map((a) => a.body)).size).toBe(1);
    expect(up.hits(p)).toBe(1);
  });

  it('keys entries by the Host too: a forged Host cannot poison the entry other clients get', async () => {
    const p = fresh();
    const pub = script(p, ({ headers }) => ({
      headers: { 'cache-control': 'max-age=60' },
      body: `link to https://${headers['x-forwarded-host']}/next`,
    }));
    const evil = await rawGet(gw, pub, { host: 'evil.example' });
    expect(evil.body).toBe('link to https://evil.example/next');
    const good = await rawGet(gw, pub, { host: 'api.example.test' });
    expect(good.body).toBe('link to https://api.example.test/next');
    expect((await rawGet(gw, pub, { host: 'API.example.test' })).headers['cache-status']).toMatch(/hit/);
    expect(up.hits(p)).toBe(2);
  });

  it('keys entries by the canonical target: another spelling of the same path is the same entry', async () => {
    const p = fresh('enc');
    const pub = script(`${p}/a`, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    await get(gw, pub);
    const b = await get(gw, pub.replace(/\/a$/, '/%61'));
    expect(b.headers.get('cache-status')).toMatch(/hit/);
    expect(up.hits(`${p}/a`)).toBe(1);
    const q = await get(gw, `${pub}?x=1`);
    expect(q.headers.get('cache-status')).toMatch(/uri-miss/);
  });

  it('runs the policies before the cache: a stored answer is never served to a request auth rejects', async () => {
    const id = fresh('k');
    const pub = script(`/keyed${id}`, () => ({ headers: { 'cache-control': 'public, max-age=60' } }));
    expect((await get(gw, pub, { 'x-api-key': API_KEY })).status).toBe(200);
    expect((await get(gw, pub, { 'x-api-key': API_KEY })).headers.get('cache-status')).toMatch(/hit/);
    const anonymous = await get(gw, pub);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('cache-status')).toBe('Portcullis; fwd=bypass; detail=PC_UNAUTHORIZED');
    expect(anonymous.body).not.toContain('body of');
    expect(up.hits(`/keyed${id}`)).toBe(1);
  });

  it('treats a credential an auth policy accepted (an API key header) like Authorization: a private max-age answer is not shared', async () => {
    const id = fresh('k');
    const priv = script(`/keyed${id}`, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    const first = await get(gw, priv, { 'x-api-key': API_KEY });
    expect(first.status).toBe(200);
    expect(first.headers.get('cache-status')).toMatch(/detail=authorization/);
    expect((await get(gw, priv, { 'x-api-key': API_KEY })).headers.get('cache-status')).not.toMatch(/hit/);
    expect(up.hits(`/keyed${id}`)).toBe(2);
  });

  it('forwards a GET with a body uncached: the body is not in the key, so its answer is never stored or served', async () => {
    const p = fresh();
    const path = script(p, () => ({ headers: { 'cache-control': 'max-age=60' } }));
    for (const headers of [{ 'content-length': '7' }, { 'transfer-encoding': 'chunked' }]) {
      const res = await new Promise<{ status: number; headers: IncomingHttpHeaders }>((ok, fail) => {
        const req = request(gw.url + path, { method: 'GET', headers }, (r) => {
          r.resume();
          r.on('end', () => ok({ status: r.statusCode ?? 0, headers: r.headers }));
        });
        req.on('error', fail);
        req.end('q=other');
      });
      expect(res.status).toBe(200);
      expect(res.headers['cache-status']).toBe('Portcullis; fwd=bypass; fwd-status=200');
    }
    // Nothing was stored: the plain GET is a miss and goes upstream.
    expect((await get(gw, path)).headers.get('cache-status')).toMatch(/fwd=uri-miss/);
    expect(up.hits(p)).toBe(3);
  });

  it("gives a response that states no freshness the rule's ttl, and nothing without one", async () => {
    const id = fresh('ttl');
    const pub = script(`/ttl${id}`, () => ({}));
    await get(gw, pub);
    expect((await get(gw, pub)).headers.get('cache-status')).toMatch(/hit; ttl=(3599|3600)/);
    const p = fresh();
    const plain = script(p, () => ({}));
    await get(gw, plain);
    await get(gw, plain);
    expect(up.hits(p)).toBe(2);
  });

  it('keeps the upstream bytes and compresses each answer for its client (compress on the same route)', async () => {
    const id = fresh('z');
    const text = 'compressible text '.repeat(200);
    const pub = script(`/packed${id}`, () => ({ headers: { 'cache-control': 'max-age=60' }, body: text }));
    const br = await rawGet(gw, pub, { 'accept-encoding': 'br' });
    expect(br.headers['content-encoding']).toBe('br');
    const fromStore = await rawGet(gw, pub, { 'accept-encoding': 'gzip' });
    expect(fromStore.headers['cache-status']).toMatch(/hit/);
    expect(fromStore.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(fromStore.raw).toString()).toBe(text);
    const plain = await rawGet(gw, pub, {});
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.body).toBe(text);
    expect(up.hits(`/packed${id}`)).toBe(1);
  });

  it('streams a body above maxEntryBytes through uncached', async () => {
    const id = fresh('s');
    const pub = script(`/small${id}`, () => ({
      headers: { 'cache-control': 'max-age=60' },
      body: 'x'.repeat(100),
    }));
    expect((await get(gw, pub)).body).toBe('x'.repeat(100));
    expect((await get(gw, pub)).body).toBe('x'.repeat(100));
    expect(up.hits(`/small${id}`)).toBe(2);
  });

  it('purges by URL and by prefix on the admin port, and counts hits and misses in /metrics', async () => {
    const base = fresh('purge');
    const paths = [`${base}/a`, `${base}/b`, `${fresh('keep')}`];
    const pubs = paths.map((p) => script(p, () => ({ headers: { 'cache-control': 'max-age=60' } })));
    for (const x of pubs) await get(gw, x);
    const admin = gw.addresses.admin as string;
    const purge = (body: unknown) =>
      fetch(`${admin}/cache/purge`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const one = await purge({ url: pubs[0] });
    expect(await one.json()).toEqual({ purged: 1 });
    expect((await get(gw, pubs[0] as string)).headers.get('cache-status')).toMatch(/uri-miss/);
    const prefix = await purge({ prefix: `/svc${base}/` });
    expect(await prefix.json()).toEqual({ purged: 2 });
    expect((await get(gw, pubs[1] as string)).headers.get('cache-status')).toMatch(/uri-miss/);
    expect((await get(gw, pubs[2] as string)).headers.get('cache-status')).toMatch(/hit/);
    const bad = await purge({ url: 'no-slash' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toMatch(/problem\+json/);
    const scrape = async () => parsePrometheus(await (await fetch(`${admin}/metrics`)).text());
    const samples = await scrapeUntil(
      scrape,
      (m) => total(m, 'portcullis_cache_requests_total', { result: 'hit' }) > 0,
    );
    expect(
      total(samples, 'portcullis_cache_requests_total', { service: 'svc', result: 'miss' }),
    ).toBeGreaterThan(0);
    expect(total(samples, 'portcullis_cache_requests_total', { result: 'bypass' })).toBeGreaterThan(0);
  });
});

describe('two gateway instances sharing one Redis cache', () => {
  const up = new ScriptedUpstream();
  let redis: TestRedis;
  let a: TestGateway;
  let b: TestGateway;
  /** Both instances behind one name, as a load balancer presents them (the Host is part of the key). */
  const shared = (gw: TestGateway, path: string, method = 'GET') =>
    rawGet(gw, path, { host: 'api.example.test' }, method);

  beforeAll(async () => {
    await up.start();
    redis = await startRedis();
    const config = { state: { redis: redis.url } };
    a = await startGateway({ svc: spec(up.url), ro: getOnlySpec(up.url) }, config, {
      policies: { cache: RULES },
    });
    b = await startGateway({ svc: spec(up.url), ro: getOnlySpec(up.url) }, config, {
      policies: { cache: RULES },
    });
    // Both cache connections ready (see the single-instance tests): what one stores, the other serves.
    up.scripts.set('/warm-up', () => ({ headers: { 'cache-control': 'max-age=60' } }));
    await vi.waitFor(
      async () => {
        await shared(a, '/svc/warm-up');
        expect((await shared(b, '/svc/warm-up')).headers['cache-status']).toMatch(/hit/);
      },
      { timeout: 10_000, interval: 50 },
    );
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await up.close();
    await redis?.stop();
  });

  it('serves through one what the other stored, and holds it in Redis under a versioned key', async () => {
    const p = fresh('shared');
    up.scripts.set(p, () => ({ headers: { 'cache-control': 'max-age=60' }, body: 'stored by a' }));
    expect((await shared(a, `/svc${p}`)).body).toBe('stored by a');
    const fromB = await shared(b, `/svc${p}`);
    expect(fromB.body).toBe('stored by a');
    expect(fromB.headers['cache-status']).toMatch(/hit/);
    expect(up.hits(p)).toBe(1);
    const client = new Redis(redis.url);
    try {
      expect(await client.exists(`pc:v1:cache:/svc${p}`)).toBe(1);
      expect(await client.pttl(`pc:v1:cache:/svc${p}`)).toBeGreaterThan(0);
    } finally {
      client.disconnect();
    }
  });

  it('a purge through one instance invalidates the entry for both', async () => {
    const p = fresh('shared');
    up.scripts.set(p, ({ n }) => ({ headers: { 'cache-control': 'max-age=60' }, body: `v${n}` }));
    await shared(a, `/svc${p}`);
    const r = await fetch(`${b.addresses.admin}/cache/purge`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: `/svc${p}` }),
    });
    expect(await r.json()).toEqual({ purged: 1 });
    expect((await shared(a, `/svc${p}`)).body).toBe('v2');
    expect((await shared(b, `/svc${p}`)).body).toBe('v2');
    expect(up.hits(p)).toBe(2);
  });

  it('an unsafe method through one instance invalidates the entry for both', async () => {
    const p = fresh('shared');
    up.scripts.set(p, ({ method, n }) =>
      method === 'PUT' ? { status: 204 } : { headers: { 'cache-control': 'max-age=60' }, body: `v${n}` },
    );
    await shared(b, `/svc${p}`);
    expect((await shared(a, `/svc${p}`)).body).toBe('v1');
    expect((await shared(a, `/svc${p}`, 'PUT')).status).toBe(204);
    expect((await shared(b, `/svc${p}`)).body).toBe('v3');
    expect((await shared(a, `/svc${p}`)).body).toBe('v3');
  });
});

describe('memory cache bound (gateway.yaml state.cacheMemoryBytes)', () => {
  const up = new ScriptedUpstream();
  let gw: TestGateway;
  beforeAll(async () => {
    await up.start();
    gw = await startGateway(
      { svc: spec(up.url), ro: getOnlySpec(up.url) },
      { state: { cacheMemoryBytes: 5000 } },
      { policies: { cache: RULES } },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up.close();
  });

  it('drops the least recently used entry to stay within the bound', async () => {
    const [a, b, c] = [fresh('lru'), fresh('lru'), fresh('lru')];
    for (const p of [a, b, c])
      up.scripts.set(p, () => ({ headers: { 'cache-control': 'max-age=60' }, body: 'x'.repeat(2000) }));
    await get(gw, `/svc${a}`);
    await get(gw, `/svc${b}`);
    expect((await get(gw, `/svc${a}`)).headers.get('cache-status')).toMatch(/hit/); // a is now the most recent
    await get(gw, `/svc${c}`); // over 5000 bytes with three: b goes
    expect((await get(gw, `/svc${a}`)).headers.get('cache-status')).toMatch(/hit/);
    expect((await get(gw, `/svc${c}`)).headers.get('cache-status')).toMatch(/hit/);
    expect((await get(gw, `/svc${b}`)).headers.get('cache-status')).toMatch(/uri-miss/);
  });
});

describe('cache over HTTP/2 (TLS)', () => {
  const up = new ScriptedUpstream();
  let gw: TestGateway;
  let certDir: string;
  let caPem: string;
  let origin: string;
  beforeAll(async () => {
    await up.start();
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    gw = await startGateway(
      { svc: spec(up.url), ro: getOnlySpec(up.url) },
      { listen: { http: { port: 0, host: '127.0.0.1' }, https: { port: 0, host: '127.0.0.1', ...pair } } },
      { policies: { cache: RULES } },
    );
    origin = `https://localhost:${new URL(gw.addresses.https ?? '').port}`;
  }, 30_000);
  afterAll(async () => {
    await gw?.close();
    await up.close();
    if (certDir) await removeCertDir(certDir);
  });

  it('stores a miss, answers the hit, a conditional and a Range from the store, and passes a POST on', async () => {
    const p = fresh('h2');
    up.scripts.set(p, ({ method }) =>
      method === 'POST'
        ? { status: 201 }
        : { headers: { 'cache-control': 'max-age=60', etag: '"h2"' }, body: '0123456789' },
    );
    const miss = await h2Request(origin, caPem, `/svc${p}`);
    expect(miss.status).toBe(200);
    expect(miss.body).toBe('0123456789');
    expect(miss.headers['cache-status']).toMatch(/stored/);
    const hit = await h2Request(origin, caPem, `/svc${p}`);
    expect(hit.body).toBe('0123456789');
    expect(hit.headers['cache-status']).toMatch(/hit/);
    expect(hit.headers.age).toMatch(/^\d+$/);
    expect(
      (await h2Request(origin, caPem, `/svc${p}`, { headers: { 'if-none-match': '"h2"' } })).status,
    ).toBe(304);
    const range = await h2Request(origin, caPem, `/svc${p}`, { headers: { range: 'bytes=0-1' } });
    expect(range.status).toBe(206);
    expect(range.body).toBe('01');
    expect((await h2Request(origin, caPem, `/svc${p}`, { method: 'POST', body: '{}' })).status).toBe(201);
    expect((await h2Request(origin, caPem, `/svc${p}`)).headers['cache-status']).toMatch(/uri-miss/);
    expect(up.hits(p)).toBe(3);
  });
});

describe('failure modes: an unreachable upstream, an unreachable Redis', () => {
  const up = new ScriptedUpstream();
  let redis: TestRedis;
  let gw: TestGateway;
  beforeAll(async () => {
    await up.start();
    redis = await startRedis();
    gw = await startGateway(
      { svc: spec(up.url), ro: getOnlySpec(up.url) },
      { state: { redis: redis.url } },
      {
        policies: {
          cache: [
            { match: { service: 'svc' }, cache: {} },
            { match: { service: 'ro' }, cache: { staleIfUnreachable: true } },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up.close();
    await redis?.stop();
  });

  it('with Redis down, forwards every request uncached; once it is back, caches again', async () => {
    const p = fresh('down');
    up.scripts.set(p, ({ n }) => ({ headers: { 'cache-control': 'max-age=60' }, body: `v${n}` }));
    await redis.stop();
    expect((await get(gw, `/svc${p}`)).body).toBe('v1');
    expect((await get(gw, `/svc${p}`)).body).toBe('v2');
    await redis.restart();
    await vi.waitFor(async () => {
      await get(gw, `/svc${p}`);
      expect((await get(gw, `/svc${p}`)).headers.get('cache-status')).toMatch(/hit/);
    });
  });

  it('serves a stale entry when no upstream answers only with staleIfUnreachable (default: the 502)', async () => {
    const p = fresh('gone');
    const id = fresh('gone');
    up.scripts.set(p, () => ({
      headers: { 'cache-control': 'max-age=10', age: '20', etag: '"s"' },
      body: 'old',
    }));
    up.scripts.set(`/items${id}`, () => ({
      headers: { 'cache-control': 'max-age=10', age: '20', etag: '"s"' },
      body: 'old',
    }));
    await get(gw, `/svc${p}`);
    await get(gw, `/ro/items${id}`);
    await up.close();
    const plain = await get(gw, `/svc${p}`);
    expect(plain.status).toBe(502);
    const allowed = await get(gw, `/ro/items${id}`);
    expect(allowed.status).toBe(200);
    expect(allowed.body).toBe('old');
    expect(allowed.headers.get('cache-status')).toMatch(/detail=stale-if-unreachable; fwd-status=502/);
  });
});
