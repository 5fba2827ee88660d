/**
 * Issue 9, part 5: configuration that cannot silently do nothing. A policy rule whose `match` has a
 * typo (`operations: [createPets]`) used to be accepted by `validate` and by the running gateway,
 * and the route silently lost its auth and WAF. Now, against the real CLI and a real gateway with
 * an upstream that logs what it receives:
 * - `portcullis validate` exits 1 with `file:line: /json/path: message` for each kind of typo
 *   (unknown service, operationId, tag; a path pattern or a method matching nothing; a match that
 *   selects no route), and for a jwt without audience;
 * - `portcullis start` withholds the service such a file protects (503, nothing forwarded);
 * - on reload a typo'd policy file is rejected and its last good version keeps protecting the
 *   route (401, the upstream receives nothing); a spec rename that would orphan a rule rejects the
 *   reload;
 * - fromSpec with an openIdConnect scheme checks the audience: a real token the same IdP minted for
 *   another client gets 401;
 * - `validate` warns about operations whose spec declares security that no auth policy covers
 *   (errors with --strict).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import { startCliGateway } from '../helpers/cli.ts';
import { startGateway, type TestGateway } from '../helpers/gateway.ts';
import { OIDC_DEFAULT_AUDIENCE, startOidc, type TestOidc } from '../helpers/oidc.ts';
import { killChildren, runCli } from '../helpers/spawn.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const API_KEY = 'k-typos-0123456789abcdef';
const KEYS_FILE = `ci-robot: ${API_KEY}\n`;

/** The petstore spec; `upstream` is where it forwards (validate never calls it). */
const petstore = (upstream = 'http://127.0.0.1:9') => `openapi: 3.1.0
info: { title: Petstore, version: 1.0.0 }
x-portcullis: { basePath: /petstore, upstreams: [{ url: "${upstream}" }] }
paths:
  /pets:
    get:
      operationId: listPets
      tags: [pets]
      responses: { "200": { description: ok } }
    post:
      operationId: createPet
      tags: [pets, write]
      responses: { "200": { description: ok } }
  /pets/{petId}:
    get:
      operationId: getPet
      tags: [pets]
      parameters: [{ name: petId, in: path, required: true, schema: { type: string } }]
      responses: { "200": { description: ok } }
`;

/** A policy file whose second rule (line 4) puts an API key on what `match` selects. */
const policyWith = (match: string, auth = 'apiKey: { keysFile: keys/api-keys.yaml }') => `# petstore policies
- match: { service: petstore }
  headers: { securityHeaders: true }
- match: ${match}
  auth:
    ${auth}
`;

interface TypoCase {
  description: string;
  match: string;
  /** What validate prints (a line of stderr, as a regex). */
  expected: RegExp;
}

/** Every kind of typo, each in the rule at line 4 of policies/petstore.yaml. */
const TYPOS: TypoCase[] = [
  {
    description: 'an unknown service',
    match: '{ service: petstor, operations: [createPet] }',
    expected:
      /policies\/petstore\.yaml:4: \/1\/match\/service: no service "petstor" \(did you mean petstore\?\)$/m,
  },
  {
    description: 'an unknown operationId',
    match: '{ service: petstore, operations: [createPets] }',
    expected:
      /policies\/petstore\.yaml:4: \/1\/match\/operations\/0: no operation "createPets" in service petstore \(did you mean createPet\?\)$/m,
  },
  {
    description: 'an unknown tag',
    match: '{ service: petstore, tags: [writes] }',
    expected:
      /policies\/petstore\.yaml:4: \/1\/match\/tags\/0: no operation tagged "writes" in service petstore \(did you mean write\?\)$/m,
  },
  {
    description: 'a path pattern that matches no route',
    match: '{ service: petstore, paths: ["/pet/*"] }',
    expected:
      /policies\/petstore\.yaml:4: \/1\/match\/paths\/0: path pattern "\/pet\/\*" matches no path in service petstore/m,
  },
  {
    description: 'a method typo',
    match: '{ service: petstore, methods: [PSOT] }',
    expected:
      /policies\/petstore\.yaml:4: \/1\/match\/methods\/0: "PSOT" is not an HTTP method .*\(did you mean POST\?\)$/m,
  },
  {
    description: 'a match that selects no route as a whole',
    match: '{ service: petstore, tags: [write], methods: [GET] }',
    expected: /policies\/petstore\.yaml:4: \/1\/match: match selects no route/m,
  },
];

/** Write `files` (path → text) into a fresh temp folder. */
async function project(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-typos-'));
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  return dir;
}

