import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { resolveGatewayConfig } from '../../config/load.ts';
import { parseSource } from '../../config/yaml.ts';
import { ConfigError, formatIssue } from '../../errors.ts';
import { parsePolicyFile } from '../../pipeline/rules.ts';
import type { PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import type { Route, Service } from '../../registry/types.ts';
import { createMemoryStore } from '../../state/memory.ts';
import { POLICY_KINDS } from '../index.ts';
import { type CacheConfig, cachePolicy } from './cache.ts';

describe('cache config', () => {
  const errors = (yaml: string): string[] => {
    try {
      parsePolicyFile(parseSource(yaml, 'policies/c.yaml'), POLICY_KINDS, '.');
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map(formatIssue);
      throw err;
    }
    return [];
  };

  it.each(['{}', '{ ttl: 30s }', '{ ttl: 1000 }', '{ ttl: 5m, targeted: Acme-Cache-Control }'])(
    'accepts %s',
    (config) => {
      expect(errors(`- match: {}\n  cache: ${config}\n`)).toEqual([]);
    },
  );

  it.each([
    ['a ttl in seconds written as a bare number (it is milliseconds)', '{ ttl: 300 }', '/0/cache/ttl'],
    ['a ttl that is no duration', '{ ttl: soon }', '/0/cache/ttl'],
    ['an unknown field (typo)', '{ tll: 30s }', '/0/cache'],
  ])('%s is an error naming the file, line and field', (_d, config, path) => {
    const found = errors(`- match: {}\n  cache: ${config}\n`);
    expect(found.some((e) => e.startsWith(`policies/c.yaml:2: ${path}`))).toBe(true);
  });
});

describe('cache route state (built once per route, at load)', () => {
  const deps = () =>
    ({
      config: resolveGatewayConfig({}, { baseDir: '.' }),
      store: createMemoryStore(),
      logger: pino({ level: 'silent' }),
      route: { operationId: 'op' } as unknown as Route,
      service: { name: 'svc', settings: { mock: false } } as unknown as Service,
      baseDir: '.',
    }) as unknown as PolicyDeps;

  it.each([
    [
      'announces Surrogate-Capability by default',
      {},
      { 'surrogate-capability': 'portcullis="Surrogate/1.0"' },
    ],
    ['announces nothing with surrogateControl: false', { surrogateControl: false }, {}],
  ])('%s, from headers built once for every request of the route', async (_d, config, expected) => {
    const hook = await cachePolicy.create(config as CacheConfig, deps());
    const a = {} as RequestContext;
    const b = {} as RequestContext;
    await hook(a);
    await hook(b);
    expect(a.cache?.upstreamHeaders).toEqual(expected);
    expect(Object.isFrozen(a.cache?.upstreamHeaders)).toBe(true);
    expect(b.cache?.upstreamHeaders).toBe(a.cache?.upstreamHeaders);
  });
});
