import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from '../../../test/helpers/redis.ts';
import type { GatewayConfig } from '../../config/schema.ts';
import { compileCheck } from '../../config/validate.ts';
import type { SourceDocument } from '../../config/yaml.ts';
import { ProblemError } from '../../errors.ts';
import type { Hook, Identity, PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import type { Route, Service } from '../../registry/types.ts';
import { createMemoryStore } from '../../state/memory.ts';
import { createRedisStore, type RedisStore } from '../../state/redis.ts';
import type { Store } from '../../state/store.ts';
import { parseDuration, type RateLimitConfig, RateLimitSchema, rateLimitPolicy } from './rate-limit.ts';

const logger = pino({ level: 'silent' });

function routeOf(operationId: string, service = 'svc'): Route {
  return {
    service,
    operationId,
    method: 'GET',
    specPath: '/x',
    publicPath: '/svc/x',
    tags: [],
    operation: {},
  } as Route;
}
const SERVICE = { name: 'svc' } as Service;

function fakeClock(start = 1_700_000_000_000) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** A memory store that also records the keys it was asked about. */
function recordingStore(now: () => number): Store & { keys: string[] } {
  const inner = createMemoryStore({ now });
  const keys: string[] = [];
  const hit: Store['hit'] = (key, spec) => {
    keys.push(key);
    return inner.hit(key, spec);
  };
  return { ...inner, kind: 'memory', keys, hit };
}

function create(config: RateLimitConfig, store: Store, route = routeOf('op')): Promise<Hook> | Hook {
  const deps: PolicyDeps = {
    config: {} as GatewayConfig,
    store,
    logger,
    route,
    service: SERVICE,
    baseDir: '/',
    readBody: () => Promise.reject(new Error('not used')),
    readBodyThen: () => {
      throw new Error('not used');
    },
  };
  return rateLimitPolicy.create(config, deps);
}

function ctxOf(
  clientIp: string,
  opts: { headers?: Record<string, string>; identity?: Identity } = {},
): RequestContext {
  return {
    req: { headers: opts.headers ?? {} } as unknown as FastifyRequest,
    reply: {} as FastifyReply,
    route: routeOf('op'),
    service: SERVICE,
    clientIp,
    target: { path: '/svc/op', query: '', semicolon: false },
    identity: opts.identity,
    setUpstreamHeaders: {},
    removeUpstreamHeaders: new Set(),
    responseHeaders: {},
    responseEdits: [],
    decisions: [],
  };
}

/** Run the hook; the ProblemError it threw, or undefined when it let the request through. */
async function run(hook: Hook, ctx: RequestContext): Promise<ProblemError | undefined> {
  try {
    await hook(ctx);
    return undefined;
  } catch (err) {
    if (err instanceof ProblemError) return err;
    throw err;
  }
}

/** Issues of the load-time validator (Ajv), as `path: message`. */
const check = compileCheck(RateLimitSchema);
function checkConfig(config: unknown): string[] {
  const source = { file: 'policies/svc.yaml', lineOf: () => 1 } as unknown as SourceDocument;
  return check(config, source, '/rateLimit').map((i) => `${i.path}: ${i.message}`);
}

describe('rateLimit config', () => {
  it.each([
    ['one limit', { limit: 100, window: '1m', key: 'ip' }, true],
    ['window in ms', { limit: 100, window: 60_000 }, true],
    [
      'several limits',
      {
        key: 'subject',
        limits: [
          { limit: 10, window: '1s' },
          { limit: 1000, window: '1h' },
        ],
      },
      true,
    ],
    ['header key', { limit: 5, window: '1s', key: 'header:X-Tenant' }, true],
    [
      'every option',
      { limit: 5, window: '1s', cost: 2, mode: 'dry-run', onStoreError: 'deny', scope: 'service' },
      true,
    ],
    ['unknown field', { limit: 5, window: '1s', burst: 3 }, false],
    ['window without unit', { limit: 5, window: '10' }, false],
    ['unknown key kind', { limit: 5, window: '1s', key: 'cookie:x' }, false],
    ['zero limit', { limit: 0, window: '1s' }, false],
    ['inline limit plus limits', { limit: 5, window: '1s', limits: [{ limit: 100, window: '1h' }] }, true],
    ['no limit at all', { key: 'ip' }, false],
    ['limit without window', { limit: 5 }, false],
    // Regression: dependentRequired is not draft-07, and the loader silently ignored it.
    ['limit without window beside limits', { limit: 5, limits: [{ limit: 100, window: '1h' }] }, false],
    ['window without limit beside limits', { window: '1s', limits: [{ limit: 100, window: '1h' }] }, false],
    ['name without limit beside limits', { name: 'x', limits: [{ limit: 100, window: '1h' }] }, false],
    ['empty limits', { limits: [] }, false],
    ['limit inside limits without window', { limits: [{ limit: 5 }] }, false],
    ['bad onStoreError', { limit: 5, window: '1s', onStoreError: 'ignore' }, false],
    ['ipv6Prefix', { limit: 5, window: '1s', ipv6Prefix: 48 }, true],
    ['ipv6Prefix past 128', { limit: 5, window: '1s', ipv6Prefix: 129 }, false],
  ])('%s', (_, config, valid) => {
    expect(checkConfig(config).length === 0).toBe(valid);
  });

  it('names the offending field', () => {
    expect(checkConfig({ limit: 5, window: '1s', burst: 3 })).toContain('/rateLimit: unknown field "burst"');
    expect(checkConfig({ limit: 5 })).toContain('/rateLimit: missing required field "window"');
    expect(checkConfig({ limits: [{ limit: 5, window: '1s', key: 'cookie:x' }] }).join('\n')).toMatch(
      /\/rateLimit\/limits\/0\/key: must match pattern/,
    );
  });

  it.each([
    ['250ms', 250],
    ['1s', 1_000],
    ['1m', 60_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    [1500, 1_500],
  ] as const)('parses window %s', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('refuses two limits with the same name', () => {
    const config = {
      limits: [
        { limit: 1, window: '1s', name: 'a' },
        { limit: 2, window: '1m', name: 'a' },
      ],
    };
    expect(() => create(config, createMemoryStore())).toThrow(/unique/);
  });
});

describe('rateLimit enforcement', () => {
  it('admits `limit` requests with RateLimit fields, then 429 with Retry-After', async () => {
    const hook = await create({ limit: 3, window: '1m' }, createMemoryStore({ now: fakeClock().now }));
    const seen = [];
    for (let i = 0; i < 3; i++) {
      const ctx = ctxOf('192.0.2.1');
      expect(await run(hook, ctx)).toBeUndefined();
      seen.push(ctx.responseHeaders);
      expect(ctx.decisions).toEqual([{ policy: 'rateLimit', outcome: 'allow', detail: { default: 2 - i } }]);
    }
    expect(seen[0]).toEqual({ 'ratelimit-policy': '"default";q=3;w=60', ratelimit: '"default";r=2;t=20' });
    expect(seen[2]?.ratelimit).toBe('"default";r=0;t=60');

    const ctx = ctxOf('192.0.2.1');
    const err = await run(hook, ctx);
    expect(err?.code).toBe('PC_RATE_LIMITED');
    expect(err?.status).toBe(429);
    expect(err?.headers).toEqual({
      'retry-after': '20',
      'ratelimit-policy': '"default";q=3;w=60',
      ratelimit: '"default";r=0;t=60',
    });
    expect(ctx.responseHeaders.ratelimit).toBe('"default";r=0;t=60');
    expect(ctx.decisions[0]).toMatchObject({ outcome: 'deny', reason: 'limit' });
    // Another client is unaffected.
    expect(await run(hook, ctxOf('192.0.2.2'))).toBeUndefined();
  });

  it('enforces an inline limit together with `limits`', async () => {
    const hook = await create(
      { limit: 1, window: '1s', limits: [{ limit: 5, window: '1m', name: 'minute' }] },
      createMemoryStore({ now: fakeClock().now }),
    );
    const ctx = ctxOf('192.0.2.1');
    await run(hook, ctx);
    expect(ctx.responseHeaders['ratelimit-policy']).toBe('"1-per-1s";q=1;w=1, "minute";q=5;w=60');
    expect((await run(hook, ctxOf('192.0.2.1')))?.code).toBe('PC_RATE_LIMITED');
  });

  it('enforces several limits at once and reports each in the fields', async () => {
    const clock = fakeClock();
    const hook = await create(
      {
        limits: [
          { limit: 2, window: '1s' },
          { limit: 3, window: '1m' },
        ],
      },
      createMemoryStore({ now: clock.now }),
    );
    const first = ctxOf('192.0.2.1');
    await run(hook, first);
    expect(first.responseHeaders).toEqual({
      'ratelimit-policy': '"2-per-1s";q=2;w=1, "3-per-1m";q=3;w=60',
      ratelimit: '"2-per-1s";r=1;t=1, "3-per-1m";r=2;t=20',
    });
    expect(await run(hook, ctxOf('192.0.2.1'))).toBeUndefined();
    const perSecond = await run(hook, ctxOf('192.0.2.1'));
    expect(perSecond?.message).toMatch(/2-per-1s/);
    expect(perSecond?.headers['retry-after']).toBe('1');
    clock.advance(1_000);
    // The per-second limit has room again, but the request denied above still counted per minute.
    const perMinute = await run(hook, ctxOf('192.0.2.1'));
    expect(perMinute?.message).toMatch(/3-per-1m/);
    expect(Number(perMinute?.headers['retry-after'])).toBeGreaterThan(1);
  });

  it('counts by header, subject or API key, falling back to the client address', async () => {
    const now = fakeClock().now;
    const byTenant = await create(
      { limit: 1, window: '1m', key: 'header:X-Tenant' },
      createMemoryStore({ now }),
    );
    expect(await run(byTenant, ctxOf('192.0.2.1', { headers: { 'x-tenant': 'a' } }))).toBeUndefined();
    expect(await run(byTenant, ctxOf('192.0.2.2', { headers: { 'x-tenant': 'a' } }))).toBeInstanceOf(
      ProblemError,
    );
    expect(await run(byTenant, ctxOf('192.0.2.2', { headers: { 'x-tenant': 'b' } }))).toBeUndefined();
    expect(await run(byTenant, ctxOf('192.0.2.3'))).toBeUndefined();
    expect(await run(byTenant, ctxOf('192.0.2.3'))).toBeInstanceOf(ProblemError);

    const bySubject = await create({ limit: 1, window: '1m', key: 'subject' }, createMemoryStore({ now }));
    const alice: Identity = { method: 'jwt', subject: 'alice' };
    expect(await run(bySubject, ctxOf('192.0.2.1', { identity: alice }))).toBeUndefined();
    expect(await run(bySubject, ctxOf('192.0.2.9', { identity: alice }))).toBeInstanceOf(ProblemError);
    expect(await run(bySubject, ctxOf('192.0.2.1'))).toBeUndefined();

    const byApiKey = await create({ limit: 1, window: '1m', key: 'apiKey' }, createMemoryStore({ now }));
    const key: Identity = { method: 'apiKey', subject: 'ci-bot' };
    expect(await run(byApiKey, ctxOf('192.0.2.1', { identity: key }))).toBeUndefined();
    expect(await run(byApiKey, ctxOf('192.0.2.2', { identity: key }))).toBeInstanceOf(ProblemError);
    // A JWT subject is not an API key: counted by address.
    expect(
      await run(byApiKey, ctxOf('192.0.2.3', { identity: { method: 'jwt', subject: 'ci-bot' } })),
    ).toBeUndefined();
  });

  it('counts IPv6 clients per /64 by default (ipv6Prefix), IPv4-mapped clients as IPv4', async () => {
    const clock = fakeClock();
    const store = createMemoryStore({ now: clock.now });
    const hook = await create({ limit: 2, window: '1m' }, store);
    expect(await run(hook, ctxOf('2001:db8:1:2::1'))).toBeUndefined();
    expect(await run(hook, ctxOf('2001:db8:1:2:ffff:ffff:ffff:fffe'))).toBeUndefined();
    // A third address in the same /64 shares the bucket; the next /64 has its own.
    expect((await run(hook, ctxOf('2001:db8:1:2::3')))?.code).toBe('PC_RATE_LIMITED');
    expect(await run(hook, ctxOf('2001:db8:1:3::1'))).toBeUndefined();
    const mapped = await create({ limit: 1, window: '1m' }, store, routeOf('mapped'));
    expect(await run(mapped, ctxOf('192.0.2.1'))).toBeUndefined();
    expect((await run(mapped, ctxOf('::ffff:192.0.2.1')))?.code).toBe('PC_RATE_LIMITED');
    const perAddress = await create({ limit: 1, window: '1m', ipv6Prefix: 128 }, store, routeOf('exact'));
    expect(await run(perAddress, ctxOf('2001:db8:1:2::1'))).toBeUndefined();
    expect(await run(perAddress, ctxOf('2001:db8:1:2::2'))).toBeUndefined();
    expect((await run(perAddress, ctxOf('2001:db8:1:2:0::1')))?.code).toBe('PC_RATE_LIMITED');
  });

  it('beforeAuth refuses a client an ip or header limit refused, until it would be admitted, without asking the store', async () => {
    const clock = fakeClock();
    const store = recordingStore(clock.now);
    const hook = (await create({ limit: 2, window: '1m', key: 'ip' }, store)) as Hook & {
      beforeAuth: (ctx: RequestContext) => void;
    };
    for (let i = 0; i < 2; i++) hook.beforeAuth(ctxOf('192.0.2.9'));
    for (let i = 0; i < 2; i++) expect(await run(hook, ctxOf('192.0.2.9'))).toBeUndefined();
    expect((await run(hook, ctxOf('192.0.2.9')))?.code).toBe('PC_RATE_LIMITED');
    const asked = store.keys.length;
    const ctx = ctxOf('192.0.2.9');
    expect(() => hook.beforeAuth(ctx)).toThrow(
      expect.objectContaining({ code: 'PC_RATE_LIMITED', status: 429 }),
    );
    expect(ctx.decisions).toEqual([
      {
        policy: 'rateLimit',
        outcome: 'deny',
        reason: 'limit',
        detail: { exceeded: 'default', beforeAuth: true },
      },
    ]);
    expect(store.keys.length).toBe(asked);
    // Another client is not affected.
    expect(() => hook.beforeAuth(ctxOf('192.0.2.10'))).not.toThrow();
    // (The store uses the injected clock, the refusal memo real time: it lasts the 30 s retry.)
    const refusal = (() => {
      try {
        hook.beforeAuth(ctxOf('192.0.2.9'));
      } catch (err) {
        return err as ProblemError;
      }
    })();
    expect(Number(refusal?.headers['retry-after'])).toBeGreaterThan(25);
  });

  it('beforeAuth is offered only by enforcing policies with an identity-independent limit', async () => {
    const store = createMemoryStore({ now: fakeClock().now });
    expect('beforeAuth' in (await create({ limit: 1, window: '1m', key: 'ip' }, store))).toBe(true);
    expect('beforeAuth' in (await create({ limit: 1, window: '1m', key: 'header:x-tenant' }, store))).toBe(
      true,
    );
    expect('beforeAuth' in (await create({ limit: 1, window: '1m', key: 'subject' }, store))).toBe(false);
    expect('beforeAuth' in (await create({ limit: 1, window: '1m', key: 'apiKey' }, store))).toBe(false);
    expect('beforeAuth' in (await create({ limit: 1, window: '1m', mode: 'dry-run' }, store))).toBe(false);
  });

  it('charges cost units per request', async () => {
    const hook = await create(
      { limit: 10, window: '1m', cost: 4 },
      createMemoryStore({ now: fakeClock().now }),
    );
    const ctx = ctxOf('192.0.2.1');
    await run(hook, ctx);
    expect(ctx.responseHeaders.ratelimit).toBe('"default";r=6;t=24');
    await run(hook, ctxOf('192.0.2.1'));
    expect(await run(hook, ctxOf('192.0.2.1'))).toBeInstanceOf(ProblemError);
  });

  it('keys counters by route and limit, never storing the client value in clear', async () => {
    const store = recordingStore(fakeClock().now);
    const hook = await create({ limit: 10, window: '1m' }, store);
    await run(hook, ctxOf('203.0.113.7'));
    expect(store.keys).toHaveLength(1);
    expect(store.keys[0]).toMatch(/^svc\/op:10\/60000:ip:[A-Za-z0-9_-]{22}$/);
    expect(store.keys[0]).not.toContain('203.0.113.7');
  });

  it('store keys are prefix + the first 22 base64url chars of SHA-256 of the client value, the same for every gateway version sharing the store', async () => {
    const hash = (value: string) => createHash('sha256').update(value).digest('base64url').slice(0, 22);
    const cases: Array<[RateLimitConfig['key'], Partial<Parameters<typeof ctxOf>[1]>, string, string]> = [
      ['ip', {}, '203.0.113.7', 'ip:203.0.113.7'],
      ['ip', {}, '2001:db8:1:2::99', 'ip:2001:db8:1:2::/64'],
      ['subject', { identity: { method: 'jwt', subject: 'alice' } }, '192.0.2.1', 'subject:jwt:alice'],
      ['subject', { identity: { method: 'basic', subject: 'alice' } }, '192.0.2.1', 'subject:basic:alice'],
      ['subject', {}, '192.0.2.1', 'ip:192.0.2.1'],
      ['apiKey', { identity: { method: 'apiKey', subject: 'ci-bot' } }, '192.0.2.1', 'apiKey:ci-bot'],
      ['header:X-Tenant', { headers: { 'x-tenant': 'acme' } }, '192.0.2.1', 'header:x-tenant:acme'],
    ];
    for (const [key, extra, ip, value] of cases) {
      const store = recordingStore(fakeClock().now);
      const hook = await create({ limit: 10, window: '1m', key }, store);
      // Twice: the second answer comes from the memo and must be the same key.
      await run(hook, ctxOf(ip, extra));
      await run(hook, ctxOf(ip, extra));
      const expected = `svc/op:10/60000:${key}:${hash(value)}`;
      expect(store.keys).toEqual([expected, expected]);
    }
  });

  it('shares counters between routes only when scope says so', async () => {
    const now = fakeClock().now;
    for (const [scope, sharedDenies] of [
      ['route', false],
      ['service', true],
      ['global', true],
    ] as const) {
      const store = createMemoryStore({ now });
      const a = await create({ limit: 1, window: '1m', scope }, store, routeOf('listPets'));
      const b = await create({ limit: 1, window: '1m', scope }, store, routeOf('getPet'));
      await run(a, ctxOf('192.0.2.1'));
      expect((await run(b, ctxOf('192.0.2.1'))) instanceof ProblemError, scope).toBe(sharedDenies);
    }
  });

  it('dry-run never refuses, sends no fields and records would-deny', async () => {
    const hook = await create(
      { limit: 1, window: '1m', mode: 'dry-run' },
      createMemoryStore({ now: fakeClock().now }),
    );
    await run(hook, ctxOf('192.0.2.1'));
    const ctx = ctxOf('192.0.2.1');
    expect(await run(hook, ctx)).toBeUndefined();
    expect(ctx.responseHeaders).toEqual({});
    expect(ctx.decisions).toEqual([
      {
        policy: 'rateLimit',
        outcome: 'would-deny',
        reason: 'limit',
        detail: { default: 0, exceeded: 'default' },
      },
    ]);
  });
});

describe('rateLimit with the store down (onStoreError)', () => {
  let down: RedisStore;

  beforeAll(async () => {
    // A real Redis store pointed at a port where Redis just stopped: every hit is refused.
    const redis = await startRedis();
    await redis.stop();
    down = createRedisStore({ url: redis.url, connectTimeoutMs: 200 }, logger);
    await down.ready();
  });

  afterAll(async () => {
    await down?.close();
  });

  it('allow: lets every request through without fields', async () => {
    const hook = await create({ limit: 1, window: '1m', onStoreError: 'allow' }, down);
    for (let i = 0; i < 3; i++) {
      const ctx = ctxOf('192.0.2.1');
      expect(await run(hook, ctx)).toBeUndefined();
      expect(ctx.responseHeaders).toEqual({});
    }
  });

  it('deny: 503 store-unavailable', async () => {
    const hook = await create({ limit: 100, window: '1m', onStoreError: 'deny' }, down);
    const ctx = ctxOf('192.0.2.1');
    const err = await run(hook, ctx);
    expect(err?.code).toBe('PC_STORE_UNAVAILABLE');
    expect(err?.status).toBe(503);
    expect(err?.headers['retry-after']).toBe('1');
    expect(ctx.decisions[0]).toMatchObject({ outcome: 'error', reason: 'store-unavailable' });
  });

  it('local (the default): enforces the limit in this instance', async () => {
    const hook = await create({ limit: 2, window: '1m' }, down);
    const ctx = ctxOf('192.0.2.50');
    expect(await run(hook, ctx)).toBeUndefined();
    expect(ctx.responseHeaders.ratelimit).toBe('"default";r=1;t=30');
    expect(await run(hook, ctxOf('192.0.2.50'))).toBeUndefined();
    expect((await run(hook, ctxOf('192.0.2.50')))?.code).toBe('PC_RATE_LIMITED');
  });
});
