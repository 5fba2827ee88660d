/**
 * The `compress` policy through a real gateway to a real upstream: each encoding decodes back to
 * the upstream's exact bytes, Accept-Encoding q-values pick the encoding, and what must never be
 * compressed (small, already encoded, unlisted types, 206, no-transform, HEAD bodies) is passed as
 * the upstream sent it. Vary, ETag, HEAD, HTTP/2, mock answers and event streams too.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';

/** A JSON document of exactly `n` bytes, different on every line (so it compresses, but not to nothing). */
function jsonBody(n: number): Buffer {
  const parts: string[] = [];
  let size = 2;
  for (let i = 0; size < n; i++) {
    const item = `${i > 0 ? ',' : ''}{"id":${i},"name":"item-${(i * 7919) % 10007}","ok":${i % 3 === 0}}`;
    parts.push(item);
    size += item.length;
  }
  const text = `[${parts.join('')}]`;
  // Pad or cut to exactly n bytes while staying valid enough for a compressor (JSON validity is not checked).
  return Buffer.from(text.length >= n ? text.slice(0, n) : text.padEnd(n, ' '));
}

const BODY = jsonBody(20_000);
const SMALL = jsonBody(200);
/** A body of known length far above minBytes: compressed as a stream, without intermediate flushes. */
const LARGE = jsonBody(300_000);
const ETAG = '"v1-abc"';

const decoders: Record<string, (b: Buffer) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  br: promisify(zlib.brotliDecompress),
  zstd: promisify(zlib.zstdDecompress),
};

/** The upstream's event stream: `release` ends it; `closed` once its response closed. */
interface Sse {
  release?: () => void;
  closed?: boolean;
}

/** Requests the test upstream answered. */
let upstreamHits = 0;

/** The test upstream: one path per case. */
function handle(req: IncomingMessage, res: ServerResponse, sse: Sse): void {
  upstreamHits++;
  const path = new URL(req.url ?? '/', 'http://x').pathname.replace(/^\/+/, '/');
  const json = { 'content-type': 'application/json; charset=utf-8' };
  switch (path) {
    case '/json':
      res.writeHead(200, {
        ...json,
        'content-length': BODY.length,
        etag: ETAG,
        'accept-ranges': 'bytes',
        'content-md5': 'x',
      });
      res.end(BODY);
      return;
    case '/large':
      res.writeHead(200, { ...json, 'content-length': LARGE.length });
      res.end(LARGE);
      return;
    case '/problem':
      res.writeHead(404, { 'content-type': 'application/problem+json', 'content-length': BODY.length });
      res.end(BODY);
      return;
    case '/chunked':
      res.writeHead(200, json);
      res.write(BODY.subarray(0, 5000));
      setTimeout(() => res.end(BODY.subarray(5000)), 5);
      return;
    case '/small':
      res.writeHead(200, { ...json, 'content-length': SMALL.length, etag: ETAG });
      res.end(SMALL);
      return;
    case '/encoded': {
      const gz = zlib.gzipSync(BODY);
      res.writeHead(200, { ...json, 'content-encoding': 'gzip', 'content-length': gz.length, etag: ETAG });
      res.end(gz);
      return;
    }
    case '/png':
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': BODY.length });
      res.end(BODY);
      return;
    case '/svg':
      res.writeHead(200, { 'content-type': 'image/svg+xml', 'content-length': BODY.length });
      res.end(BODY);
      return;
    case '/untyped':
      res.writeHead(200, { 'content-length': BODY.length });
      res.end(BODY);
      return;
    case '/range':
      res.writeHead(206, {
        ...json,
        'content-range': `bytes 0-9999/${BODY.length}`,
        'content-length': 10_000,
        etag: ETAG,
      });
      res.end(BODY.subarray(0, 10_000));
      return;
    case '/no-transform':
      res.writeHead(200, { ...json, 'content-length': BODY.length, 'cache-control': 'public, no-transform' });
      res.end(BODY);
      return;
    case '/vary':
      res.writeHead(200, { ...json, 'content-length': BODY.length, vary: 'Origin' });
      res.end(BODY);
      return;
    case '/not-modified':
      res.writeHead(304, { etag: ETAG });
      res.end();
      return;
    case '/empty':
      res.writeHead(204);
      res.end();
      return;
    case '/events':
      // The first event, then nothing until the test releases the stream.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('event: hello\ndata: first\n\n');
      sse.release = () => res.end('data: last\n\n');
      res.on('close', () => {
        sse.closed = true;
      });
      return;
    default:
      res.writeHead(404).end();
  }
}

