import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ProblemError } from '../../errors.ts';
import { buildChain, createContext, readBody, readBodyThen, runChain } from '../../pipeline/chain.ts';
import type { Decision, PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import { sendProblem } from '../../problem.ts';
import { loadServiceFile } from '../../registry/load-service.ts';
import type { Service } from '../../registry/types.ts';
import { type ValidateConfig, type Violation, validatePolicy } from './validate.ts';

const logger = pino({ level: 'silent' });

/** OpenAPI 3.0: nullable, boolean exclusiveMinimum, a recursive schema, every parameter location. */
const SPEC_30 = `
openapi: 3.0.3
info: { title: Shop, version: 1.0.0 }
servers: [{ url: 'http://127.0.0.1:1' }]
x-portcullis: { basePath: /shop }
paths:
  /items/{itemId}:
    parameters:
      - { name: itemId, in: path, required: true, schema: { type: integer, minimum: 1 } }
    put:
      operationId: putItem
      parameters:
        - { name: limit, in: query, schema: { type: integer, maximum: 100 } }
        - { name: tags, in: query, schema: { type: array, items: { type: string, enum: [a, b] } } }
        - { name: ids, in: query, style: form, explode: false, schema: { type: array, items: { type: integer } } }
        - { name: X-Request-Id, in: header, required: true, schema: { type: string, format: uuid } }
        - { name: session, in: cookie, schema: { type: string, minLength: 4 } }
        - name: filter
          in: query
          content: { application/json: { schema: { type: object, required: [q], properties: { q: { type: string } } } } }
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: '#/components/schemas/Node' }
          text/plain:
            schema: { type: string }
      responses:
        '200': { description: ok, content: { application/json: { schema: { type: object } } } }
        4XX: { description: client error }
  /free:
    get:
      operationId: free
      responses: { '200': { description: ok } }
components:
  schemas:
    Node:
      type: object
      required: [name]
      additionalProperties: false
      properties:
        name: { type: string, example: root }
        weight: { type: number, minimum: 0, exclusiveMinimum: true }
        note: { type: string, nullable: true }
        kind: { type: string, enum: [leaf, branch], nullable: true }
        children: { type: array, items: { $ref: '#/components/schemas/Node' } }
`;

/** OpenAPI 3.1: JSON Schema 2020-12 types, const, a self-recursive root schema. */
const SPEC_31 = `
openapi: 3.1.0
info: { title: Tree, version: 1.0.0 }
servers: [{ url: 'http://127.0.0.1:1' }]
x-portcullis: { basePath: / }
paths:
  /trees/{id}:
    post:
      operationId: postTree
      parameters:
        - { name: id, in: path, required: true, schema: { type: string, pattern: '^[a-z]+$' } }
        - { name: dry, in: query, schema: { type: boolean } }
      requestBody:
        required: true
        content:
          application/vnd.tree+json:
            schema: { $ref: '#/components/schemas/Tree' }
      responses: { '201': { description: created } }
components:
  schemas:
    Tree:
      type: object
      required: [label]
      properties:
        label: { type: [string, 'null'] }
        version: { const: 2 }
        left: { $ref: '#/components/schemas/Tree' }
        right: { $ref: '#/components/schemas/Tree' }
`;

let dir: string;
let shop: Service;
let tree: Service;
const apps: FastifyInstance[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pc-validate-'));
  await writeFile(join(dir, 'shop.yaml'), SPEC_30);
  await writeFile(join(dir, 'tree.yaml'), SPEC_31);
  shop = await loadServiceFile(join(dir, 'shop.yaml'));
  tree = await loadServiceFile(join(dir, 'tree.yaml'));
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await rm(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  errors?: Violation[];
  code?: string;
  /** What the chain left for the forwarder: the buffered body, the decisions. */
  body?: string;
  decisions?: Decision[];
}

/** A Fastify app (raw bodies, as the gateway keeps them) that runs one validate chain. */
async function appFor(service: Service, operationId: string, config: ValidateConfig = {}) {
  const route = service.routes.find((r) => r.operationId === operationId);
  if (!route) throw new Error(`no route ${operationId}`);
  const deps = {
    config: { limits: { bodyBytes: 4096 } },
    logger,
    route,
    service,
    readBody,
    readBodyThen,
  } as unknown as PolicyDeps;
  const chain = await buildChain(
    [
      {
        kind: validatePolicy,
        config,
        rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' },
      },
    ],
    deps,
  );
  const app = Fastify();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  app.all('/*', async (req, reply) => {
    const ctx = createContext(req, reply, route, service);
    try {
      await runChain(chain, ctx);
    } catch (err) {
      if (err instanceof ProblemError) return sendProblem(req, reply, err);
      throw err;
    }
    // The test's fake upstream answer: status `rs`, content type `rt`.
    const q = req.query as { rs?: string; rt?: string };
    const headers = { 'content-type': q.rt ?? 'application/json' };
    for (const edit of ctx.responseEdits) edit(Number(q.rs ?? 200), headers);
    return { body: ctx.body?.toString('utf8'), decisions: ctx.decisions };
  });
  await app.ready();
  apps.push(app);
  return async (opts: InjectOptions): Promise<Answer> => {
    const res = await app.inject(opts);
    const json = res.json();
    return { status: res.statusCode, ...json };
  };
}

const UUID = '3f0c8a5e-8a8e-4b7e-9d5c-1f2e3d4c5b6a';
const okHeaders = { 'x-request-id': UUID, 'content-type': 'application/json' };
const okBody = JSON.stringify({
  name: 'root',
  note: null,
  kind: null,
  children: [{ name: 'a', children: [] }],
});

describe('validate (OpenAPI 3.0)', () => {
  test('a valid request passes, and the body read for validation is kept for forwarding', async () => {
    const call = await appFor(shop, 'putItem');
    const res = await call({
      method: 'PUT',
      url: '/shop/items/7?limit=10&tags=a&tags=b&ids=1,2,3&filter=%7B%22q%22%3A%22x%22%7D',
      headers: { ...okHeaders, cookie: 'session=abcd' },
      payload: okBody,
    });
    expect(res).toMatchObject({ status: 200, body: okBody });
  });

  const bad: Array<{
    name: string;
    url?: string;
    headers?: Record<string, string>;
    payload?: string;
    want: Partial<Violation>[];
  }> = [
    { name: 'path parameter below minimum', url: '/shop/items/0', want: [{ in: 'path', name: 'itemId' }] },
    { name: 'path parameter not an integer', url: '/shop/items/abc', want: [{ in: 'path', name: 'itemId' }] },
    {
      name: 'query over maximum',
      url: '/shop/items/7?limit=101',
      want: [{ in: 'query', name: 'limit', message: 'must be <= 100' }],
    },
    {
      name: 'query array item outside enum',
      url: '/shop/items/7?tags=a&tags=z',
      want: [{ in: 'query', name: 'tags' }],
    },
    {
      name: 'comma-separated array item not an integer',
      url: '/shop/items/7?ids=1,x',
      want: [{ in: 'query', name: 'ids' }],
    },
    {
      name: 'JSON-encoded query parameter missing a field',
      url: '/shop/items/7?filter=%7B%7D',
      want: [{ in: 'query', name: 'filter' }],
    },
    {
      name: 'JSON-encoded query parameter not JSON',
      url: '/shop/items/7?filter=nope',
      want: [{ in: 'query', name: 'filter', message: 'is not valid JSON' }],
    },
    {
      name: 'required header missing',
      headers: { 'content-type': 'application/json' },
      want: [{ in: 'header', name: 'x-request-id', message: 'is required' }],
    },
    {
      name: 'header with a bad format',
      headers: { ...okHeaders, 'x-request-id': 'nope' },
      want: [{ in: 'header', name: 'x-request-id' }],
    },
    {
      name: 'cookie too short',
      headers: { ...okHeaders, cookie: 'session=ab' },
      want: [{ in: 'cookie', name: 'session' }],
    },
    { name: 'body missing', payload: '', want: [{ in: 'body', message: 'request body is required' }] },
    { name: 'body not JSON', payload: '{nope', want: [{ in: 'body', message: 'is not valid JSON' }] },
    {
      name: 'content type not declared',
      headers: { ...okHeaders, 'content-type': 'application/xml' },
      payload: '<a/>',
      want: [{ in: 'header', name: 'content-type' }],
    },
    {
      name: 'body missing a required field',
      payload: '{}',
      want: [{ in: 'body', name: '/name', message: 'is required' }],
    },
    {
      name: 'body with an unknown field',
      payload: '{"name":"x","extra":1}',
      want: [{ in: 'body', name: '/extra', message: 'is not allowed' }],
    },
    {
      name: 'exclusiveMinimum: true (3.0 boolean form) excludes the bound',
      payload: '{"name":"x","weight":0}',
      want: [{ in: 'body', name: '/weight' }],
    },
    { name: 'null where not nullable', payload: '{"name":null}', want: [{ in: 'body', name: '/name' }] },
    {
      // A first-wins parser behind the gateway would read the unchecked 500 (JSON.parse keeps "x").
      name: 'a repeated member name, even when its last value is valid',
      payload: '{"name":500,"name":"x"}',
      want: [{ in: 'body', name: '/name', message: expect.stringContaining('repeats a member name') }],
    },
    {
      name: 'a member name repeated in a nested object',
      payload: '{"name":"r","children":[{"name":"a"},{"name":"b","weight":1,"weight":2}]}',
      want: [{ in: 'body', name: '/children/1/weight' }],
    },
    {
      name: 'a violation deep in the recursive schema',
      payload: '{"name":"r","children":[{"name":"a","children":[{"weight":1}]}]}',
      want: [{ in: 'body', name: '/children/0/children/0/name', message: 'is required' }],
    },
  ];
  for (const c of bad) {
    test(`400 listing the violation: ${c.name}`, async () => {
      const call = await appFor(shop, 'putItem');
      const res = await call({
        method: 'PUT',
        url: c.url ?? '/shop/items/7',
        headers: c.headers ?? okHeaders,
        payload: c.payload ?? okBody,
      });
      expect(res.status).toBe(400);
      expect(res.code).toBe('PC_VALIDATION_FAILED');
      expect(res.errors).toEqual(c.want.map((w) => expect.objectContaining(w)));
    });
  }

  test('several violations are reported together, each with its location', async () => {
    const call = await appFor(shop, 'putItem');
    const res = await call({
      method: 'PUT',
      url: '/shop/items/0?limit=500',
      headers: { 'content-type': 'application/json' },
      payload: '{}',
    });
    expect(res.errors?.map((e) => `${e.in}:${e.name}`).sort()).toEqual(
      ['body:/name', 'header:x-request-id', 'path:itemId', 'query:limit'].sort(),
    );
  });

  test('a non-JSON declared media type is accepted without parsing, and left unread (it streams upstream)', async () => {
    const call = await appFor(shop, 'putItem');
    const res = await call({
      method: 'PUT',
      url: '/shop/items/7',
      headers: { ...okHeaders, 'content-type': 'text/plain' },
      payload: 'hi',
    });
    expect(res.status).toBe(200);
    expect(res.body).toBeUndefined();
  });

  test('a JSON body is read ahead by the chain (Hook.readAhead) and checked without a promise', async () => {
    const route = shop.routes.find((r) => r.operationId === 'putItem');
    const deps = {
      config: { limits: { bodyBytes: 4096 } },
      logger,
      route,
      service: shop,
      readBody,
      readBodyThen,
    } as unknown as PolicyDeps;
    const hook = await validatePolicy.create({}, deps);
    expect(hook.readAhead).toBeTypeOf('function');
    // With the body read, the hook answers synchronously: an invalid body throws at once.
    const ctx = {
      req: {
        method: 'PUT',
        url: '/shop/items/7',
        headers: { ...okHeaders, 'content-length': '12' },
        raw: { headers: { 'content-length': '12' } },
        query: {},
      },
      target: { path: '/shop/items/7', query: '' },
      params: { itemId: '7' },
      body: Buffer.from('{"name":"x"'),
      responseEdits: [],
      decisions: [],
    } as unknown as RequestContext;
    expect(() => hook(ctx)).toThrow(ProblemError);
  });

  test('a body over maxBodyBytes is 413', async () => {
    const call = await appFor(shop, 'putItem', { maxBodyBytes: 10 });
    const res = await call({ method: 'PUT', url: '/shop/items/7', headers: okHeaders, payload: okBody });
    expect(res.status).toBe(413);
  });

  test('dry-run lets an invalid request through and records would-deny with the violations', async () => {
    const call = await appFor(shop, 'putItem', { mode: 'dry-run' });
    const res = await call({
      method: 'PUT',
      url: '/shop/items/7?limit=500',
      headers: okHeaders,
      payload: okBody,
    });
    expect(res.status).toBe(200);
    expect(res.decisions).toEqual([
      expect.objectContaining({
        policy: 'validate',
        outcome: 'would-deny',
        reason: 'PC_VALIDATION_FAILED',
        detail: { errors: [expect.objectContaining({ in: 'query', name: 'limit' })] },
      }),
    ]);
  });

  test('request: false checks nothing', async () => {
    const call = await appFor(shop, 'putItem', { request: false });
    expect((await call({ method: 'PUT', url: '/shop/items/0', payload: '' })).status).toBe(200);
  });

  test('response: true records undeclared statuses and content types, never blocking', async () => {
    const call = await appFor(shop, 'putItem', { request: false, response: true });
    const ok = await call({ method: 'PUT', url: '/shop/items/7?rs=200' });
    expect(ok.decisions).toEqual([]);
    const clientError = await call({ method: 'PUT', url: '/shop/items/7?rs=404&rt=text/html' });
    expect(clientError.decisions).toEqual([]);
    const undeclared = await call({ method: 'PUT', url: '/shop/items/7?rs=500' });
    expect(undeclared.status).toBe(200);
    expect(undeclared.decisions).toEqual([
      expect.objectContaining({
        policy: 'validate',
        reason: 'response_mismatch',
        detail: expect.objectContaining({ status: 500 }),
      }),
    ]);
    const wrongType = await call({ method: 'PUT', url: '/shop/items/7?rs=200&rt=text/html' });
    expect(wrongType.decisions?.[0]?.detail).toMatchObject({ contentType: 'text/html' });
  });

  test('an operation without parameters or body passes anything', async () => {
    const call = await appFor(shop, 'free');
    expect((await call({ method: 'GET', url: '/shop/free?x=1' })).status).toBe(200);
  });
});

describe('validate (OpenAPI 3.1)', () => {
  const headers = { 'content-type': 'application/vnd.tree+json' };
  test('a valid recursive body with a null label passes', async () => {
    const call = await appFor(tree, 'postTree');
    const res = await call({
      method: 'POST',
      url: '/trees/oak?dry=true',
      headers,
      payload: JSON.stringify({ label: null, version: 2, left: { label: 'l', right: { label: 'lr' } } }),
    });
    expect(res.status).toBe(200);
  });

  const bad: Array<{ name: string; url?: string; payload: unknown; want: Partial<Violation> }> = [
    { name: 'const violated', payload: { label: 'x', version: 3 }, want: { in: 'body', name: '/version' } },
    { name: 'type list violated', payload: { label: 5 }, want: { in: 'body', name: '/label' } },
    {
      name: 'deep recursion violated',
      payload: { label: 'a', left: { right: {} } },
      want: { in: 'body', name: '/left/label' },
    },
    {
      name: 'boolean query not a boolean',
      url: '/trees/oak?dry=maybe',
      payload: { label: 'a' },
      want: { in: 'query', name: 'dry' },
    },
    { name: 'path pattern', url: '/trees/OAK', payload: { label: 'a' }, want: { in: 'path', name: 'id' } },
  ];
  for (const c of bad) {
    test(`400: ${c.name}`, async () => {
      const call = await appFor(tree, 'postTree');
      const res = await call({
        method: 'POST',
        url: c.url ?? '/trees/oak',
        headers,
        payload: JSON.stringify(c.payload),
      });
      expect(res.status).toBe(400);
      expect(res.errors).toContainEqual(expect.objectContaining(c.want));
    });
  }

  test('path parameters given by the gateway on the context win over the URL', async () => {
    const route = tree.routes.find((r) => r.operationId === 'postTree');
    const deps = {
      config: { limits: { bodyBytes: 4096 } },
      logger,
      route,
      service: tree,
      readBody,
      readBodyThen,
    } as unknown as PolicyDeps;
    const hook = await validatePolicy.create({ request: true }, deps);
    const app = Fastify();
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
    app.all('/*', async (req, reply) => {
      const ctx = Object.assign(createContext(req, reply, route!, tree), { params: { id: 'BAD' } });
      try {
        await hook(ctx);
      } catch (err) {
        return sendProblem(req, reply, err as ProblemError);
      }
      return {};
    });
    apps.push(app);
    const res = await app.inject({ method: 'POST', url: '/trees/oak', headers, payload: '{"label":"a"}' });
    expect(res.statusCode).toBe(400);
    expect(res.json().errors).toEqual([expect.objectContaining({ in: 'path', name: 'id' })]);
  });
});
