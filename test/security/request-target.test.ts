/**
 * One canonical request target: every spelling of a path that could mean something else to an
 * upstream is refused with 400 PC_BAD_TARGET before routing, over HTTP/1.1 and HTTP/2 alike, and
 * what the upstream receives is always the canonical path of the operation that matched. Each case
 * asserts the gateway's answer and what a real upstream (which logs every request) received.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { type CapturedLogs, captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type H2Options, h2Request } from '../helpers/h2.ts';
import { rawRequest, rawStatus } from '../helpers/raw-http.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

describe('the canonical request target', () => {
  let up: TestUpstream;
  let pass: TestUpstream;
  let gw: TestGateway;
  let logs: CapturedLogs;
  let certDir: string;
  let caPem: string;
  let httpsOrigin: string;

  beforeAll(async () => {
    up = await startUpstream({ name: 'svc' });
    pass = await startUpstream({ name: 'pass' });
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    logs = captureLogs();
    const matrix = spec({ basePath: '/mx', upstreams: [up.url], operations: { 'GET /x': 'mxX' } });
    matrix.paths = {
      '/cars/{id}': {
        get: {
          operationId: 'getCar',
          parameters: [
            { name: 'id', in: 'path', required: true, style: 'matrix', schema: { type: 'string' } },
          ],
          responses: { '200': { description: 'ok' } },
        },
      },
    };
    gw = await startGateway(
      {
        svc: spec({
          basePath: '/svc',
          upstreams: [up.url],
          operations: {
            'GET /items/{id}': 'getItem',
            'GET /public': 'getPublic',
            'POST /items': 'createItem',
          },
        }),
        // One upstream only: three failures would eject it (the ejection the issue saw).
        solo: spec({
          basePath: '/solo',
          upstreams: [up.url],
          operations: { 'GET /public': 'soloPublic' },
          extra: { passiveHealth: { failures: 3, ejectMs: 10000 } },
        }),
        pt: spec({
          basePath: '/pt',
          upstreams: [pass.url],
          operations: { 'GET /status': 'ptStatus' },
          extra: { passThrough: true },
        }),
        mx: matrix,
        validated: {
          ...spec({ basePath: '/val', upstreams: [up.url], operations: {} }),
          paths: {
            '/pets': {
              post: {
                operationId: 'createPet',
                requestBody: {
                  required: true,
                  content: {
                    'application/json': {
                      schema: {
                        type: 'object',
                        required: ['name'],
                        properties: { name: { type: 'string', maxLength: 20 } },
                      },
                    },
                  },
                },
                responses: { '200': { description: 'ok' } },
              },
            },
          },
        },
      },
      {
        listen: {
          http: { port: 0, host: '127.0.0.1' },
          https: { port: 0, host: '127.0.0.1', ...pair },
        },
      },
      {
        logger: logs.logger,
        policies: { val: [{ match: { service: 'validated' }, validate: { request: true } }] },
      },
    );
    httpsOrigin = gw.addresses.https ?? '';
  });
  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await pass?.close();
    if (certDir) await removeCertDir(certDir);
  });

  const raw = (target: string, extra = '') =>
    rawRequest(gw.url, `GET ${target} HTTP/1.1\r\nHost: localhost\r\n${extra}Connection: close\r\n\r\n`);

  const h2 = (path: string, opts: H2Options = {}) => h2Request(httpsOrigin, caPem, path, opts);

  const REJECTED: Array<[string, string, string]> = [
    ['an encoded slash climbing out of a parameter', '/svc/items/..%2fsecret', 'encoded-slash'],
    ['an encoded slash, upper case', '/svc/items/..%2Fadmin%2Fusers', 'encoded-slash'],
    ['a double-dot segment', '/svc/items/../public', 'dot-segment'],
    ['an encoded double dot', '/svc/items/%2e%2e/public', 'dot-segment'],
    ['a half-encoded double dot', '/svc/items/.%2E/public', 'dot-segment'],
    ['a single dot segment', '/svc/./public', 'dot-segment'],
    ['a trailing double dot', '/svc/items/..', 'dot-segment'],
    ['a Tomcat-style ..;', '/svc/items/..;/public', 'dot-segment'],
    ['a raw backslash', '/svc/items/..\\public', 'backslash'],
    ['an encoded backslash', '/svc/items/..%5cpublic', 'backslash'],
    ['an encoded NUL', '/svc/items/7%00.json', 'control-character'],
    ['encoded CR LF', '/svc/items/7%0d%0aX-Injected:%201', 'control-character'],
    ['a malformed escape', '/svc/items/%zz', 'bad-percent-encoding'],
    ['a truncated escape', '/svc/items/%4', 'bad-percent-encoding'],
    ['an overlong UTF-8 dot', '/svc/items/%c0%ae%c0%ae/public', 'bad-percent-encoding'],
    ['a malformed escape in the query', '/svc/items/7?q=%zz', 'bad-percent-encoding'],
    ['a fragment', '/svc/items/7#x', 'fragment'],
    ['a path parameter', '/svc/items/7;jsessionid=abc', 'path-parameter'],
    ['an encoded path parameter', '/svc/items/7%3Bx=1', 'path-parameter'],
    ['absolute-form', 'http://evil.example/svc/items/7', 'not-origin-form'],
    ['absolute-form with a dot segment', 'http://localhost/svc/items/../public', 'not-origin-form'],
    ['a pass-through climbing out', '/pt/a/..%2f..%2fetc/passwd', 'encoded-slash'],
    ['a pass-through dot segment', '/pt/a/%2e%2e/b', 'dot-segment'],
  ];

  it.each(REJECTED)('HTTP/1.1: refuses %s with 400 and forwards nothing', async (_d, target, reason) => {
    const before = up.seen.length + pass.seen.length;
    const res = await raw(target);
    expect(rawStatus(res)).toBe(400);
    expect(res).toMatch(/content-type: application\/problem\+json/i);
    expect(res).toMatch(/x-request-id: \S+/i);
    const body = JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
    expect(body).toMatchObject({ code: 'PC_BAD_TARGET', status: 400, reason });
    expect(body.instance).toBeUndefined(); // the target is the attack: never echoed back
    expect(up.seen.length + pass.seen.length).toBe(before);
  });

  it.each(REJECTED.filter(([, t]) => t.startsWith('/') && !t.includes('\\') && !t.includes('#')))(
    'HTTP/2: refuses %s with 400 and forwards nothing',
    async (_d, target, reason) => {
      const before = up.seen.length + pass.seen.length;
      const res = await h2(target);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body)).toMatchObject({ code: 'PC_BAD_TARGET', reason });
      expect(up.seen.length + pass.seen.length).toBe(before);
    },
  );

  it('a malformed escape gets our problem, a request id and an access-log line (not Fastify’s own error)', async () => {
    const res = await request(`${gw.url}/svc/items/%zz`);
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    const id = res.headers['x-request-id'];
    expect(typeof id).toBe('string');
    expect(await res.body.json()).toMatchObject({ code: 'PC_BAD_TARGET', reason: 'bad-percent-encoding' });
    const line = logs.lines.find((l) => l.reqId === id);
    expect(line).toMatchObject({ status: 400, code: 'PC_BAD_TARGET' });
  });

  it.each([
    ['encoded unreserved characters', '/svc/items/%37', '/items/7'],
    ['an encoded service name', '/sv%63/public', '/public'],
    ['lower-case escapes become upper-case', '/svc/items/caf%c3%a9', '/items/caf%C3%A9'],
    ['an encoded space stays encoded', '/svc/items/a%20b', '/items/a%20b'],
    ['a double-encoded slash is data, still encoded', '/svc/items/..%252fsecret', '/items/..%252fsecret'],
    ['an encoded question mark stays in the path', '/svc/items/a%3Fb', '/items/a%3Fb'],
    ['the query is kept byte for byte', '/svc/items/7?a=%27x%27&b=1+2', '/items/7?a=%27x%27&b=1+2'],
    ['characters outside the grammar in the query are encoded', '/svc/items/7?q="x"', '/items/7?q=%22x%22'],
  ])('forwards the canonical path: %s', async (_d, target, upstreamUrl) => {
    const res = await raw(target);
    expect(rawStatus(res)).toBe(200);
    expect(up.seen.at(-1)?.url).toBe(upstreamUrl);
  });

  it('an encoded spelling of a route is routed and forwarded canonically, and never ejects the only upstream', async () => {
    // Before: the path was cut from the raw URL (`/sv%63/public` minus `/svc`), undici refused it,
    // and three such requests ejected the upstream: every client then got 503.
    for (let i = 0; i < 6; i++) {
      const res = await raw('/sol%6f/public');
      expect(rawStatus(res)).toBe(200);
      expect(up.seen.at(-1)?.url).toBe('/public');
    }
    const after = await request(`${gw.url}/solo/public`);
    expect(after.statusCode).toBe(200);
    await after.body.dump();
  });

  it('refused targets never count against the upstream', async () => {
    for (let i = 0; i < 6; i++) expect(rawStatus(await raw('/solo/%zz'))).toBe(400);
    const res = await request(`${gw.url}/solo/public`);
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  });

  it('a route that declares a matrix parameter takes ;', async () => {
    const res = await raw('/mx/cars/;id=5');
    expect(rawStatus(res)).toBe(200);
    expect(up.seen.at(-1)?.url).toBe('/cars/;id=5');
  });

  it('pass-through services get the canonical path too', async () => {
    const res = await raw('/pt/files/r%c3%a9sum%c3%a9.pdf?x=1');
    expect(rawStatus(res)).toBe(200);
    expect(pass.seen.at(-1)?.url).toBe('/files/r%C3%A9sum%C3%A9.pdf?x=1');
  });

  it('HTTP/2 forwards the canonical path', async () => {
    const res = await h2('/sv%63/items/%37');
    expect(res.status).toBe(200);
    expect(up.seen.at(-1)?.url).toBe('/items/7');
  });

  describe('bodies over HTTP/2 without content-length', () => {
    it('validate reads and refuses an invalid body (nothing forwarded)', async () => {
      const before = up.seen.length;
      const res = await h2('/val/pets', {
        method: 'POST',
        body: JSON.stringify({ name: 'x'.repeat(50) }),
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).toBe(400);
      const problem = JSON.parse(res.body) as { code: string; errors: Array<{ in: string; name: string }> };
      expect(problem.code).toBe('PC_VALIDATION_FAILED');
      // The body was read and checked (the name is too long), not taken for absent.
      expect(problem.errors).toEqual([expect.objectContaining({ in: 'body', name: '/name' })]);
      expect(up.seen.length).toBe(before);
    });

    it('validate refuses a missing body sent as an empty stream', async () => {
      const res = await h2('/val/pets', {
        method: 'POST',
        body: '',
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).toBe(400);
    });

    it('a valid body reaches the upstream intact', async () => {
      const payload = JSON.stringify({ name: 'Rex' });
      const res = await h2('/val/pets', {
        method: 'POST',
        body: payload,
        headers: { 'content-type': 'application/json' },
      });
      expect(res.status).toBe(200);
      expect(up.seen.at(-1)).toMatchObject({ method: 'POST', url: '/pets', body: payload });
    });

    it('a policy-free route streams the body to the upstream', async () => {
      const res = await h2('/svc/items', { method: 'POST', body: 'hello world' });
      expect(res.status).toBe(200);
      expect(up.seen.at(-1)).toMatchObject({ method: 'POST', url: '/items', body: 'hello world' });
    });
  });

  describe('headers the gateway owns', () => {
    it('X-Real-IP and X-Forwarded-* from an untrusted client are replaced or dropped', async () => {
      const res = await request(`${gw.url}/svc/items/7`, {
        headers: {
          'x-real-ip': '10.0.0.1',
          'x-forwarded-for': '10.0.0.2',
          'x-forwarded-host': 'admin.internal',
          'x-forwarded-port': '443',
          'x-forwarded-prefix': '/admin',
          forwarded: 'for=10.0.0.3',
          // Underscore spellings: CGI/PHP/WSGI read them as the dashed names.
          x_real_ip: '10.0.0.4',
          'x-forwarded_host': 'admin.internal',
        },
      });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      const seen = up.seen.at(-1)?.headers ?? {};
      expect(seen['x-real-ip']).toBe('127.0.0.1');
      expect(seen['x-forwarded-for']).toBe('127.0.0.1');
      expect(seen['x-forwarded-host']).not.toBe('admin.internal');
      expect(seen['x-forwarded-port']).toBeUndefined();
      expect(seen['x-forwarded-prefix']).toBeUndefined();
      expect(seen.forwarded).not.toContain('10.0.0.3');
      expect(seen.x_real_ip).toBeUndefined();
      expect(seen['x-forwarded_host']).toBeUndefined();
    });
  });
});