const OPERATIONS = Object.fromEntries(
  [
    'json',
    'problem',
    'large',
    'chunked',
    'small',
    'encoded',
    'png',
    'svg',
    'untyped',
    'range',
    'no-transform',
    'vary',
    'not-modified',
    'empty',
    'events',
  ].map((p) => [`GET /${p}`, p.replace(/-(\w)/g, (_m, c: string) => c.toUpperCase())]),
);

/** GET (or another method) through the gateway; the raw (still encoded) body. */
async function fetchRaw(
  url: string,
  acceptEncoding: string | undefined,
  extra: Record<string, string> = {},
  method: 'GET' | 'HEAD' = 'GET',
) {
  const headers: Record<string, string> = { ...extra };
  if (acceptEncoding !== undefined) headers['accept-encoding'] = acceptEncoding;
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

describe('compress policy', () => {
  let upstream: Server;
  const sse: Sse = {};
  let gw: TestGateway;
  let certDir: string;
  let caPem = '';
  let base = '';
  let plain = '';
  let mock = '';

  beforeAll(async () => {
    upstream = createServer((req, res) => handle(req, res, sse));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    const mockSpec = spec({ title: 'M', basePath: '/mock', operations: {}, extra: { mock: true } });
    delete (mockSpec['x-portcullis'] as Record<string, unknown>).upstreams;
    mockSpec.paths = {
      '/doc': {
        get: {
          operationId: 'mockDoc',
          responses: {
            '200': {
              description: 'ok',
              content: { 'application/json': { example: { text: BODY.toString() } } },
            },
          },
        },
      },
    };
    gw = await startGateway(
      {
        c: spec({ title: 'C', basePath: '/c', upstreams: [upUrl], operations: OPERATIONS }),
        p: spec({ title: 'P', basePath: '/p', upstreams: [upUrl], operations: OPERATIONS }),
        d: spec({ title: 'D', basePath: '/d', upstreams: [upUrl], operations: OPERATIONS }),
        k: spec({ title: 'K', basePath: '/k', upstreams: [upUrl], operations: OPERATIONS }),
        m: mockSpec,
      },
      {
        listen: {
          http: { port: 0, host: '127.0.0.1' },
          https: { port: 0, host: '127.0.0.1', ...pair },
        },
      },
      {
        policies: {
          compress: [
            { match: { service: 'c' }, compress: {} },
            { match: { service: 'm' }, compress: {} },
            { match: { service: 'd' }, compress: { mode: 'dry-run' } },
            { match: { service: 'k' }, compress: {}, cache: { ttl: '1m' } },
          ],
        },
      },
    );
    base = `${gw.url}/c`;
    plain = `${gw.url}/p`;
    mock = `${gw.url}/mock`;
  });
  afterAll(async () => {
    sse.release?.();
    await gw?.close();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
    if (certDir) await removeCertDir(certDir);
  });

  describe.each(['br', 'zstd', 'gzip'])('%s', (enc) => {
    it('decodes back to the exact upstream bytes, with Vary, a weak ETag and no Content-Length', async () => {
      const res = await fetchRaw(`${base}/json`, enc);
      expect(res.status).toBe(200);
      expect(res.headers['content-encoding']).toBe(enc);
      expect(res.headers.vary).toBe('Accept-Encoding');
      expect(res.headers.etag).toBe(`W/${ETAG}`);
      expect(res.headers['content-length']).toBeUndefined();
      expect(res.headers['content-md5']).toBeUndefined();
      expect(res.headers['accept-ranges']).toBeUndefined();
      expect(res.body.length).toBeLessThan(BODY.length / 2);
      expect((await decoders[enc]?.(res.body))?.equals(BODY)).toBe(true);
    });

    it('decodes a 300 KB body of known length back to the exact upstream bytes', async () => {
      const res = await fetchRaw(`${base}/large`, enc);
      expect(res.headers['content-encoding']).toBe(enc);
      expect(res.headers['content-length']).toBeUndefined();
      expect((await decoders[enc]?.(res.body))?.equals(LARGE)).toBe(true);
    });

    it('decodes a chunked (unknown length) body back to the exact upstream bytes', async () => {
      const res = await fetchRaw(`${base}/chunked`, enc);
      expect(res.headers['content-encoding']).toBe(enc);
      expect((await decoders[enc]?.(res.body))?.equals(BODY)).toBe(true);
    });
  });

  const NEGOTIATION: Array<[string, string | undefined, string | undefined]> = [
    ['the route order when all are equal', 'gzip, deflate, br, zstd', 'br'],
    ['the highest q-value', 'br;q=0.5, gzip;q=0.9, zstd;q=0.8', 'gzip'],
    ['a q=0 exclusion', 'br;q=0, gzip', 'gzip'],
    ['the wildcard for unlisted encodings', '*', 'br'],
    ['the wildcard minus an exclusion', '*, br;q=0', 'zstd'],
    ['x-gzip as gzip', 'x-gzip', 'gzip'],
    ['case-insensitive names and spaces', ' GZIP ; Q=1 ', 'gzip'],
    ['identity only', 'identity', undefined],
    ['identity preferred over a lower-weighted coding', 'gzip;q=0.5, identity', undefined],
    ['everything excluded', 'br;q=0, zstd;q=0, gzip;q=0', undefined],
    ['only unknown encodings', 'deflate, compress', undefined],
    ['no Accept-Encoding at all', undefined, undefined],
    ['an empty Accept-Encoding', '', undefined],
    ['a malformed q-value ignored', 'br;q=2, gzip', 'gzip'],
    ['identity listed below the coding', 'identity;q=0.5, gzip', 'gzip'],
  ];
  it.each(NEGOTIATION)('negotiation: %s (%j → %s)', async (_d, ae, expected) => {
    const res = await fetchRaw(`${base}/json`, ae);
    expect(res.status).toBe(200);
    expect(res.headers['content-encoding']).toBe(expected);
    expect(res.headers.vary).toBe('Accept-Encoding');
    if (expected === undefined) {
      expect(res.body.equals(BODY)).toBe(true);
      expect(res.headers['content-length']).toBe(String(BODY.length));
      expect(res.headers.etag).toBe(ETAG);
    } else {
      expect((await decoders[expected]?.(res.body))?.equals(BODY)).toBe(true);
    }
  });

  const UNTOUCHED: Array<[string, string, number, Buffer | undefined]> = [
    ['a body under minBytes', '/small', 200, SMALL],
    ['an unlisted type (image/png)', '/png', 200, BODY],
    ['a response without Content-Type', '/untyped', 200, BODY],
    ['a 206 partial answer', '/range', 206, BODY.subarray(0, 10_000)],
    ['Cache-Control: no-transform', '/no-transform', 200, BODY],
  ];
  it.each(UNTOUCHED)('leaves %s untouched, with Vary', async (_d, path, status, expected) => {
    const res = await fetchRaw(`${base}${path}`, 'br, gzip, zstd');
    expect(res.status).toBe(status);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.headers['content-length']).toBe(String(expected?.length));
    expect(res.body.equals(expected as Buffer)).toBe(true);
    expect(res.headers.vary).toBe('Accept-Encoding');
  });

  it('leaves an already encoded body as the upstream encoded it', async () => {
    const res = await fetchRaw(`${base}/encoded`, 'br, zstd, gzip');
    expect(res.headers['content-encoding']).toBe('gzip');
    expect(res.headers.etag).toBe(ETAG);
    expect(res.body.equals(zlib.gzipSync(BODY))).toBe(true);
    expect(res.headers.vary).toBe('Accept-Encoding');
  });

  it('compresses listed types beyond JSON (SVG) and error answers with a body', async () => {
    const svg = await fetchRaw(`${base}/svg`, 'gzip');
    expect(svg.headers['content-encoding']).toBe('gzip');
    const problem = await fetchRaw(`${base}/problem`, 'gzip');
    expect(problem.status).toBe(404);
    expect(problem.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(problem.body).equals(BODY)).toBe(true);
  });

  it('merges Accept-Encoding into an existing Vary', async () => {
    const res = await fetchRaw(`${base}/vary`, 'gzip');
    expect(res.headers.vary).toBe('Origin, Accept-Encoding');
  });

  it('a 304 keeps its empty body, gets Vary and the weak tag the compressed answer had', async () => {
    const res = await fetchRaw(`${base}/not-modified`, 'gzip', { 'if-none-match': `W/${ETAG}` });
    expect(res.status).toBe(304);
    expect(res.headers.vary).toBe('Accept-Encoding');
    expect(res.headers.etag).toBe(`W/${ETAG}`);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.body.length).toBe(0);
  });

  it('a 304 to a client validating its identity copy (strong tag) keeps the strong tag', async () => {
    const res = await fetchRaw(`${base}/not-modified`, 'gzip', { 'if-none-match': ETAG });
    expect(res.status).toBe(304);
    expect(res.headers.etag).toBe(ETAG);
    expect(res.headers.vary).toBe('Accept-Encoding');
  });

  it('a 204 stays empty', async () => {
    const res = await fetchRaw(`${base}/empty`, 'gzip');
    expect(res.status).toBe(204);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.body.length).toBe(0);
  });

  it('HEAD gets the headers GET gets, and no body', async () => {
    for (const ae of ['br', 'identity']) {
      const get = await fetchRaw(`${base}/json`, ae);
      const head = await fetchRaw(`${base}/json`, ae, {}, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.body.length).toBe(0);
      for (const name of ['content-encoding', 'content-length', 'etag', 'vary', 'content-type']) {
        expect([ae, name, head.headers[name]]).toEqual([ae, name, get.headers[name]]);
      }
    }
  });

  it('a route without the policy is neither compressed nor given Vary', async () => {
    const res = await fetchRaw(`${plain}/json`, 'br, gzip');
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.headers.vary).toBeUndefined();
    expect(res.body.equals(BODY)).toBe(true);
  });

  it('with the cache on the route: one upstream fetch, each answer encoded for its client, conditional requests too', async () => {
    const seen = upstreamHits;
    const first = await fetchRaw(`${gw.url}/k/json`, 'br');
    expect(first.headers['content-encoding']).toBe('br');
    expect(first.headers['cache-status']).toMatch(/fwd=/);
    const hit = await fetchRaw(`${gw.url}/k/json`, 'br');
    expect(hit.headers['cache-status']).toMatch(/hit/);
    expect(hit.headers['content-encoding']).toBe('br');
    expect(hit.headers.etag).toBe(`W/${ETAG}`);
    expect(zlib.brotliDecompressSync(hit.body).equals(BODY)).toBe(true);
    // The cache keeps the upstream's bytes; each answer is encoded for its own client.
    const plainClient = await fetchRaw(`${gw.url}/k/json`, undefined);
    expect(plainClient.headers['content-encoding']).toBeUndefined();
    expect(plainClient.body.equals(BODY)).toBe(true);
    const gz = await fetchRaw(`${gw.url}/k/json`, 'gzip');
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(gz.body).equals(BODY)).toBe(true);
    // The client revalidates its compressed copy with the weak tag: 304 from the cache, weak tag.
    const revalidated = await fetchRaw(`${gw.url}/k/json`, 'br', { 'if-none-match': `W/${ETAG}` });
    expect(revalidated.status).toBe(304);
    expect(revalidated.headers.etag).toBe(`W/${ETAG}`);
    expect(revalidated.headers.vary).toBe('Accept-Encoding');
    expect(upstreamHits - seen).toBe(1);
  });

  it('dry-run compresses nothing and adds no Vary', async () => {
    const res = await fetchRaw(`${gw.url}/d/json`, 'br, gzip');
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.headers.vary).toBeUndefined();
    expect(res.body.equals(BODY)).toBe(true);
  });

  it('a client leaving a compressed event stream ends the upstream request', async () => {
    sse.release = undefined;
    sse.closed = false;
    const client = new Client(gw.url);
    const res = await client.request({
      path: '/c/events',
      method: 'GET',
      headers: { 'accept-encoding': 'br' },
    });
    expect(res.headers['content-encoding']).toBe('br');
    const first = await res.body[Symbol.asyncIterator]().next();
    expect(first.done).toBe(false);
    await client.destroy();
    await expect.poll(() => sse.closed).toBe(true);
  });

  it('an event stream: the first event arrives compressed before the upstream ends the stream', async () => {
    sse.release = undefined;
    const client = new Client(gw.url);
    try {
      const res = await client.request({
        path: '/c/events',
        method: 'GET',
        headers: { 'accept-encoding': 'gzip' },
      });
      expect(res.headers['content-encoding']).toBe('gzip');
      const gunzip = zlib.createGunzip();
      res.body.pipe(gunzip);
      const decoded = gunzip[Symbol.asyncIterator]();
      const first = await decoded.next();
      // The upstream has not ended the stream: the event came through on its own.
      const release = sse.release as (() => void) | undefined;
      expect(release).toBeTypeOf('function');
      expect(String(first.value)).toBe('event: hello\ndata: first\n\n');
      release?.();
      let rest = '';
      for (let r = await decoded.next(); !r.done; r = await decoded.next()) rest += String(r.value);
      expect(rest).toBe('data: last\n\n');
    } finally {
      await client.close();
    }
  });

  it('compresses over HTTP/2 too', async () => {
    const session = h2connect(gw.addresses.https ?? '', { ca: caPem, servername: 'localhost' });
    try {
      for (const method of ['GET', 'HEAD']) {
        const { headers, body } = await new Promise<{ headers: IncomingHttpHeaders; body: Buffer }>(
          (resolve, reject) => {
            const stream = session.request({
              ':method': method,
              ':path': '/c/json',
              'accept-encoding': 'zstd',
            });
            const chunks: Buffer[] = [];
            let headers: IncomingHttpHeaders = {};
            stream.on('response', (h) => {
              headers = h;
            });
            stream.on('data', (c: Buffer) => chunks.push(c));
            stream.on('end', () => resolve({ headers, body: Buffer.concat(chunks) }));
            stream.on('error', reject);
          },
        );
        expect(headers[':status']).toBe(200);
        expect(headers['content-encoding']).toBe('zstd');
        expect(headers.vary).toBe('Accept-Encoding');
        if (method === 'GET') expect(zlib.zstdDecompressSync(body).equals(BODY)).toBe(true);
        else expect(body.length).toBe(0);
      }
    } finally {
      session.close();
    }
  });

  it('mock answers of a compressing route are compressed too, HEAD matching GET', async () => {
    const get = await fetchRaw(`${mock}/doc`, 'br');
    expect(get.status).toBe(200);
    expect(get.headers['content-encoding']).toBe('br');
    expect(get.headers.vary).toBe('Accept-Encoding');
    expect(get.headers['content-length']).toBeUndefined();
    expect(JSON.parse(zlib.brotliDecompressSync(get.body).toString())).toEqual({ text: BODY.toString() });
    const head = await fetchRaw(`${mock}/doc`, 'br', {}, 'HEAD');
    expect(head.headers['content-encoding']).toBe('br');
    expect(head.headers['content-length']).toBeUndefined();
    expect(head.body.length).toBe(0);
    const identity = await fetchRaw(`${mock}/doc`, undefined);
    expect(identity.headers['content-encoding']).toBeUndefined();
    expect(identity.headers.vary).toBe('Accept-Encoding');
    const idHead = await fetchRaw(`${mock}/doc`, undefined, {}, 'HEAD');
    expect(idHead.headers['content-length']).toBe(identity.headers['content-length']);
  });
});
