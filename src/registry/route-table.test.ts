import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.ts';
import { loadServiceFile, toRouterPath } from './load-service.ts';
import { buildRouteTable, describeRoutes } from './route-table.ts';
import type { Route, Service, ServiceSettings } from './types.ts';

const ROOT = resolve(import.meta.dirname, '../..');

type Op = [method: string, specPath: string, operationId: string];

/** A hand-built service: enough of a Service for the table, without reading files. */
function service(
  name: string,
  basePath: string,
  ops: Op[],
  settings: Partial<ServiceSettings> = {},
): Service {
  const routes: Route[] = ops.map(([method, specPath, operationId]) => ({
    service: name,
    operationId,
    method,
    specPath,
    publicPath: toRouterPath(basePath, specPath).path,
    tags: [],
    operation: { operationId, responses: {} },
  }));
  return {
    name,
    file: `/specs/${name}.yaml`,
    title: name,
    version: '1',
    settings: {
      basePath,
      upstreams: [{ url: `http://127.0.0.1:4001/${name}`, weight: 1 }],
      loadBalancing: 'round-robin',
      passiveHealth: {
        failures: 3,
        ejectMs: 10000,
        panicThreshold: 0,
        statuses: [502, 503, 504],
        maxEjectMs: 300000,
      },
      circuitBreaker: { maxRequests: 1024, maxPending: 1024 },
      preferZone: false,
      timeoutMs: 10000,
      connectTimeoutMs: 3000,
      retries: 1,
      retryOn: ['connect-failure', 'reset', 'timeout'],
      retryBudget: { percent: 20, burst: 10 },
      mock: false,
      passThrough: false,
      tls: { rejectUnauthorized: true },
      websocket: { idleTimeoutMs: 300_000, maxLifetimeMs: 86_400_000 },
      ...settings,
    },
    document: { openapi: '3.1.0', info: { title: name, version: '1' }, paths: {} },
    routes,
    upstreamKey: name,
  };
}

const petstore = () =>
  service('petstore', '/petstore', [
    ['GET', '/pets', 'listPets'],
    ['POST', '/pets', 'createPet'],
    ['GET', '/pets/{petId}', 'getPet'],
    ['DELETE', '/pets/{petId}', 'deletePet'],
    ['GET', '/owners/{owner-id}/pets/{petId}', 'getOwnerPet'],
    ['GET', '/files/{name}.json', 'getFile'],
  ]);

