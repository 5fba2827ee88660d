import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { policySlice } from '../../../test/helpers/policy.ts';
import { ConfigError } from '../../errors.ts';
import type { PolicyDeps } from '../../pipeline/types.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type CorsConfig, corsPolicy } from './cors.ts';

const logger = pino({ level: 'silent' });
const route = { service: 'svc', operationId: 'op', method: 'GET', specPath: '/x' } as Route;
const service = { name: 'svc' } as Service;
const deps = { route, service, logger } as unknown as PolicyDeps;

/** Upstream that counts requests and answers with its own (stale) CORS headers and a Vary. */
let upstream: Server;
let upstreamUrl: string;
let upstreamHits = 0;
beforeAll(async () => {
  upstream = createServer((_req, res) => {
    upstreamHits++;
    res
      .writeHead(200, {
        'content-type': 'application/json',
        'access-control-allow-origin': 'https://stale.example',
        vary: 'Accept-Encoding',
      })
      .end('{}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
const open: Array<{ close(): Promise<unknown> }> = [];
afterAll(async () => {
  await Promise.all(open.map((o) => o.close()));
  await new Promise((r) => upstream.close(r));
});

/** Fastify → cors chain → (unless answered) the real forwarder → the upstream. */
async function gateway(config: CorsConfig): Promise<FastifyInstance> {
  const slice = await policySlice({
    kind: corsPolicy,
    config,
    upstreams: [upstreamUrl],
    exposeDecisions: true,
  });
  open.push(slice);
  return slice.app;
}

const preflight = (origin: string, method = 'POST', headers?: string) => ({
  method: 'OPTIONS' as const,
  url: '/x',
  headers: {
    origin,
    'access-control-request-method': method,
    ...(headers ? { 'access-control-request-headers': headers } : {}),
  },
});

describe('cors preflight', () => {
  test('an allowed origin gets 204 with the policy headers, and nothing reaches the upstream', async () => {
    const app = await gateway({
      origins: ['https://app.example.com'],
      methods: ['GET', 'POST'],
      headers: ['Content-Type', 'Authorization'],
      credentials: true,
      maxAge: 120,
    });
    const before = upstreamHits;
    const res = await app.inject(preflight('https://app.example.com', 'POST', 'content-type, authorization'));
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('https://app.example.com');
    expect(res.headers['access-control-allow-methods']).toBe('GET, POST');
    expect(res.headers['access-control-allow-headers']).toBe('Content-Type, Authorization');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
    expect(res.headers['access-control-max-age']).toBe('120');
    expect(res.headers.vary).toContain('Origin');
    expect(upstreamHits).toBe(before);
  });

  const refused: Array<{ name: string; req: ReturnType<typeof preflight> }> = [
    { name: 'origin not in the list', req: preflight('https://evil.example') },
    { name: 'method not allowed', req: preflight('https://app.example.com', 'DELETE') },
    { name: 'header not allowed', req: preflight('https://app.example.com', 'POST', 'x-secret') },
  ];
  for (const c of refused) {
    test(`refused with 403 and no CORS headers: ${c.name}`, async () => {
      const app = await gateway({
        origins: ['https://app.example.com'],
        methods: ['POST'],
        headers: ['content-type'],
      });
      const res = await app.inject(c.req);
      expect(res.statusCode).toBe(403);
      expect(res.json().code).toBe('PC_FORBIDDEN');
      expect(Object.keys(res.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    });
  }

  test('without a headers list, the requested headers are allowed back', async () => {
    const app = await gateway({ origins: ['*'] });
    const res = await app.inject(preflight('https://any.example', 'PUT', 'X-Foo, Content-Type'));
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(res.headers['access-control-allow-headers']).toBe('x-foo, content-type');
  });

  test('a plain OPTIONS (no Access-Control-Request-Method) is not a preflight and is forwarded', async () => {
    const app = await gateway({ origins: ['*'] });
    const before = upstreamHits;
    const res = await app.inject({ method: 'OPTIONS', url: '/x', headers: { origin: 'https://a.example' } });
    expect(res.statusCode).toBe(200);
    expect(upstreamHits).toBe(before + 1);
  });
});

describe('cors on actual requests', () => {
  const origins = ['https://app.example.com', 'https://*.partner.example', '/^https:\\/\\/[a-z]+\\.test$/'];
  const cases = [
    { name: 'exact origin', origin: 'https://app.example.com', allowed: true },
    { name: 'exact origin, other case', origin: 'https://APP.example.com', allowed: true },
    { name: 'wildcard subdomain', origin: 'https://eu.api.partner.example', allowed: true },
    {
      name: 'wildcard does not match the suffix trick',
      origin: 'https://partner.example.evil.com',
      allowed: false,
    },
    { name: 'regex origin', origin: 'https://abc.test', allowed: true },
    { name: 'regex does not match other hosts', origin: 'https://abc.test.evil', allowed: false },
    { name: 'unknown origin', origin: 'https://evil.example', allowed: false },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.allowed ? 'gets' : 'gets no'} Access-Control-Allow-Origin; upstream's CORS headers never leak`, async () => {
      const app = await gateway({ origins, exposeHeaders: ['X-Request-Id'] });
      const res = await app.inject({ url: '/x', headers: { origin: c.origin } });
      expect(res.statusCode).toBe(200);
      expect(res.headers['access-control-allow-origin']).toBe(c.allowed ? c.origin : undefined);
      expect(res.headers['access-control-expose-headers']).toBe(c.allowed ? 'X-Request-Id' : undefined);
      expect(res.headers.vary).toBe('Accept-Encoding, Origin');
    });
  }

  test('origin * without credentials answers * and needs no Vary', async () => {
    const app = await gateway({});
    const res = await app.inject({ url: '/x', headers: { origin: 'https://x.example' } });
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(res.headers.vary).toBe('Accept-Encoding');
  });

  test('dry-run adds nothing and records what it would do; preflights go upstream', async () => {
    const app = await gateway({ mode: 'dry-run', origins: ['https://app.example.com'] });
    const res = await app.inject({ url: '/x', headers: { origin: 'https://app.example.com' } });
    expect(res.headers['access-control-allow-origin']).toBe('https://stale.example');
    expect(JSON.parse(String(res.headers['x-test-decisions']))).toEqual([
      expect.objectContaining({
        policy: 'cors',
        outcome: 'allow',
        detail: expect.objectContaining({ action: 'would-allow' }),
      }),
    ]);
    const before = upstreamHits;
    const pre = await app.inject(preflight('https://evil.example'));
    expect(pre.statusCode).toBe(200);
    expect(upstreamHits).toBe(before + 1);
  });
});

describe('cors config', () => {
  const bad: Array<{ name: string; config: CorsConfig; path: string }> = [
    { name: 'credentials with *', config: { origins: ['*'], credentials: true }, path: '/credentials' },
    { name: 'credentials with default origins', config: { credentials: true }, path: '/credentials' },
    { name: 'an origin with a path', config: { origins: ['https://a.example/app'] }, path: '/origins/0' },
    {
      name: 'a broken regex',
      config: { origins: ['https://ok.example', '/(unclosed/'] },
      path: '/origins/1',
    },
  ];
  for (const c of bad) {
    test(`rejected at load: ${c.name}`, () => {
      let err: unknown;
      try {
        corsPolicy.create(c.config, deps);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.map((i) => i.path)).toEqual([c.path]);
    });
  }
});
