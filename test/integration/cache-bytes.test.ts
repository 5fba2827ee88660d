/**
 * The access log's `bytes` is the body the client actually got, on every kind of cache answer
 * (miss, hit, HEAD, Range, 304, revalidated, stale-if-error, compressed) and on plain forwarded
 * answers with and without compression: a real gateway with its log captured, a real upstream,
 * and a raw HTTP client that counts the body bytes on the wire (no decompression).
 *
 * Before the fix a miss counted the upstream body twice (the forwarder and the cache's writer both
 * added it), a hit logged 0, and compressed answers logged the uncompressed size.
 */
import {
  createServer,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  request,
  type Server,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';

/** Compressible (well over compress's minBytes) and with a known length. */
const BODY = 'All work and no play makes a gateway dull. '.repeat(60);
const BODY_BYTES = Buffer.byteLength(BODY);

interface Scripted {
  status?: number;
  headers?: OutgoingHttpHeaders;
}
type Script = (req: { headers: IncomingHttpHeaders; n: number }) => Scripted;

/** An upstream answering BODY (none to HEAD and 304) with the scripted status and headers per path. */
async function scriptedUpstream() {
  const scripts = new Map<string, Script>();
  const hits = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const n = (hits.get(path) ?? 0) + 1;
    hits.set(path, n);
    const out = scripts.get(path)?.({ headers: req.headers, n }) ?? {};
    const status = out.status ?? 200;
    res.writeHead(status, { 'content-type': 'text/plain', ...out.headers });
    res.end(req.method === 'HEAD' || status === 304 ? undefined : BODY);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    scripts,
    hits: (path: string) => hits.get(path) ?? 0,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}

function spec(title: string, basePath: string, upstream: string) {
  const op = (operationId: string) => ({
    operationId,
    parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
    responses: { '200': { description: 'ok' } },
  });
  return {
    openapi: '3.1.0',
    info: { title, version: '1.0.0' },
    'x-portcullis': { basePath, upstreams: [{ url: upstream }], retries: 0 },
    paths: {
      '/plain/{id}': { get: op(`${title}Plain`), head: op(`${title}PlainHead`) },
      '/packed/{id}': { get: op(`${title}Packed`) },
    },
  };
}

/** A mock service (answers from its spec's example) with one compressible GET. */
function mockSpec() {
  return {
    openapi: '3.1.0',
    info: { title: 'mocked', version: '1.0.0' },
    'x-portcullis': { basePath: '/m', mock: true },
    paths: {
      '/doc': {
        get: {
          operationId: 'mockDoc',
          responses: {
            '200': { description: 'ok', content: { 'text/plain': { example: BODY } } },
          },
        },
      },
    },
  };
}

/** A request with exactly these headers; the body bytes as received (still compressed). */
function send(gw: TestGateway, path: string, headers: Record<string, string> = {}, method = 'GET') {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; received: number }>((ok, fail) => {
    const req = request(gw.url + path, { method, headers }, (res) => {
      let received = 0;
      res.on('data', (c: Buffer) => {
        received += c.length;
      });
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, received }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('access-log bytes are the body bytes the client got', () => {
  let up: Awaited<ReturnType<typeof scriptedUpstream>>;
  let gw: TestGateway;
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  let counter = 0;

  /** Script `/plain/<id>` or `/packed/<id>` on the upstream; returns its id. */
  const script = (
    kind: 'plain' | 'packed',
    s: Script = () => ({ headers: { 'cache-control': 'max-age=60' } }),
  ) => {
    const id = `r${++counter}`;
    up.scripts.set(`/${kind}/${id}`, s);
    return id;
  };

  /** Send, then wait for the request's access-log line; returns the answer and the logged bytes. */
  async function logged(path: string, headers: Record<string, string> = {}, method = 'GET') {
    const r = await send(gw, path, headers, method);
    const id = r.headers['x-request-id'];
    let entry: Record<string, unknown> | undefined;
    await expect
      .poll(
        () =>
          (entry = lines
            .map((l) => JSON.parse(l) as Record<string, unknown>)
            .find((e) => e.msg === 'request' && e.reqId === id)),
        { timeout: 5_000, interval: 10 },
      )
      .toBeDefined();
    return { ...r, bytes: (entry as Record<string, unknown>).bytes };
  }

  beforeAll(async () => {
    up = await scriptedUpstream();
    gw = await startGateway(
      {
        cached: spec('cached', '/c', up.url),
        direct: spec('direct', '/d', up.url),
        down: spec('down', '/down', 'http://127.0.0.1:9'),
        mocked: mockSpec(),
      },
      { logLevel: 'info' },
      {
        logger,
        policies: {
          rules: [
            { match: { service: 'cached' }, cache: {} },
            { match: { service: 'down' }, cache: {} },
            { match: { service: 'cached', operations: ['cachedPacked'] }, compress: {} },
            { match: { service: 'direct', operations: ['directPacked'] }, compress: {} },
            { match: { service: 'mocked' }, compress: {} },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up?.close();
  });

  it('a miss counts the body once, a hit counts it too', async () => {
    const id = script('plain');
    const miss = await logged(`/c/plain/${id}`);
    expect(miss.headers['cache-status']).toMatch(/fwd=uri-miss; fwd-status=200; stored/);
    expect(miss.received).toBe(BODY_BYTES);
    expect(miss.bytes).toBe(BODY_BYTES);
    const hit = await logged(`/c/plain/${id}`);
    expect(hit.headers['cache-status']).toMatch(/; hit; /);
    expect(hit.received).toBe(BODY_BYTES);
    expect(hit.bytes).toBe(BODY_BYTES);
    expect(up.hits(`/plain/${id}`)).toBe(1);
  });

  it('a HEAD (miss or hit) counts 0', async () => {
    const id = script('plain');
    const miss = await logged(`/c/plain/${id}`, {}, 'HEAD');
    expect(miss.status).toBe(200);
    expect(miss.bytes).toBe(0);
    await logged(`/c/plain/${id}`); // stores the GET
    const hit = await logged(`/c/plain/${id}`, {}, 'HEAD');
    expect(hit.headers['cache-status']).toMatch(/; hit; /);
    expect(hit.headers['content-length']).toBe(String(BODY_BYTES));
    expect(hit.received).toBe(0);
    expect(hit.bytes).toBe(0);
  });

  it('a Range from a stored response counts the part sent', async () => {
    const id = script('plain');
    await logged(`/c/plain/${id}`);
    const part = await logged(`/c/plain/${id}`, { range: 'bytes=10-109' });
    expect(part.status).toBe(206);
    expect(part.received).toBe(100);
    expect(part.bytes).toBe(100);
  });

  it("a 304 to the client's own validator counts 0, from a miss or from the store", async () => {
    const id = script('plain', () => ({ headers: { 'cache-control': 'max-age=60', etag: '"e1"' } }));
    const miss = await logged(`/c/plain/${id}`, { 'if-none-match': '"e1"' });
    expect(miss.status).toBe(304);
    expect(miss.bytes).toBe(0);
    const hit = await logged(`/c/plain/${id}`, { 'if-none-match': '"e1"' });
    expect(hit.status).toBe(304);
    expect(hit.headers['cache-status']).toMatch(/; hit; /);
    expect(hit.bytes).toBe(0);
    expect(up.hits(`/plain/${id}`)).toBe(1);
  });

  it('a revalidated answer (upstream 304) counts the stored body sent', async () => {
    const id = script('plain', ({ n }) =>
      n === 1
        ? { headers: { 'cache-control': 'no-cache', etag: '"v1"' } }
        : { status: 304, headers: { 'cache-control': 'no-cache', etag: '"v1"' } },
    );
    await logged(`/c/plain/${id}`);
    const again = await logged(`/c/plain/${id}`);
    expect(again.headers['cache-status']).toMatch(/fwd=stale; fwd-status=304/);
    expect(again.received).toBe(BODY_BYTES);
    expect(again.bytes).toBe(BODY_BYTES);
  });

  it("a stale answer standing in for an upstream error counts the stored body, not the error's", async () => {
    const id = script('plain', ({ n }) =>
      n === 1
        ? { headers: { 'cache-control': 'max-age=1, stale-if-error=600', age: '5', etag: '"s1"' } }
        : { status: 500 },
    );
    await logged(`/c/plain/${id}`);
    const fallback = await logged(`/c/plain/${id}`);
    expect(fallback.status).toBe(200);
    expect(fallback.headers['cache-status']).toMatch(/detail=stale-if-error; fwd-status=500/);
    expect(fallback.bytes).toBe(BODY_BYTES);
  });

  it('compressed cache answers (miss and hit) count the compressed bytes sent', async () => {
    const id = script('packed');
    const gzip = { 'accept-encoding': 'gzip' };
    const miss = await logged(`/c/packed/${id}`, gzip);
    expect(miss.headers['content-encoding']).toBe('gzip');
    expect(miss.received).toBeLessThan(BODY_BYTES / 4);
    expect(miss.bytes).toBe(miss.received);
    const hit = await logged(`/c/packed/${id}`, gzip);
    expect(hit.headers['cache-status']).toMatch(/; hit; /);
    expect(hit.headers['content-encoding']).toBe('gzip');
    expect(hit.bytes).toBe(hit.received);
    const identity = await logged(`/c/packed/${id}`);
    expect(identity.headers['content-encoding']).toBeUndefined();
    expect(identity.bytes).toBe(BODY_BYTES);
  });

  it('plain forwarded answers count what the client got, compressed or not', async () => {
    const plain = await logged(`/d/plain/${script('plain')}`);
    expect(plain.bytes).toBe(BODY_BYTES);
    const packed = await logged(`/d/packed/${script('packed')}`, { 'accept-encoding': 'gzip' });
    expect(packed.headers['content-encoding']).toBe('gzip');
    expect(packed.received).toBeLessThan(BODY_BYTES / 4);
    expect(packed.bytes).toBe(packed.received);
  });

  it('mock answers count what the client got, compressed or not', async () => {
    const plain = await logged('/m/doc');
    expect(plain.status).toBe(200);
    expect(plain.bytes).toBe(plain.received);
    const packed = await logged('/m/doc', { 'accept-encoding': 'gzip' });
    expect(packed.headers['content-encoding']).toBe('gzip');
    expect(packed.received).toBeLessThan(plain.received / 4);
    expect(packed.bytes).toBe(packed.received);
  });

  it("the gateway's own problem for an unreachable upstream (cached route) counts its body once, none for HEAD", async () => {
    const cached = await logged('/down/plain/x');
    expect(cached.status).toBe(502);
    expect(cached.received).toBeGreaterThan(0);
    expect(cached.bytes).toBe(cached.received);
    const head = await logged('/down/plain/x', {}, 'HEAD');
    expect(head.status).toBe(502);
    expect(head.bytes).toBe(0);
  });
});