function conflictIssues(services: Service[]) {
  try {
    buildRouteTable(services);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

describe('RouteTable.find', () => {
  const table = buildRouteTable([petstore(), service('orders', '/orders', [['GET', '/', 'listOrders']])]);
  const find = (method: string, path: string) => {
    const m = table.find(method, path);
    return m && { op: m.route.operationId, service: m.service.name, params: { ...m.params } };
  };

  it.each([
    ['a static path', 'GET', '/petstore/pets', { op: 'listPets', params: {} }],
    ['another method on the same path', 'POST', '/petstore/pets', { op: 'createPet', params: {} }],
    ['a path parameter', 'GET', '/petstore/pets/7', { op: 'getPet', params: { petId: '7' } }],
    ['a trailing slash like none', 'GET', '/petstore/pets/', { op: 'listPets', params: {} }],
    [
      'a trailing slash after a parameter',
      'DELETE',
      '/petstore/pets/7/',
      { op: 'deletePet', params: { petId: '7' } },
    ],
    [
      'a percent-encoded parameter, decoded',
      'GET',
      '/petstore/pets/a%20b',
      { op: 'getPet', params: { petId: 'a b' } },
    ],
    [
      'an encoded slash inside a parameter',
      'GET',
      '/petstore/pets/a%2Fb',
      { op: 'getPet', params: { petId: 'a/b' } },
    ],
    [
      'a parameter name with a dash, under its spec name',
      'GET',
      '/petstore/owners/o-1/pets/9',
      { op: 'getOwnerPet', params: { 'owner-id': 'o-1', petId: '9' } },
    ],
    [
      'a parameter followed by a suffix',
      'GET',
      '/petstore/files/report.json',
      { op: 'getFile', params: { name: 'report' } },
    ],
    ['the spec path "/" at the basePath', 'GET', '/orders', { op: 'listOrders', params: {} }],
    ['HEAD as the GET route', 'HEAD', '/petstore/pets/7', { op: 'getPet', params: { petId: '7' } }],
  ])('matches %s', (_why, method, path, expected) => {
    expect(find(method, path)).toMatchObject(expected);
  });

  it.each([
    ['an unknown path', 'GET', '/petstore/unknown'],
    ['a path outside every basePath', 'GET', '/elsewhere/pets'],
    ['a method the path does not route', 'PUT', '/petstore/pets/7'],
    ['a different letter case', 'GET', '/PETSTORE/pets'],
    ['a missing parameter', 'GET', '/petstore/files/.json'],
    ['the basePath alone when the spec has no "/"', 'GET', '/petstore'],
  ])('returns null for %s', (_why, method, path) => {
    expect(table.find(method, path)).toBeNull();
  });

  it('routes HEAD to the spec HEAD operation when there is one', () => {
    const t = buildRouteTable([
      service('s', '/s', [
        ['GET', '/x', 'getX'],
        ['HEAD', '/x', 'headX'],
      ]),
    ]);
    expect(t.find('HEAD', '/s/x')?.route.operationId).toBe('headX');
    expect(t.find('GET', '/s/x')?.route.operationId).toBe('getX');
  });

  it('matches routes of the shipped example services loaded from disk', async () => {
    const t = buildRouteTable([
      await loadServiceFile(join(ROOT, 'openapi/petstore.yaml')),
      await loadServiceFile(join(ROOT, 'openapi/orders.json')),
    ]);
    expect(t.find('GET', '/petstore/pets/1')?.route.operationId).toBe('getPet');
    expect(t.find('POST', '/store/orders')?.route.operationId).toBe('placeOrder');
    expect([...t.services.keys()]).toEqual(['orders', 'petstore']);
  });
});

describe('RouteTable.allowedMethods and passThrough', () => {
  const table = buildRouteTable([
    petstore(),
    service('legacy', '/legacy', [['GET', '/status', 'status']], { passThrough: true }),
    service('legacyV2', '/legacy/v2', [['GET', '/status', 'statusV2']], { passThrough: true }),
  ]);

  it('lists the methods routed for a path, HEAD included, in a stable order', () => {
    expect(table.allowedMethods('/petstore/pets/7')).toEqual(['GET', 'HEAD', 'DELETE']);
    expect(table.allowedMethods('/petstore/pets')).toEqual(['GET', 'HEAD', 'POST']);
  });

  it('is empty for an unknown path', () => {
    expect(table.allowedMethods('/petstore/nothing')).toEqual([]);
    expect(table.allowedMethods('/petstore/files/.json')).toEqual([]);
  });

  it('declares(path) agrees with allowedMethods', () => {
    for (const path of ['/petstore/pets/7', '/petstore/pets', '/legacy/status'])
      expect(table.declares(path)).toBe(true);
    for (const path of ['/petstore/nothing', '/petstore/files/.json', '/legacy/other'])
      expect(table.declares(path)).toBe(false);
  });

  it.each([
    ['/legacy/anything/else', 'legacy'],
    ['/legacy', 'legacy'],
    ['/legacy/v2/x', 'legacyV2'],
    ['/legacyish', null],
    ['/petstore/unknown', null],
  ])('passThrough(%j) is %j (longest basePath, whole segments)', (path, expected) => {
    expect(table.passThrough(path)?.name ?? null).toBe(expected);
  });

  it('a pass-through service at "/" catches every path', () => {
    const t = buildRouteTable([petstore(), service('root', '/', [], { passThrough: true })]);
    expect(t.passThrough('/petstore/unknown')?.name).toBe('root');
  });
});

describe('buildRouteTable conflicts', () => {
  it('rejects two services with the same basePath, naming both files', () => {
    const issues = conflictIssues([
      service('a', '/shop', [['GET', '/x', 'x']]),
      service('b', '/shop', [['GET', '/y', 'y']]),
    ]);
    expect(issues).toEqual([
      {
        file: '/specs/b.yaml',
        path: '/x-portcullis/basePath',
        message: 'basePath "/shop" is also used by /specs/a.yaml',
      },
    ]);
  });

  it('rejects the same method and public path in two services, naming both files', () => {
    const issues = conflictIssues([
      service('root', '/', [['GET', '/petstore/pets/{id}', 'rootPets']]),
      service('petstore', '/petstore', [['GET', '/pets/{petId}', 'getPet']]),
    ]);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: '/specs/root.yaml', path: '/paths/~1petstore~1pets~1{id}/get' });
    expect(issues[0]?.message).toContain('/specs/petstore.yaml');
    expect(issues[0]?.message).toContain('GET /petstore/pets/{id}');
  });

  it('accepts two services routing different methods on the same public path', () => {
    const t = buildRouteTable([
      service('root', '/', [['POST', '/petstore/pets', 'rootCreate']]),
      service('petstore', '/petstore', [['GET', '/pets', 'listPets']]),
    ]);
    expect(t.find('POST', '/petstore/pets')?.service.name).toBe('root');
    expect(t.find('GET', '/petstore/pets')?.service.name).toBe('petstore');
  });

  it('rejects two services with the same name (petstore.yaml and petstore.json)', () => {
    const a = service('petstore', '/a', []);
    const b = { ...service('petstore', '/b', []), file: '/specs/petstore.json' };
    const issues = conflictIssues([a, b]);
    expect(issues[0]?.message).toMatch(
      /service name "petstore" is also used by \/specs\/petstore\.(yaml|json)/,
    );
  });
});

