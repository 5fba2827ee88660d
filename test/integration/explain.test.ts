/**
 * Issue 13, part 5: `portcullis explain` and `portcullis test`, run as a user runs them. The
 * example cases file (examples/cases.yaml) passes against the repo's example services; a wrong
 * expectation exits 1 naming what differed; explain prints the target, the route, each policy in
 * phase order with its rule and decision, and the upstream group, and never calls an upstream.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killChildren, REPO_ROOT, runCli } from '../helpers/spawn.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** CLI runs load every spec and policy: allow for a busy machine. */
const SLOW = { timeoutMs: 30_000 };

afterAll(() => killChildren());

describe('portcullis test', () => {
  it('examples/cases.yaml passes against the example services', async () => {
    const { code, stdout, stderr } = await runCli(['test', 'examples/cases.yaml'], {
      cwd: REPO_ROOT,
      ...SLOW,
    });
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^ok {4}creating a pet needs an API key$/m);
    expect(stdout).toMatch(/\n8 case\(s\): 8 passed, 0 failed\.\n$/);
    expect(code).toBe(0);
  });

  describe('in a project of its own', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'portcullis-cases-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('exits 1 on a mismatch, printing each difference and the case line', async () => {
      await writeFile(
        join(dir, 'cases.yaml'),
        [
          '- name: right',
          '  request: { method: GET, path: /petstore/pets }',
          '  expect: { status: 200 }',
          '- name: wrong',
          '  request: { method: POST, path: /petstore/pets, body: { name: Rex, species: dog } }',
          '  expect: { status: 201, decisions: { auth: allow } }',
          '',
        ].join('\n'),
      );
      const { code, stdout } = await runCli(['test', join(dir, 'cases.yaml')], { cwd: REPO_ROOT, ...SLOW });
      expect(stdout).toMatch(/^ok {4}right$/m);
      expect(stdout).toMatch(/^FAIL {2}wrong {2}\(.*cases\.yaml:4\)$/m);
      expect(stdout).toMatch(/^ {8}status: expected 201, got 401$/m);
      expect(stdout).toMatch(/^ {8}decisions\.auth: expected "allow", got "deny"$/m);
      expect(stdout).toMatch(/2 case\(s\): 1 passed, 1 failed\./);
      expect(code).toBe(1);
    });

    it('exits 1 on a malformed cases file, naming file:line and the field', async () => {
      await writeFile(
        join(dir, 'bad.yaml'),
        '- name: typo\n  request: { method: GET, path: /petstore/pets }\n  expect: { stauts: 200 }\n',
      );
      const { code, stderr } = await runCli(['test', join(dir, 'bad.yaml')], { cwd: REPO_ROOT, ...SLOW });
      expect(stderr).toMatch(/bad\.yaml:3: \/0\/expect\/stauts: unknown field "stauts"/);
      expect(code).toBe(1);
    });
  });
});