const dirs: string[] = [];
async function validate(files: Record<string, string>, ...flags: string[]) {
  const dir = await project(files);
  dirs.push(dir);
  return runCli(['validate', ...flags], { cwd: dir });
}

afterAll(async () => {
  await killChildren();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('portcullis validate: a typo in match is an error with file:line', () => {
  test.each(TYPOS)('$description: exit 1 and the line', async (c) => {
    const { code, stdout, stderr } = await validate({
      'openapi/petstore.yaml': petstore(),
      'policies/petstore.yaml': policyWith(c.match),
      'policies/keys/api-keys.yaml': KEYS_FILE,
    });
    expect(stderr).toMatch(c.expected);
    expect(stderr).toMatch(/\n1 error\(s\)\.\n$/);
    expect(code).toBe(1);
    expect(stdout).not.toContain('OK:');
  });

  test('the corrected file validates (exit 0) and createPet gets its auth', async () => {
    const { code, stdout, stderr } = await validate({
      'openapi/petstore.yaml': petstore(),
      'policies/petstore.yaml': policyWith('{ service: petstore, operations: [createPet] }'),
      'policies/keys/api-keys.yaml': KEYS_FILE,
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/^POST\s+\/petstore\/pets\s+createPet\s+petstore\s+\S+\s+auth@petstore\.yaml#1/m);
  });

  test('jwt without audience is an error; `audience: any` is the explicit opt-out', async () => {
    const files = (jwt: string) => ({
      'openapi/petstore.yaml': petstore(),
      'policies/petstore.yaml': policyWith('{ service: petstore, operations: [createPet] }', jwt),
    });
    const missing = await validate(files('jwt: { issuer: "https://idp.example.com" }'));
    expect(missing.stderr).toMatch(
      /policies\/petstore\.yaml:6: \/1\/auth\/jwt: missing required field "audience"$/m,
    );
    expect(missing.code).toBe(1);
    const any = await validate(files('jwt: { issuer: "https://idp.example.com", audience: any }'));
    expect(any.stderr).toBe('');
    expect(any.code).toBe(0);
  });

  test('fromSpec with an openIdConnect scheme and no jwt audience is an error', async () => {
    const spec = petstore().replace(
      'paths:\n',
      `security: [{ oidc: [] }]
components:
  securitySchemes:
    oidc: { type: openIdConnect, openIdConnectUrl: "https://idp.example.com/.well-known/openid-configuration" }
paths:\n`,
    );
    const { code, stderr } = await validate({
      'openapi/petstore.yaml': spec,
      'policies/petstore.yaml': policyWith(
        '{ service: petstore, operations: [createPet] }',
        'fromSpec: true',
      ),
    });
    expect(stderr).toMatch(
      /policies\/petstore\.yaml:5: \/1\/auth\/fromSpec \(securitySchemes\.oidc\): scheme oidc is openIdConnect: set auth\.jwt\.audience/m,
    );
    expect(code).toBe(1);
  });
});

describe('portcullis validate: spec security that no auth policy enforces', () => {
  // Document-level security, inherited by listItems and getItem; createItem declares its own;
  // health opts out with `security: []`. Only getItem gets an enforcing auth policy, listItems a
  // dry-run one.
  const SECURED = `openapi: 3.1.0
info: { title: Secured, version: 1.0.0 }
x-portcullis: { basePath: /secured, mock: true }
security: [{ key: [] }]
components:
  securitySchemes:
    key: { type: apiKey, in: header, name: x-api-key }
paths:
  /items:
    get:
      operationId: listItems
      responses: { "200": { description: ok } }
    post:
      operationId: createItem
      security: [{ key: [] }]
      responses: { "200": { description: ok } }
  /items/{id}:
    get:
      operationId: getItem
      parameters: [{ name: id, in: path, required: true, schema: { type: string } }]
      responses: { "200": { description: ok } }
  /health:
    get:
      operationId: health
      security: []
      responses: { "200": { description: ok } }
`;
  const files = {
    'openapi/secured.yaml': SECURED,
    'policies/secured.yaml': `- match: { service: secured, operations: [getItem] }
  auth: { fromSpec: true, apiKey: { keysFile: keys/api-keys.yaml } }
- match: { service: secured, operations: [listItems] }
  auth: { mode: dry-run, fromSpec: true, apiKey: { keysFile: keys/api-keys.yaml } }
`,
    'policies/keys/api-keys.yaml': KEYS_FILE,
  };
  const LIST =
    /openapi\/secured\.yaml:10: \/paths\/~1items\/get: .*operation listItems inherits the document's security but only a dry-run auth policy covers it/m;
  const CREATE =
    /openapi\/secured\.yaml:15: \/paths\/~1items\/post\/security: .*operation createItem declares security but no auth policy covers it/m;

  test('warnings with the spec file:line, exit 0', async () => {
    const { code, stdout, stderr } = await validate(files);
    expect(stderr).toMatch(LIST);
    expect(stderr).toMatch(CREATE);
    expect(stderr).toMatch(/: warning: operation listItems/);
    expect(stderr).not.toMatch(/getItem|health/);
    expect(stderr).toMatch(/\n2 warning\(s\) \(errors with --strict\)\.\n$/);
    expect(stdout).toContain('OK:');
    expect(code).toBe(0);
  });

  test('--strict: the same lines are errors, exit 1', async () => {
    const { code, stderr } = await validate(files, '--strict');
    expect(stderr).toMatch(LIST);
    expect(stderr).toMatch(CREATE);
    expect(stderr).not.toContain('warning');
    expect(stderr).toMatch(/\n2 error\(s\)\.\n$/);
    expect(code).toBe(1);
  });
});

describe('portcullis start: a typo in match withholds the service it protects', () => {
  test('petstore answers 503 service-withheld, nothing reaches its upstream, /readyz names file:line', async () => {
    const upstream = await startUpstream({ name: 'pets' });
    const gw = await startCliGateway({
      specs: { petstore: parse(petstore(upstream.url)) },
      policies: {
        petstore: policyWith('{ service: petstore, operations: [createPets] }'),
      },
    });
    try {
      for (const [method, path] of [
        ['POST', '/petstore/pets'],
        ['GET', '/petstore/pets'],
      ] as const) {
        const res = await fetch(`${gw.url}${path}`, { method });
        expect(res.status).toBe(503);
        expect(await res.json()).toMatchObject({ type: expect.stringMatching(/service-withheld$/) });
      }
      expect(upstream.seen.filter((r) => r.url !== '/health')).toHaveLength(0);
      const ready = await fetch(`${gw.admin}/readyz`);
      // Nothing is served: not ready; the file and its error are listed.
      expect(ready.status).toBe(503);
      const body = (await ready.json()) as { rejected: Array<Record<string, unknown>>; withheld: string[] };
      expect(body.withheld).toEqual(['petstore']);
      expect(body.rejected).toEqual([
        expect.objectContaining({
          kind: 'policy',
          serving: 'withheld',
          services: ['petstore'],
          errors: [expect.stringMatching(TYPOS[1]?.expected as RegExp)],
        }),
      ]);
    } finally {
      await gw.stop();
      await upstream.close();
    }
  });
});

describe('running gateway: a typo on reload never unprotects a route', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const GOOD = policyWith('{ service: petstore, operations: [createPet] }');

  beforeAll(async () => {
    upstream = await startUpstream({ name: 'pets' });
    gw = await startGateway({}, {}, { files: { 'policies/keys/api-keys.yaml': KEYS_FILE } });
    await gw.writeRaw('petstore.yaml', petstore(upstream.url));
    await gw.writePolicyRaw('petstore.yaml', GOOD);
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const post = (headers: Record<string, string> = {}) =>
    fetch(`${gw.url}/petstore/pets`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: '{"name":"rex"}',
    });

  /** createPet still demands the key: 401 without, nothing reaches the upstream; 200 with it. */
  async function expectProtected(): Promise<void> {
    const before = upstream.seen.length;
    const denied = await post();
    expect(denied.status).toBe(401);
    expect(await denied.json()).toMatchObject({ code: 'PC_UNAUTHORIZED' });
    expect(upstream.seen.length).toBe(before);
    const allowed = await post({ 'x-api-key': API_KEY });
    expect(allowed.status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
    expect(upstream.seen.at(-1)).toMatchObject({ method: 'POST', url: '/pets', body: '{"name":"rex"}' });
  }

  test('the good file protects createPet', async () => {
    await expectProtected();
  });

  test.each(TYPOS)(
    '$description: the file is rejected, its last good version keeps protecting',
    async (c) => {
      const version = gw.gateway.runtime.snapshot?.version;
      await gw.writePolicyRaw('petstore.yaml', policyWith(c.match));
      const result = await gw.gateway.runtime.reload();
      expect(result.ok).toBe(false);
      const lines = result.issues.map((i) => `${i.file}:${i.line}: ${i.path}: ${i.message}`);
      expect(lines.join('\n')).toMatch(c.expected);
      expect(gw.gateway.runtime.snapshot?.version).toBe(version);
      await expectProtected();
    },
  );

  test('a spec rename that would orphan the rule rejects the reload; fixing the policy applies both', async () => {
    await gw.writePolicyRaw('petstore.yaml', GOOD);
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    const version = gw.gateway.runtime.snapshot?.version;
    // createPet renamed addPet in the spec; the policy still names createPet.
    await gw.writeRaw('petstore.yaml', petstore(upstream.url).replace('createPet', 'addPet'));
    const rejected = await gw.gateway.runtime.reload();
    expect(rejected.ok).toBe(false);
    expect(rejected.issues.map((i) => `${i.line}: ${i.path}: ${i.message}`)).toEqual([
      '4: /1/match/operations/0: no operation "createPet" in service petstore',
    ]);
    expect(gw.gateway.runtime.snapshot?.version).toBe(version);
    await expectProtected();
    // The policy follows the rename: both apply, and addPet is protected.
    await gw.writePolicyRaw('petstore.yaml', policyWith('{ service: petstore, operations: [addPet] }'));
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    expect(gw.gateway.runtime.snapshot?.version).not.toBe(version);
    await expectProtected();
  });

  test('a removed spec is applied; the rule naming it is reported and the others keep protecting', async () => {
    await gw.writeRaw('toys.yaml', petstore(upstream.url).replace('/petstore', '/toys'));
    await gw.writePolicyRaw(
      'toys.yaml',
      '- match: { service: [toys, petstore], operations: [createPet] }\n  auth: { apiKey: { keysFile: keys/api-keys.yaml } }\n',
    );
    await gw.writeRaw('petstore.yaml', petstore(upstream.url));
    await gw.writePolicyRaw('petstore.yaml', GOOD);
    expect(await gw.gateway.runtime.reload()).toMatchObject({ ok: true });
    expect((await fetch(`${gw.url}/toys/pets`, { method: 'POST' })).status).toBe(401);
    await gw.removeSpec('toys');
    const result = await gw.gateway.runtime.reload();
    expect(result.ok).toBe(false);
    expect(result.issues.map((i) => `${i.path}: ${i.message}`)).toContainEqual(
      '/0/match/service/0: no service "toys"',
    );
    expect(gw.gateway.runtime.snapshot?.table.services.has('toys')).toBe(false);
    expect((await fetch(`${gw.url}/toys/pets`, { method: 'POST' })).status).toBe(404);
    await expectProtected();
  });
});

describe('fromSpec + openIdConnect through the gateway: the audience is checked', () => {
  let oidc: TestOidc;
  let upstream: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    oidc = await startOidc();
    upstream = await startUpstream({ name: 'oidc' });
    const spec = {
      openapi: '3.1.0',
      info: { title: 'Orders', version: '1.0.0' },
      'x-portcullis': { basePath: '/orders', upstreams: [{ url: upstream.url }] },
      security: [{ oidc: ['orders:read'] }],
      components: {
        securitySchemes: {
          oidc: {
            type: 'openIdConnect',
            openIdConnectUrl: `${oidc.issuer}/.well-known/openid-configuration`,
          },
        },
      },
      paths: {
        '/orders': { get: { operationId: 'listOrders', responses: { '200': { description: 'ok' } } } },
      },
    };
    gw = await startGateway(
      { orders: spec },
      {},
      {
        policies: {
          orders: [
            {
              match: { service: 'orders' },
              auth: { fromSpec: true, jwt: { audience: OIDC_DEFAULT_AUDIENCE } },
            },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
  });

  const get = (token: string) =>
    fetch(`${gw.url}/orders/orders`, { headers: { authorization: `Bearer ${token}` } });

  test('a real token the same IdP minted for another client: 401 bad_audience, upstream receives nothing', async () => {
    const before = upstream.seen.length;
    const other = await oidc.token({ scope: 'orders:read', resource: 'https://billing.portcullis.test' });
    const res = await get(other);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ code: 'PC_UNAUTHORIZED', reason: 'bad_audience' });
    expect(upstream.seen.length).toBe(before);
  });

  test('a token for this API passes and reaches the upstream', async () => {
    const before = upstream.seen.length;
    const res = await get(await oidc.token({ scope: 'orders:read' }));
    expect(res.status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
    expect(upstream.seen.at(-1)).toMatchObject({ method: 'GET', url: '/orders' });
  });
});
