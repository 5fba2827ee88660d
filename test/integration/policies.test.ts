/**
 * Issue 3, policies through the whole gateway: policies/*.yaml rules attach kinds to the routes of
 * real services in front of a real upstream. Dry-run lets everything through and logs what each
 * policy would have done (read back from the gateway's pino logs); enforce-mode rejections never
 * reach the upstream; the most specific rule wins per kind; CORS answers preflights before auth
 * and decorates 401s; a broken policy file on reload keeps its last good rules; a missing file
 * named by a policy fails the load with file:line.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError } from '../../src/errors.ts';
import { type CapturedLogs, captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const API_KEY = 'k-test-0123456789abcdef';
const ORIGIN = 'https://app.example';
const KEYS_FILE = { 'policies/secrets/keys.yaml': `ci-robot: ${API_KEY}\n` };

type Doc = Record<string, unknown> & { paths: Record<string, Record<string, Record<string, unknown>>> };

/** A service whose GET /items takes `?limit` (integer ≤ 100) and whose POST /items needs `{name}`. */
function contractSpec(basePath: string, upstream: string): Doc {
  const doc = spec({
    basePath,
    upstreams: [upstream],
    operations: { 'GET /items': 'listItems', 'POST /items': 'createItem' },
  }) as Doc;
  const paths = doc.paths['/items'] as Record<string, Record<string, unknown>>;
  (paths.get as Record<string, unknown>).parameters = [
    { name: 'limit', in: 'query', schema: { type: 'integer', maximum: 100 } },
  ];
  (paths.post as Record<string, unknown>).requestBody = {
    required: true,
    content: {
      'application/json': {
        schema: {
          type: 'object',
          required: ['name'],
          properties: { name: { type: 'string' }, age: { type: 'integer', minimum: 0 } },
        },
      },
    },
  };
  return doc;
}

