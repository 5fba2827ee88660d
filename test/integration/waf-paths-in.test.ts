/**
 * The WAF (and validate alone) read a body the same on every path in: HTTP/2 over TLS (DATA frames, no
 * content-length), HTTP/1.1 chunked, and a body that arrives in pieces well after its headers
 * (the chain waits for it before the WAF judges: pipeline/chain.ts, Hook.readAhead). Each time an
 * attack is 403 with the upstream untouched, and a benign body reaches the upstream byte for byte;
 * with `validate` on the same route, the body the WAF read is the one validated and forwarded.
 */
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { type ClientHttp2Session, connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const ATTACK = JSON.stringify({ order: { note: '<script>alert(document.cookie)</script>' }, qty: 1 });
const BENIGN = JSON.stringify({ name: "O'Brien", note: "Leave it at the door, it's fine", qty: 2 });

describe('the WAF on every path in', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  let certDir: string;
  let session: ClientHttp2Session;

  beforeAll(async () => {
    upstream = await startUpstream({ name: 'u1' });
    const authority = await createCa();
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gateway', await authority.issue({ names: ['localhost'] }));
    const shop = spec({ basePath: '/shop', upstreams: [upstream.url] });
    shop.paths = {
      '/orders': {
        post: {
          operationId: 'createOrder',
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: { type: 'object', properties: { qty: { type: 'integer', maximum: 10 } } },
              },
            },
          },
          responses: { '200': { description: 'ok' } },
        },
      },
    };
    // The same operation with only `validate`, and a text/plain body it does not read.
    const desk = spec({ basePath: '/desk', upstreams: [upstream.url] });
    desk.paths = structuredClone(shop.paths);
    const content = (
      desk.paths as Record<string, { post: { requestBody: { content: Record<string, unknown> } } }>
    )['/orders']?.post.requestBody.content;
    if (content) content['text/plain'] = { schema: { type: 'string' } };
    gw = await startGateway(
      { shop, desk },
      {
        listen: {
          http: { port: 0, host: '127.0.0.1' },
          https: { port: 0, host: '127.0.0.1', http2: true, ...pair },
        },
      },
      {
        policies: {
          guard: [
            { match: { service: 'shop' }, waf: { mode: 'block' }, validate: {} },
            { match: { service: 'desk' }, validate: {} },
          ],
        },
      },
    );
    const origin = (gw.addresses.https ?? '').replace('127.0.0.1', 'localhost');
    session = connect(origin, { ca: authority.cert });
    await once(session, 'remoteSettings');
  }, 30_000);

  afterAll(async () => {
    session?.close();
    await gw?.close();
    await upstream?.close();
    if (certDir) await removeCertDir(certDir);
  });

  /** POST over HTTP/2, the body in `pieces` DATA frames `gapMs` apart, no content-length. */
  async function h2Post(
    body: string,
    pieces = 1,
    gapMs = 0,
    base = '/shop',
    type = 'application/json',
  ): Promise<{ status: number; text: string }> {
    const stream = session.request({
      ':method': 'POST',
      ':path': `${base}/orders`,
      'content-type': type,
    });
    const size = Math.ceil(body.length / pieces);
    for (let i = 0; i < body.length; i += size) {
      if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      stream.write(body.slice(i, i + size));
    }
    stream.end();
    const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
    let text = '';
    stream.setEncoding('utf8');
    for await (const chunk of stream) text += chunk;
    return { status: Number(headers[':status']), text };
  }

  /** POST over HTTP/1.1 chunked (no content-length), the body in `pieces` chunks `gapMs` apart. */
  async function chunkedPost(
    body: string,
    pieces: number,
    gapMs: number,
  ): Promise<{ status: number; text: string }> {
    const url = new URL(`${gw.url}/shop/orders`);
    const req = httpRequest({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
    });
    const answered = once(req, 'response');
    const size = Math.ceil(body.length / pieces);
    for (let i = 0; i < body.length; i += size) {
      if (i > 0) await new Promise((r) => setTimeout(r, gapMs));
      req.write(body.slice(i, i + size));
    }
    req.end();
    const [res] = (await answered) as [import('node:http').IncomingMessage];
    let text = '';
    res.setEncoding('utf8');
    for await (const chunk of res) text += chunk;
    return { status: res.statusCode ?? 0, text };
  }

  const paths: Array<[string, (body: string) => Promise<{ status: number; text: string }>]> = [
    ['HTTP/2, one DATA frame', (b) => h2Post(b)],
    ['HTTP/2, four DATA frames 30 ms apart', (b) => h2Post(b, 4, 30)],
    ['HTTP/1.1 chunked, four chunks 30 ms apart', (b) => chunkedPost(b, 4, 30)],
  ];

  test.each(paths)('%s: an attack is 403 and never reaches the upstream', async (_what, post) => {
    const before = upstream.seen.length;
    const { status, text } = await post(ATTACK);
    expect(status).toBe(403);
    expect(JSON.parse(text)).toMatchObject({ code: 'PC_WAF_BLOCKED' });
    expect(text).not.toContain('<script>');
    expect(upstream.seen.length).toBe(before);
  });

  test.each(paths)(
    '%s: a benign body is validated and reaches the upstream byte for byte',
    async (_what, post) => {
      const before = upstream.seen.length;
      const { status } = await post(BENIGN);
      expect(status).toBe(200);
      const reached = upstream.seen.slice(before);
      expect(reached).toHaveLength(1);
      expect(reached[0]?.body).toBe(BENIGN);
    },
  );

  test.each(paths)(
    '%s: a body the schema refuses is 400 after the WAF let it through',
    async (_what, post) => {
      const before = upstream.seen.length;
      const { status, text } = await post(JSON.stringify({ qty: 99, note: 'plenty' }));
      expect(status).toBe(400);
      expect(JSON.parse(text)).toMatchObject({ code: 'PC_VALIDATION_FAILED' });
      expect(upstream.seen.length).toBe(before);
    },
  );

  describe('validate alone: the chain reads a JSON body ahead, and only a JSON body', () => {
    test('HTTP/2, four DATA frames 30 ms apart: an invalid body is 400, a valid one reaches the upstream whole', async () => {
      const before = upstream.seen.length;
      const bad = await h2Post(JSON.stringify({ qty: 99 }), 4, 30, '/desk');
      expect(bad.status).toBe(400);
      expect(JSON.parse(bad.text)).toMatchObject({ code: 'PC_VALIDATION_FAILED' });
      expect(upstream.seen.length).toBe(before);
      const good = await h2Post(BENIGN, 4, 30, '/desk');
      expect(good.status).toBe(200);
      expect(upstream.seen.slice(before).map((r) => r.body)).toEqual([BENIGN]);
    });

    test('a text/plain body (declared, not JSON) is not read by validate and reaches the upstream whole', async () => {
      const before = upstream.seen.length;
      const text = 'not json at all { '.repeat(50);
      const res = await h2Post(text, 4, 30, '/desk', 'text/plain');
      expect(res.status).toBe(200);
      expect(upstream.seen.slice(before).map((r) => r.body)).toEqual([text]);
    });
  });
});