describe('RouteTable as a value', () => {
  it('has a version that depends on content, not on load order', () => {
    const v1 = buildRouteTable([petstore(), service('o', '/o', [['GET', '/', 'l']])]).version;
    const v2 = buildRouteTable([service('o', '/o', [['GET', '/', 'l']]), petstore()]).version;
    const changed = petstore();
    changed.settings = { ...changed.settings, timeoutMs: 1 };
    const v3 = buildRouteTable([changed, service('o', '/o', [['GET', '/', 'l']])]).version;
    expect(v2).toBe(v1);
    expect(v3).not.toBe(v1);
  });

  it('is frozen', () => {
    const table = buildRouteTable([petstore()]);
    expect(Object.isFrozen(table)).toBe(true);
    expect(Object.isFrozen(table.routes)).toBe(true);
  });

  it('describeRoutes lists every spec route with its public path and upstreams', () => {
    const rows = describeRoutes(
      buildRouteTable([
        service('orders', '/orders', [['GET', '/{orderId}', 'getOrder']], { mock: true, upstreams: [] }),
        service('pets', '/pets', [
          ['POST', '/', 'createPet'],
          ['GET', '/', 'listPets'],
        ]),
      ]),
    );
    expect(rows).toEqual([
      {
        service: 'orders',
        method: 'GET',
        path: '/orders/{orderId}',
        operationId: 'getOrder',
        upstreams: [],
        mock: true,
      },
      {
        service: 'pets',
        method: 'GET',
        path: '/pets',
        operationId: 'listPets',
        upstreams: ['http://127.0.0.1:4001/pets'],
        mock: false,
      },
      {
        service: 'pets',
        method: 'POST',
        path: '/pets',
        operationId: 'createPet',
        upstreams: ['http://127.0.0.1:4001/pets'],
        mock: false,
      },
    ]);
  });
});
