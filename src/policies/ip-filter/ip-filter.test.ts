import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, describe, expect, test } from 'vitest';
import { ConfigError, ProblemError } from '../../errors.ts';
import { buildChain, createContext, runChain } from '../../pipeline/chain.ts';
import type { PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import { sendProblem } from '../../problem.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type IpFilterConfig, ipFilterPolicy } from './ip-filter.ts';

const route = { service: 'svc', operationId: 'op', method: 'GET', specPath: '/x' } as Route;
const service = { name: 'svc' } as Service;
const deps = { route, service, logger: { info() {} } } as unknown as PolicyDeps;

/** A real Fastify app (trusting 10.0.0.0/8 as proxies) whose catch-all runs one ipFilter chain. */
async function appFor(config: IpFilterConfig): Promise<FastifyInstance> {
  const chain = await buildChain(
    [
      {
        kind: ipFilterPolicy,
        config,
        rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' },
      },
    ],
    deps,
  );
  const app = Fastify({ trustProxy: ['10.0.0.0/8'] });
  app.all('/*', async (req, reply) => {
    const ctx: RequestContext = createContext(req, reply, route, service);
    try {
      await runChain(chain, ctx);
    } catch (err) {
      if (err instanceof ProblemError) return sendProblem(req, reply, err);
      throw err;
    }
    return { passed: true, decisions: ctx.decisions };
  });
  await app.ready();
  return app;
}

describe('ipFilter', () => {
  let apps: FastifyInstance[] = [];
  const make = async (c: IpFilterConfig) => {
    const app = await appFor(c);
    apps.push(app);
    return app;
  };
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
    apps = [];
  });

  const cases: Array<{ name: string; config: IpFilterConfig; ip: string; xff?: string; allowed: boolean }> = [
    {
      name: 'deny list blocks a listed IPv4 address',
      config: { deny: ['203.0.113.0/24'] },
      ip: '203.0.113.9',
      allowed: false,
    },
    {
      name: 'deny list lets others through',
      config: { deny: ['203.0.113.0/24'] },
      ip: '198.51.100.1',
      allowed: true,
    },
    {
      name: 'allow list present means default deny',
      config: { allow: ['192.0.2.0/24'] },
      ip: '198.51.100.1',
      allowed: false,
    },
    {
      name: 'allow list admits its members',
      config: { allow: ['192.0.2.0/24'] },
      ip: '192.0.2.77',
      allowed: true,
    },
    {
      name: 'deny wins over allow',
      config: { allow: ['192.0.2.0/24'], deny: ['192.0.2.66'] },
      ip: '192.0.2.66',
      allowed: false,
    },
    {
      name: 'IPv6 CIDR in the deny list',
      config: { deny: ['2001:db8::/32'] },
      ip: '2001:db8::1',
      allowed: false,
    },
    {
      name: 'IPv6 outside the deny list',
      config: { deny: ['2001:db8::/32'] },
      ip: '2001:db9::1',
      allowed: true,
    },
    {
      name: 'IPv4-mapped IPv6 peer matches an IPv4 deny range',
      config: { deny: ['203.0.113.0/24'] },
      ip: '::ffff:203.0.113.5',
      allowed: false,
    },
    {
      name: 'IPv4-mapped IPv6 peer matches an IPv4 allow range',
      config: { allow: ['127.0.0.0/8'] },
      ip: '::ffff:127.0.0.1',
      allowed: true,
    },
    {
      name: 'X-Forwarded-For from a trusted proxy names the client',
      config: { deny: ['203.0.113.0/24'] },
      ip: '10.1.2.3',
      xff: '203.0.113.8',
      allowed: false,
    },
    {
      name: 'X-Forwarded-For from an untrusted peer is ignored (cannot spoof into the allow list)',
      config: { allow: ['192.0.2.0/24'] },
      ip: '198.51.100.7',
      xff: '192.0.2.1',
      allowed: false,
    },
    {
      name: 'X-Forwarded-For from an untrusted peer is ignored (cannot dodge the deny list)',
      config: { deny: ['198.51.100.0/24'] },
      ip: '198.51.100.7',
      xff: '192.0.2.1',
      allowed: false,
    },
    { name: 'empty config allows everyone', config: {}, ip: '198.51.100.1', allowed: true },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const app = await make(c.config);
      const res = await app.inject({
        method: 'GET',
        url: '/x',
        remoteAddress: c.ip,
        headers: c.xff ? { 'x-forwarded-for': c.xff } : {},
      });
      if (c.allowed) {
        expect(res.statusCode).toBe(200);
        expect(res.json().passed).toBe(true);
      } else {
        expect(res.statusCode).toBe(403);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.json()).toMatchObject({ code: 'PC_IP_DENIED', status: 403 });
      }
    });
  }

  test('dry-run never blocks and records a would-deny decision', async () => {
    const app = await make({ mode: 'dry-run', deny: ['203.0.113.0/24'] });
    const res = await app.inject({ method: 'GET', url: '/x', remoteAddress: '203.0.113.1' });
    expect(res.statusCode).toBe(200);
    expect(res.json().decisions).toEqual([
      expect.objectContaining({ policy: 'ipFilter', outcome: 'would-deny', reason: 'PC_IP_DENIED' }),
    ]);
  });

  test('invalid CIDRs are rejected at load, each named by its position', () => {
    let err: unknown;
    try {
      ipFilterPolicy.create({ allow: ['10.0.0.0/8', 'banana'], deny: ['1.2.3.4/99'] }, deps);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toEqual(['/deny/0', '/allow/1']);
  });
});
