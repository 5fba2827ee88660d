import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { OpenAPIV3 } from 'openapi-types';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import { contentHash, loadServiceFile, toRouterPath } from './load-service.ts';
import { createMockResponder } from './mock.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const EXAMPLES = join(ROOT, 'openapi');
const FIXTURES = join(ROOT, 'test/fixtures/registry');

const dir = mkdtempSync(join(tmpdir(), 'pc-load-service-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

async function issuesOf(file: string): Promise<ConfigIssue[]> {
  const err = await loadServiceFile(file).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).issues;
}

const HEAD_31 = `openapi: 3.1.0
info: { title: Test, version: 1.0.0 }
x-portcullis: { mock: true }
`;

describe('the shipped example services', () => {
  it('loads openapi/petstore.yaml (3.1) with its four operations under /petstore', async () => {
    const s = await loadServiceFile(join(EXAMPLES, 'petstore.yaml'));
    expect(s.name).toBe('petstore');
    expect(s.file).toBe(join(EXAMPLES, 'petstore.yaml'));
    expect(s.document.openapi).toBe('3.1.0');
    expect(s.settings.basePath).toBe('/petstore');
    expect(s.settings.mock).toBe(true);
    expect(s.routes.map((r) => [r.operationId, r.method, r.publicPath])).toEqual([
      ['listPets', 'GET', '/petstore/pets'],
      ['createPet', 'POST', '/petstore/pets'],
      ['getPet', 'GET', '/petstore/pets/:petId'],
      ['deletePet', 'DELETE', '/petstore/pets/:petId'],
    ]);
    const create = s.routes.find((r) => r.operationId === 'createPet');
    const body = create?.operation.requestBody as OpenAPIV3.RequestBodyObject;
    // $refs are resolved: the request schema is the NewPet object itself.
    expect((body.content['application/json']!.schema as OpenAPIV3.SchemaObject).required).toEqual([
      'name',
      'species',
    ]);
    expect(create?.tags).toEqual(['pets']);
  });

  it('loads openapi/orders.json (3.0, JSON, components/$ref) and every operation can be mocked', async () => {
    const s = await loadServiceFile(join(EXAMPLES, 'orders.json'));
    expect(s.name).toBe('orders');
    expect(s.document.openapi).toMatch(/^3\.0\./);
    expect(s.routes.map((r) => r.operationId).sort()).toEqual([
      'cancelOrder',
      'getOrder',
      'listOrders',
      'placeOrder',
    ]);
    const get = s.routes.find((r) => r.operationId === 'getOrder');
    // Path-level $ref parameter merged into the operation.
    expect((get!.operation.parameters as OpenAPIV3.ParameterObject[]).map((p) => p.name)).toEqual([
      'orderId',
    ]);
    for (const route of s.routes) {
      const res = createMockResponder(route)({ params: {}, query: {} });
      expect(res.status).toBeLessThan(300);
    }
  });
});

describe('loadServiceFile', () => {
  it('resolves $refs into another file, relative to the spec', async () => {
    const s = await loadServiceFile(join(FIXTURES, 'external-ref.yaml'));
    expect(s.name).toBe('external-ref');
    expect(s.settings.basePath).toBe('/inventory-service');
    expect(s.settings.upstreams).toEqual([{ url: 'http://127.0.0.1:4100/api', weight: 1 }]);
    const route = s.routes[0];
    expect(route?.operation.parameters).toMatchObject([{ name: 'itemId', in: 'path', required: true }]);
    const res = createMockResponder(route as (typeof s.routes)[number])({ params: {}, query: {} });
    expect(JSON.parse(res.body)).toEqual({ sku: 'SKU-42', stock: 7 });
  });

  it('loads a recursive schema without hanging, and mocks it', async () => {
    const s = await loadServiceFile(join(FIXTURES, 'circular.yaml'));
    const route = s.routes[0];
    expect(route?.operationId).toBe('getNode');
    const body = JSON.parse(
      createMockResponder(route as (typeof s.routes)[number])({ params: {}, query: {} }).body,
    );
    expect(body.name).toBe('root');
    // A hash over the cyclic document terminates too.
    expect(contentHash(s.document)).toMatch(/^[0-9a-f]{40}$/);
  }, 10_000);

  it('turns path templates into router paths and merges path-level parameters (operation wins)', async () => {
    const s = await loadServiceFile(join(FIXTURES, 'templated.yaml'));
    const byId = new Map(s.routes.map((r) => [r.operationId, r]));
    expect(byId.get('getFileJson')?.publicPath).toBe('/files-api/files/:name.json');
    expect(byId.get('batchGetItems')?.publicPath).toBe('/files-api/items::batchGet');
    expect(byId.get('root')?.publicPath).toBe('/files-api');
    const owners = byId.get('get_owners_owner_id_files');
    expect(owners?.publicPath).toBe('/files-api/owners/:$p0/files');
    expect(owners?.operation.parameters).toEqual([
      { name: 'owner-id', in: 'path', required: true, schema: { type: 'string' }, description: 'path level' },
      { name: 'verbose', in: 'query', schema: { type: 'string' }, description: 'operation level' },
    ]);
  });

  it('derives a stable operationId when the spec has none', async () => {
    const file = write(
      'no-ids.yaml',
      `${HEAD_31}paths:
  /pets/{petId}/photos:
    parameters: [{ name: petId, in: path, required: true, schema: { type: string } }]
    get: { responses: { '200': { description: ok } } }
    post: { responses: { '201': { description: ok } } }
`,
    );
    const ids = (await loadServiceFile(file)).routes.map((r) => r.operationId);
    expect(ids).toEqual(['get_pets_petId_photos', 'post_pets_petId_photos']);
  });

  describe('upstreamKey', () => {
    const spec = (upstream: string, extra = '') => `openapi: 3.1.0
info: { title: Keyed, version: 1.0.0 }
x-portcullis:
  upstreams: [{ url: ${upstream} }]
  healthCheck: { path: /health }${extra}
paths: {}
components: { schemas: { X: { type: string } } }
`;
    it('is equal for equal upstream settings, even when the rest of the spec differs', async () => {
      const a = await loadServiceFile(write('key-a.yaml', spec('http://127.0.0.1:4001')));
      const b = await loadServiceFile(
        write(
          'key-b.yaml',
          spec('http://127.0.0.1:4001/', '\n  retries: 0\n  mock: false').replace('Keyed', 'Other'),
        ),
      );
      expect(b.upstreamKey).toBe(a.upstreamKey);
    });

    it('changes when the upstreams, the balancer or a timeout change', async () => {
      const base = await loadServiceFile(write('key-c.yaml', spec('http://127.0.0.1:4001')));
      const variants = [
        spec('http://127.0.0.1:4002'),
        spec('http://127.0.0.1:4001', '\n  loadBalancing: least-connections'),
        spec('http://127.0.0.1:4001', '\n  timeoutMs: 500'),
      ];
      const keys = new Set([base.upstreamKey]);
      for (const [i, text] of variants.entries()) {
        keys.add((await loadServiceFile(write(`key-v${i}.yaml`, text))).upstreamKey);
      }
      expect(keys.size).toBe(variants.length + 1);
    });
  });

  it('toRouterPath joins basePath and spec path', () => {
    expect(toRouterPath('/', '/pets/{id}')).toEqual({ path: '/pets/:id', names: null });
    expect(toRouterPath('/api', '/')).toEqual({ path: '/api', names: null });
    expect(toRouterPath('/api', '/{a.b}-{c}')).toEqual({ path: '/api/:$p0-:c', names: ['a.b', 'c'] });
  });
});

describe('loadServiceFile errors name the file, field and line', () => {
  it.each([
    {
      why: 'Swagger 2.0',
      text: `swagger: '2.0'
info: { title: Old, version: '1' }
paths: {}
`,
      path: '/swagger',
      line: 1,
      message: /Swagger 2\.0 is not supported/,
    },
    {
      why: 'an unsupported OpenAPI version',
      text: `openapi: 3.2.0
info: { title: New, version: '1' }
paths: {}
`,
      path: '/openapi',
      line: 1,
      message: /unsupported OpenAPI version "3\.2\.0"/,
    },
    {
      why: 'a document without "openapi"',
      text: `info: { title: What, version: '1' }
`,
      path: '',
      line: 1,
      message: /missing "openapi" field/,
    },
    {
      why: 'a schema violation (responses is not an object)',
      text: `${HEAD_31}paths:
  /pets:
    get:
      operationId: listPets
      responses: 7
`,
      path: '/paths/~1pets/get/responses',
      line: 8,
      message: /must be object/,
    },
    {
      why: 'an unknown field in an operation (3.1)',
      text: `${HEAD_31}paths:
  /pets:
    get:
      operationId: listPets
      summery: typo
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1pets/get/summery',
      line: 8,
      message: /summery/,
    },
    {
      why: 'a path parameter without a declaration',
      text: `${HEAD_31}paths:
  /pets/{petId}:
    get:
      operationId: getPet
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1pets~1{petId}/get',
      line: 6,
      message: /missing path parameter\(s\) for `\{petId\}`/,
    },
    {
      why: 'a $ref to a file that does not exist',
      text: `${HEAD_31}paths:
  /pets:
    get:
      operationId: listPets
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: { $ref: './nowhere.yaml#/Pet' }
`,
      path: '/paths/~1pets/get/responses/200/content/application~1json/schema/$ref',
      line: 13,
      message: /nowhere\.yaml/,
    },
    {
      why: 'a $ref to a missing component',
      text: `${HEAD_31}paths:
  /pets:
    get:
      operationId: listPets
      responses:
        '200': { $ref: '#/components/responses/Nope' }
`,
      path: '/paths/~1pets/get/responses/200/$ref',
      line: 9,
      message: /#\/components\/responses\/Nope/,
    },
    {
      why: 'a duplicate operationId (both paths named)',
      text: `${HEAD_31}paths:
  /pets:
    get:
      operationId: getPet
      responses: { '200': { description: ok } }
  /animals:
    get:
      operationId: getPet
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1animals/get/operationId',
      line: 11,
      message: /duplicate operationId "getPet": used by GET \/pets and GET \/animals/,
    },
    {
      why: 'a bad x-portcullis field',
      text: `openapi: 3.0.3
info: { title: T, version: '1' }
x-portcullis:
  mock: true
  timeoutMs: soon
paths: {}
`,
      path: '/x-portcullis/timeoutMs',
      line: 5,
      message: /must be integer/,
    },
    {
      why: 'a YAML syntax error',
      text: `openapi: 3.1.0
info: { title: T, version: '1' }
paths:
  /pets: [unclosed
`,
      path: '',
      line: 5,
      message: /./,
    },
  ])('rejects $why', async ({ text, path, line, message }) => {
    const file = write('bad.yaml', text);
    const issues = await issuesOf(file);
    expect(issues.length).toBeGreaterThanOrEqual(1);
    expect(issues[0]).toMatchObject({ file, path, line });
    expect(issues[0]?.message).toMatch(message);
  });

  it('reports x-portcullis problems and spec problems of one file together', async () => {
    const file = write(
      'both.yaml',
      `openapi: 3.1.0
info: { title: T, version: '1' }
paths:
  /pets:
    get:
      responses: 7
`,
    );
    const issues = await issuesOf(file);
    expect(issues.map((i) => i.path)).toEqual(['/x-portcullis/upstreams', '/paths/~1pets/get/responses']);
    expect(issues.every((i) => i.file === file)).toBe(true);
  });

  it('names a file that cannot be read', async () => {
    const file = join(dir, 'does-not-exist.yaml');
    const issues = await issuesOf(file);
    expect(issues[0]).toMatchObject({ file, path: '' });
    expect(issues[0]?.message).toMatch(/cannot read file/);
  });
});

describe('websocket (x-portcullis of the service and of GET operations)', () => {
  const spec = (service: string, operations: string) => `openapi: 3.1.0
info: { title: Ws, version: 1.0.0 }
x-portcullis: { upstreams: [{ url: 'http://127.0.0.1:4001' }]${service} }
paths:
${operations}`;

  it('defaults to allowed with 5 minutes idle and 24 hours in all; an operation overrides its service', async () => {
    const service = await loadServiceFile(
      write(
        'ws-ok.yaml',
        spec(
          ', websocket: { idleTimeoutMs: 1000 }',
          `  /a:
    get:
      operationId: a
      responses: { '200': { description: ok } }
  /b:
    get:
      operationId: b
      x-portcullis: { websocket: false }
      responses: { '200': { description: ok } }
  /c:
    get:
      operationId: c
      x-portcullis: { websocket: { maxLifetimeMs: 5000 } }
      responses: { '200': { description: ok } }
`,
        ),
      ),
    );
    expect(service.settings.websocket).toEqual({ idleTimeoutMs: 1000, maxLifetimeMs: 86_400_000 });
    const [a, b, c] = service.routes;
    expect(a?.websocket).toBeUndefined();
    expect(b?.websocket).toBe(false);
    expect(c?.websocket).toEqual({ idleTimeoutMs: 1000, maxLifetimeMs: 5000 });
    const plain = await loadServiceFile(
      write(
        'ws-default.yaml',
        spec('', `  /a: { get: { operationId: a, responses: { '200': { description: ok } } } }\n`),
      ),
    );
    expect(plain.settings.websocket).toEqual({ idleTimeoutMs: 300_000, maxLifetimeMs: 86_400_000 });
  });

  it.each([
    {
      why: 'a typo in an operation x-portcullis',
      operations: `  /a:
    get:
      operationId: a
      x-portcullis: { websockets: false }
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1a/get/x-portcullis',
      message: /websockets/,
    },
    {
      why: 'websocket on a POST operation (upgrades are GET requests)',
      operations: `  /a:
    post:
      operationId: a
      x-portcullis: { websocket: true }
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1a/post/x-portcullis/websocket',
      message: /GET operations only/,
    },
    {
      why: 'a zero timeout',
      operations: `  /a:
    get:
      operationId: a
      x-portcullis: { websocket: { idleTimeoutMs: 0 } }
      responses: { '200': { description: ok } }
`,
      path: '/paths/~1a/get/x-portcullis/websocket',
      message: /./,
    },
  ])('rejects $why, naming the field and its line', async ({ operations, path, message }) => {
    const file = write('ws-bad.yaml', spec('', operations));
    const issues = await issuesOf(file);
    const issue = issues.find((i) => i.path.startsWith(path));
    expect(issue, JSON.stringify(issues)).toBeDefined();
    expect(issue?.file).toBe(file);
    expect(issue?.line).toBeGreaterThan(3);
    expect(issue?.message).toMatch(message);
  });
});