describe('portcullis explain', () => {
  it('prints the route, each policy in phase order with its rule and decision, and the answer', async () => {
    const { code, stdout } = await runCli(
      [
        'explain',
        'POST',
        '/petstore/pets',
        '-H',
        'content-type: application/json',
        '--body',
        '{"name":"Rex"}',
      ],
      { cwd: REPO_ROOT, ...SLOW },
    );
    expect(code).toBe(0);
    expect(stdout.split('\n')).toEqual([
      'POST /petstore/pets',
      '  target    /petstore/pets',
      '  route     POST /petstore/pets  createPet  service petstore',
      '  policies  (phase order)',
      '    cors       petstore.yaml#0  allow',
      '    waf        petstore.yaml#0  allow',
      '    auth       petstore.yaml#1  deny (missing_credentials)',
      '    rateLimit  petstore.yaml#1  not-reached',
      '    validate   petstore.yaml#1  not-reached',
      '    headers    petstore.yaml#0  not-reached',
      "  upstream  mock: answered from the spec's examples",
      '  result    401 PC_UNAUTHORIZED',
      '',
    ]);
  });

  it('shows the canonical target a request is routed on', async () => {
    const { stdout } = await runCli(['explain', 'GET', '/petstore/pets/%2e%2e/admin'], {
      cwd: REPO_ROOT,
      ...SLOW,
    });
    expect(stdout).toMatch(/^ {2}target {4}\/petstore\/admin$/m);
    expect(stdout).toMatch(/^ {2}result {4}404 PC_ROUTE_NOT_FOUND$/m);
  });

  describe('a forwarding service', () => {
    let upstream: TestUpstream;
    let dir: string;
    beforeAll(async () => {
      upstream = await startUpstream({ name: 'items' });
      dir = await mkdtemp(join(tmpdir(), 'portcullis-explain-'));
      await mkdir(join(dir, 'openapi'));
      await mkdir(join(dir, 'policies'));
      await writeFile(
        join(dir, 'openapi', 'items.yaml'),
        `openapi: 3.1.0
info: { title: Items, version: 1.0.0 }
x-portcullis:
  basePath: /items
  upstreams: [{ url: "${upstream.url}" }]
  healthCheck: { path: /health, intervalMs: 1000 }
paths:
  /things/{id}:
    get:
      operationId: getThing
      parameters: [{ name: id, in: path, required: true, schema: { type: integer } }]
      responses: { "200": { description: ok } }
`,
      );
      await writeFile(
        join(dir, 'policies', 'items.yaml'),
        '- match: { service: items }\n  validate: { request: true }\n  ipFilter: { deny: [203.0.113.0/24] }\n',
      );
    });
    afterAll(async () => {
      await upstream?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('says it would forward, names the upstream group, and calls no upstream (not even a health check)', async () => {
      const { code, stdout } = await runCli(['explain', 'GET', '/items/things/7', '--json'], {
        cwd: dir,
        ...SLOW,
      });
      expect(code).toBe(0);
      expect(JSON.parse(stdout)).toMatchObject({
        target: '/items/things/7',
        route: { method: 'GET', path: '/items/things/{id}', operationId: 'getThing', service: 'items' },
        policies: [
          { kind: 'ipFilter', rule: 'items.yaml#0', decision: 'allow' },
          { kind: 'validate', rule: 'items.yaml#0', decision: 'allow' },
        ],
        upstream: { service: 'items', loadBalancing: 'round-robin', upstreams: [upstream.url] },
        forwarded: true,
      });
      expect(upstream.seen).toEqual([]);
    });

    it('--ip: the client address ipFilter sees', async () => {
      const { stdout } = await runCli(['explain', 'GET', '/items/things/7', '--ip', '203.0.113.9'], {
        cwd: dir,
        ...SLOW,
      });
      expect(stdout).toMatch(/^ {4}ipFilter {2}items\.yaml#0 {2}deny/m);
      expect(stdout).toMatch(/^ {4}validate {2}items\.yaml#0 {2}not-reached$/m);
      expect(stdout).toMatch(/^ {2}result {4}403 PC_IP_DENIED$/m);
      expect(upstream.seen).toEqual([]);
    });
  });

  it('a JWT whose IdP keys cannot be fetched: says so, and what its unverified claims show', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-explain-jwt-'));
    try {
      await mkdir(join(dir, 'openapi'));
      await mkdir(join(dir, 'policies'));
      await writeFile(
        join(dir, 'openapi', 'api.yaml'),
        'openapi: 3.1.0\ninfo: { title: Api, version: 1.0.0 }\nx-portcullis: { basePath: /api, upstreams: [{ url: "http://127.0.0.1:9" }] }\npaths:\n  /me:\n    get: { operationId: me, responses: { "200": { description: ok } } }\n',
      );
      // Nothing listens on port 9: the keys cannot be fetched.
      await writeFile(
        join(dir, 'policies', 'api.yaml'),
        '- match: { service: api }\n  auth:\n    jwt: { issuer: "https://idp.example", jwksUri: "http://127.0.0.1:9/jwks", audience: api }\n',
      );
      const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const token = `${part({ alg: 'RS256', kid: 'k' })}.${part({ sub: 'alice', iss: 'https://idp.example', aud: 'web', exp: 4102444800 })}.c2ln`;
      const { code, stdout } = await runCli(
        ['explain', 'GET', '/api/me', '-H', `authorization: Bearer ${token}`],
        {
          cwd: dir,
          ...SLOW,
        },
      );
      expect(code).toBe(0);
      expect(stdout).toMatch(/^ {4}auth {2}api\.yaml#0 {2}deny \(jwks_unavailable\)$/m);
      expect(stdout).toMatch(
        /^ {2}note {6}auth \(api\.yaml#0\): the IdP's signing keys \(JWKS\) could not be fetched/m,
      );
      expect(stdout).toMatch(
        /^ {2}note {6}unverified token claims: sub alice, iss matches, aud web is not api, expires 2100-01-01T00:00:00\.000Z$/m,
      );
      expect(stdout).not.toContain(token);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
