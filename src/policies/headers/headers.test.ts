import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policySlice } from '../../../test/helpers/policy.ts';
import { buildChain, createContext, runChain } from '../../pipeline/chain.ts';
import type { PolicyDeps } from '../../pipeline/types.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type HeadersConfig, HSTS_VALUE, headersPolicy, SECURITY_HEADERS } from './headers.ts';

const logger = pino({ level: 'silent' });
const route = { service: 'svc', operationId: 'op', method: 'GET', specPath: '/x' } as Route;
const service = { name: 'svc' } as Service;
const deps = { route, service, logger } as unknown as PolicyDeps;

/** Upstream that echoes the request headers it got and answers with `?set=name:value` headers. */
let upstream: Server;
let upstreamUrl: string;
beforeAll(async () => {
  upstream = createServer((req, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const extra: Record<string, string> = {
      'x-upstream-secret': 'internal',
      'content-type': 'application/json',
    };
    for (const pair of url.searchParams.getAll('set')) {
      const i = pair.indexOf(':');
      extra[pair.slice(0, i)] = pair.slice(i + 1);
    }
    res.writeHead(200, extra).end(JSON.stringify({ headers: req.headers }));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
const open: Array<{ close(): Promise<unknown> }> = [];
afterAll(async () => {
  await Promise.all(open.map((o) => o.close()));
  await new Promise((r) => upstream.close(r));
});

/** A real gateway slice: Fastify → headers chain → undici forwarder → the echo upstream. */
async function gateway(config: HeadersConfig): Promise<FastifyInstance> {
  const slice = await policySlice({
    kind: headersPolicy,
    config,
    upstreams: [upstreamUrl],
    trustProxy: ['127.0.0.1'],
  });
  open.push(slice);
  return slice.app;
}

const seen = (body: string): IncomingHttpHeaders =>
  (JSON.parse(body) as { headers: IncomingHttpHeaders }).headers;

describe('headers', () => {
  test('sets and removes request headers on what the upstream receives', async () => {
    const app = await gateway({ request: { set: { 'X-Tenant': 'acme' }, remove: ['X-Debug', 'Cookie'] } });
    const res = await app.inject({
      url: '/x',
      headers: { 'x-debug': '1', cookie: 'a=b', 'x-tenant': 'spoofed', 'x-kept': 'yes' },
    });
    const got = seen(res.body);
    expect(got['x-tenant']).toBe('acme');
    expect(got['x-debug']).toBeUndefined();
    expect(got.cookie).toBeUndefined();
    expect(got['x-kept']).toBe('yes');
  });

  test('sets and removes response headers on what the client receives', async () => {
    const app = await gateway({
      response: { set: { 'Cache-Control': 'no-store' }, remove: ['X-Upstream-Secret'] },
    });
    const res = await app.inject({ url: '/x?set=cache-control:public' });
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['x-upstream-secret']).toBeUndefined();
    expect(res.headers['x-content-type-options']).toBeUndefined();
  });

  test('securityHeaders adds the default set; no HSTS over plain HTTP', async () => {
    const app = await gateway({ securityHeaders: true });
    const res = await app.inject({ url: '/x' });
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect(res.headers[name]).toBe(value);
    expect(res.headers['strict-transport-security']).toBeUndefined();
  });

  test('securityHeaders adds HSTS when the client connection is TLS (via a trusted proxy)', async () => {
    const app = await gateway({ securityHeaders: true });
    const res = await app.inject({ url: '/x', headers: { 'x-forwarded-proto': 'https' } });
    expect(res.headers['strict-transport-security']).toBe(HSTS_VALUE);
  });

  test("an upstream's own security header value is kept", async () => {
    const app = await gateway({ securityHeaders: true });
    const res = await app.inject({ url: "/x?set=content-security-policy:default-src 'self'" });
    expect(res.headers['content-security-policy']).toBe("default-src 'self'");
    expect(res.headers['x-frame-options']).toBe('DENY');
  });

  test('response.remove opts out of one security header; response.set overrides another', async () => {
    const app = await gateway({
      securityHeaders: true,
      response: { remove: ['X-Frame-Options'], set: { 'Referrer-Policy': 'same-origin' } },
    });
    const res = await app.inject({ url: '/x' });
    expect(res.headers['x-frame-options']).toBeUndefined();
    expect(res.headers['referrer-policy']).toBe('same-origin');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });

  test('dry-run changes nothing and records what it would apply', async () => {
    const config: HeadersConfig = {
      mode: 'dry-run',
      securityHeaders: true,
      request: { set: { 'x-tenant': 'acme' } },
      response: { remove: ['x-upstream-secret'] },
    };
    const chain = await buildChain(
      [
        {
          kind: headersPolicy,
          config,
          rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' },
        },
      ],
      deps,
    );
    const app = Fastify();
    app.get('/x', async (req, reply) => {
      const ctx = createContext(req, reply, route, service);
      await runChain(chain, ctx);
      return {
        ctx: { set: ctx.setUpstreamHeaders, edits: ctx.responseEdits.length, decisions: ctx.decisions },
      };
    });
    open.push(app);
    const res = await app.inject({ url: '/x' });
    const { ctx } = res.json();
    expect(ctx.set).toEqual({});
    expect(ctx.edits).toBe(0);
    expect(ctx.decisions).toEqual([
      expect.objectContaining({
        policy: 'headers',
        outcome: 'allow',
        detail: expect.objectContaining({
          request: { set: { 'x-tenant': 'acme' }, remove: [] },
          response: expect.objectContaining({ remove: ['x-upstream-secret'] }),
        }),
      }),
    ]);
    const gw = await gateway(config);
    const forwarded = await gw.inject({ url: '/x' });
    expect(seen(forwarded.body)['x-tenant']).toBeUndefined();
    expect(forwarded.headers['x-upstream-secret']).toBe('internal');
    expect(forwarded.headers['x-content-type-options']).toBeUndefined();
  });

  test('the schema rejects header values that could split the header block', async () => {
    const { compileCheck } = await import('../../config/validate.ts');
    const check = compileCheck(headersPolicy.schema);
    const source = { file: 'p.yaml', value: null, lineOf: () => undefined } as never;
    expect(check({ response: { set: { 'x-a': 'ok\r\nset-cookie: evil=1' } } }, source)).not.toEqual([]);
    expect(check({ response: { set: { 'bad name': 'v' } } }, source)).not.toEqual([]);
    expect(check({ response: { set: { 'x-a': 'fine' } }, securityHeaders: true }, source)).toEqual([]);
  });
});