describe('policies through the gateway', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  let logs: CapturedLogs;

  beforeAll(async () => {
    upstream = await startUpstream({ name: 'u1' });
    logs = captureLogs('info');
    const svc = (basePath: string) => spec({ basePath, upstreams: [upstream.url] });
    gw = await startGateway(
      {
        dry: contractSpec('/dry', upstream.url),
        blocked: svc('/blocked'),
        strict: contractSpec('/strict', upstream.url),
        limited: svc('/limited'),
        tied: svc('/tied'),
        browser: svc('/browser'),
        reloading: svc('/reloading'),
      },
      {},
      {
        logger: logs.logger,
        files: KEYS_FILE,
        policies: {
          dry: [
            {
              match: { service: 'dry' },
              ipFilter: { mode: 'dry-run', deny: ['127.0.0.0/8'] },
              auth: { mode: 'dry-run', apiKey: { keysFile: 'secrets/keys.yaml' } },
              rateLimit: { mode: 'dry-run', limit: 1, window: '1m' },
              validate: { mode: 'dry-run' },
              headers: {
                mode: 'dry-run',
                request: { set: { 'x-added-upstream': 'yes' } },
                response: { set: { 'x-added-client': 'yes' }, remove: ['x-upstream'] },
              },
              cors: { mode: 'dry-run', origins: [ORIGIN] },
              stickySession: { mode: 'dry-run' },
            },
          ],
          enforce: [
            { match: { service: 'blocked' }, ipFilter: { deny: ['127.0.0.1'] } },
            { match: { service: 'strict' }, validate: { request: true } },
            // The operation-specific rule comes first in the file: specificity, not order, decides.
            {
              match: { service: 'limited', operations: ['createItem'] },
              rateLimit: { limit: 2, window: '1m' },
            },
            { match: { service: 'limited' }, rateLimit: { limit: 100, window: '1m' } },
            {
              match: { service: 'browser' },
              cors: { origins: [ORIGIN], credentials: true },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
          ],
          reload: [{ match: { service: 'reloading' }, ipFilter: { deny: ['127.0.0.1'] } }],
          // Equally specific rules: files load in name order, so this file's rule beats tie-a's.
          'tie-a': [{ match: { service: 'tied' }, rateLimit: { limit: 100, window: '1m' } }],
          'tie-b': [{ match: { service: 'tied' }, rateLimit: { limit: 3, window: '1m' } }],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const url = (path: string) => `${gw.url}${path}`;

  describe('dry-run', () => {
    test('every policy lets the request through and logs what it would have done; none applies its effect', async () => {
      const before = upstream.seen.length;
      const from = logs.lines.length;
      const responses = [];
      // Twice: the second request is over the rateLimit of 1.
      for (let i = 0; i < 2; i++) {
        const res = await fetch(url('/dry/items?limit=500'), { headers: { origin: ORIGIN } });
        await res.arrayBuffer();
        responses.push(res);
      }
      for (const res of responses) {
        expect(res.status).toBe(200);
        // headers dry-run: the upstream's header is not removed, nothing added.
        expect(res.headers.get('x-upstream')).toBe('u1');
        expect(res.headers.get('x-added-client')).toBeNull();
        // cors dry-run: no CORS headers; stickySession dry-run: no cookie; rateLimit dry-run: no fields.
        expect(res.headers.get('access-control-allow-origin')).toBeNull();
        expect(res.headers.get('set-cookie')).toBeNull();
        expect(res.headers.get('ratelimit')).toBeNull();
      }
      expect(upstream.seen.length).toBe(before + 2);
      for (const seen of upstream.seen.slice(before)) {
        expect(seen.url).toBe('/items?limit=500');
        expect(seen.headers['x-added-upstream']).toBeUndefined();
      }

      const entries = logs.lines.slice(from);
      const wouldDeny = (policy: string) =>
        entries.filter((e) => e.msg === 'dry-run: would deny' && e.policy === policy);
      for (const policy of ['ipFilter', 'auth', 'validate']) {
        expect(wouldDeny(policy), `${policy} would-deny entries`).toHaveLength(2);
        expect(wouldDeny(policy)[0]).toMatchObject({
          route: 'listItems',
          service: 'dry',
          outcome: 'would-deny',
        });
      }
      expect(wouldDeny('ipFilter')[0]).toMatchObject({
        reason: 'PC_IP_DENIED',
        detail: { reason: 'deny_list' },
      });
      expect(wouldDeny('auth')[0]).toMatchObject({ detail: { reason: 'missing_credentials' } });
      expect(JSON.stringify(wouldDeny('validate')[0])).toContain('limit');
      // The first request is within the limit of 1: only the second would be refused.
      expect(wouldDeny('rateLimit')).toHaveLength(1);
      expect(wouldDeny('rateLimit')[0]).toMatchObject({ reason: 'limit', detail: { exceeded: 'default' } });

      // The kinds that shape rather than refuse record what they would have applied.
      const wouldApply = (policy: string) =>
        entries.filter((e) => e.msg === 'dry-run: would apply' && e.policy === policy);
      expect(wouldApply('headers')[0]).toMatchObject({
        outcome: 'allow',
        detail: { response: { set: { 'x-added-client': 'yes' }, remove: ['x-upstream'] } },
      });
      expect(wouldApply('cors')[0]).toMatchObject({ detail: { action: 'would-allow', origin: ORIGIN } });
      expect(wouldApply('stickySession')[0]).toMatchObject({ detail: { action: 'would-bind' } });
      for (const p of ['headers', 'cors', 'stickySession']) expect(wouldApply(p), p).toHaveLength(2);
    });
  });

  describe('enforce', () => {
    test('ipFilter: 403 problem+json and the upstream receives nothing', async () => {
      const before = upstream.seen.length;
      const res = await fetch(url('/blocked/items'));
      expect(res.status).toBe(403);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await res.json()).toMatchObject({ status: 403, code: 'PC_IP_DENIED', reason: 'deny_list' });
      expect(upstream.seen.length).toBe(before);
    });

    test('validate: 400 listing every violation; a valid request goes through with its body', async () => {
      const before = upstream.seen.length;
      const query = await fetch(url('/strict/items?limit=500'));
      expect(query.status).toBe(400);
      const queryProblem = (await query.json()) as { code: string; errors: Array<Record<string, string>> };
      expect(queryProblem.code).toBe('PC_VALIDATION_FAILED');
      expect(queryProblem.errors).toEqual([expect.objectContaining({ in: 'query', name: 'limit' })]);

      const body = await fetch(url('/strict/items'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ age: -1 }),
      });
      expect(body.status).toBe(400);
      const bodyProblem = (await body.json()) as { errors: Array<Record<string, string>> };
      expect(bodyProblem.errors).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ in: 'body', name: '/name', message: 'is required' }),
          expect.objectContaining({ in: 'body', name: '/age' }),
        ]),
      );
      expect(bodyProblem.errors).toHaveLength(2);
      expect(upstream.seen.length).toBe(before);

      const ok = await fetch(url('/strict/items'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'rex', age: 3 }),
      });
      expect(ok.status).toBe(200);
      expect(upstream.seen.at(-1)?.body).toBe('{"name":"rex","age":3}');
    });

    test('rule specificity: the operation-specific rateLimit applies to that operation only', async () => {
      const post = () => fetch(url('/limited/items'), { method: 'POST' });
      const statuses: number[] = [];
      let last: Response | undefined;
      for (let i = 0; i < 3; i++) {
        last = await post();
        await last.arrayBuffer();
        statuses.push(last.status);
      }
      expect(statuses).toEqual([200, 200, 429]);
      expect(last?.headers.get('ratelimit-policy')).toBe('"default";q=2;w=60');
      expect(last?.headers.get('retry-after')).toMatch(/^\d+$/);
      // The service-wide limit (100) governs every other operation of the service.
      for (let i = 0; i < 5; i++) {
        const res = await fetch(url('/limited/items'));
        await res.arrayBuffer();
        expect(res.status).toBe(200);
        expect(res.headers.get('ratelimit-policy')).toBe('"default";q=100;w=60');
      }
    });

    test('rule specificity: of equally specific rules, the later one wins', async () => {
      const res = await fetch(url('/tied/items'));
      await res.arrayBuffer();
      expect(res.headers.get('ratelimit-policy')).toBe('"default";q=3;w=60');
    });

    test('CORS: a preflight on an authenticated operation is answered 204 without credentials; a 401 carries the CORS headers', async () => {
      const before = upstream.seen.length;
      const preflight = await fetch(url('/browser/items'), {
        method: 'OPTIONS',
        headers: {
          origin: ORIGIN,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'x-api-key, content-type',
        },
      });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      expect(preflight.headers.get('access-control-allow-credentials')).toBe('true');
      expect(preflight.headers.get('access-control-allow-methods')).toContain('POST');
      expect(preflight.headers.get('access-control-allow-headers')).toBe('x-api-key, content-type');

      const denied = await fetch(url('/browser/items'), { headers: { origin: ORIGIN } });
      expect(denied.status).toBe(401);
      expect(denied.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      expect(denied.headers.get('access-control-allow-credentials')).toBe('true');
      expect(denied.headers.get('www-authenticate')).toBeTruthy();
      expect(upstream.seen.length).toBe(before);

      const ok = await fetch(url('/browser/items'), { headers: { origin: ORIGIN, 'x-api-key': API_KEY } });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      // Another origin gets no CORS headers (the browser then hides the answer).
      const foreign = await fetch(url('/browser/items'), {
        headers: { origin: 'https://evil.example', 'x-api-key': API_KEY },
      });
      expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    });
  });

  describe('reload', () => {
    test('an invalid policy file keeps its last good rules; the result names file, line and field', async () => {
      expect((await fetch(url('/reloading/items'))).status).toBe(403);
      const version = gw.gateway.runtime.snapshot?.version;
      await gw.writePolicyRaw(
        'reload.yaml',
        [
          '- match: { service: reloading }',
          '  ipFilter:',
          '    deny: [127.0.0.1]',
          '    denny: [10.0.0.0/8]',
          '',
        ].join('\n'),
      );
      const result = await gw.gateway.runtime.reload();
      expect(result.ok).toBe(false);
      expect(result.issues).toEqual([
        expect.objectContaining({
          file: expect.stringMatching(/policies\/reload\.yaml$/),
          path: expect.stringMatching(/^\/0\/ipFilter/),
          line: expect.any(Number),
        }),
      ]);
      expect(JSON.stringify(result.issues)).toContain('denny');
      // The last good rules of that file still apply; the other files are untouched.
      expect((await fetch(url('/reloading/items'))).status).toBe(403);
      expect((await fetch(url('/blocked/items'))).status).toBe(403);
      expect(gw.gateway.runtime.snapshot?.version).toBe(version);

      // A fixed file takes effect on the next reload.
      await gw.writePolicy('reload', [
        { match: { service: 'reloading' }, ipFilter: { deny: ['192.0.2.0/24'] } },
      ]);
      expect((await gw.gateway.runtime.reload()).ok).toBe(true);
      expect((await fetch(url('/reloading/items'))).status).toBe(200);
    });
  });
});

describe('policy files under watch', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway({ svc: spec({ upstreams: [upstream.url] }) }, { watch: true });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  /** Resolves with the next reload result (the watcher's, after its debounce). */
  const nextReload = () =>
    new Promise<{ ok: boolean; issues: unknown[] }>((resolve) => gw.gateway.runtime.onReload(resolve));

  test('adding, breaking, fixing and removing a policy file takes effect without a restart', async () => {
    const status = async () => (await fetch(`${gw.url}/svc/items`)).status;
    expect(await status()).toBe(200);

    let reloaded = nextReload();
    await gw.writePolicy('guard', [{ match: { service: 'svc' }, ipFilter: { deny: ['127.0.0.1'] } }]);
    expect((await reloaded).ok).toBe(true);
    expect(await status()).toBe(403);

    reloaded = nextReload();
    await gw.writePolicyRaw('guard.yaml', '- match: { service: svc\n  ipFilter: [\n');
    const broken = await reloaded;
    expect(broken.ok).toBe(false);
    expect(JSON.stringify(broken.issues)).toContain('guard.yaml');
    expect(await status()).toBe(403);

    reloaded = nextReload();
    await gw.writePolicy('guard', [{ match: { service: 'svc' }, ipFilter: { allow: ['127.0.0.1'] } }]);
    expect((await reloaded).ok).toBe(true);
    expect(await status()).toBe(200);

    reloaded = nextReload();
    await gw.writePolicy('guard', [{ match: { service: 'svc' }, ipFilter: { allow: ['192.0.2.0/24'] } }]);
    await reloaded;
    expect(await status()).toBe(403);

    reloaded = nextReload();
    await gw.removePolicy('guard');
    expect((await reloaded).ok).toBe(true);
    expect(await status()).toBe(200);
  });
});

describe('policy load errors', () => {
  test('a policy naming a missing apiKey keysFile fails the load with file:line and the field', async () => {
    const err = await startGateway(
      { svc: spec({ upstreams: ['http://127.0.0.1:9'] }) },
      {},
      {
        policies: {
          bad: [
            { match: { service: 'svc' }, ipFilter: { deny: ['192.0.2.1'] } },
            {
              match: { service: 'svc', operations: ['listItems'] },
              auth: { apiKey: { keysFile: 'nope.yaml' } },
            },
          ],
        },
      },
    ).then(
      async (gw) => {
        await gw.close();
        throw new Error('the gateway started with a missing keysFile');
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    const issue = (err as ConfigError).issues[0];
    expect(issue).toMatchObject({
      file: expect.stringMatching(/policies\/bad\.yaml$/),
      path: '/1/auth/apiKey/keysFile',
      message: expect.stringMatching(/nope\.yaml/),
    });
    // YAML of the rules above: the second rule's keysFile is on line 10.
    expect((err as ConfigError).message).toMatch(
      /policies\/bad\.yaml:\d+: \/1\/auth\/apiKey\/keysFile: cannot read .*nope\.yaml/,
    );
    expect(issue?.line).toBeGreaterThan(5);
  });
});
