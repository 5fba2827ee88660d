/**
 * A pass-through service forwards paths its spec does not declare. Those requests are not a way
 * around the service's protections: the rules that select the whole service (by `service` and
 * `methods`) apply to them too. Each case asserts the gateway's answer and what a real upstream
 * (which logs every request) received.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const KEY = 'k-pass-0123456789abcdef';

describe('policies on pass-through requests', () => {
  let up: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    up = await startUpstream({ name: 'legacy' });
    gw = await startGateway(
      {
        legacy: spec({
          basePath: '/legacy',
          upstreams: [up.url],
          operations: { 'GET /status': 'status', 'GET /items/{id}': 'getItem' },
          extra: { passThrough: true },
        }),
      },
      {},
      {
        files: { 'policies/secrets/keys.yaml': `robot: ${KEY}\n` },
        policies: {
          legacy: [
            {
              match: { service: 'legacy' },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
              waf: { mode: 'block' },
            },
            { match: { service: 'legacy', methods: ['DELETE'] }, ipFilter: { deny: ['127.0.0.0/8'] } },
            // Selects only undeclared paths (no PATCH is declared): its identity header still counts.
            {
              match: { service: 'legacy', methods: ['PATCH'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' }, forwardSubject: 'X-Patcher' },
            },
            // Names a declared operation: it never selects undeclared paths.
            {
              match: { service: 'legacy', operations: ['status'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' }, forwardSubject: 'X-Caller' },
            },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up?.close();
  });

  async function call(path: string, init: RequestInit = {}) {
    const before = up.seen.length;
    const res = await fetch(`${gw.url}${path}`, init);
    const text = await res.text();
    const code = res.headers.get('content-type')?.includes('problem+json')
      ? (JSON.parse(text) as { code: string }).code
      : undefined;
    return { status: res.status, code, reached: up.seen.slice(before) };
  }

  it('an undeclared path without credentials gets 401 and reaches nothing', async () => {
    const r = await call('/legacy/admin/users');
    expect(r).toMatchObject({ status: 401, code: 'PC_UNAUTHORIZED' });
    expect(r.reached).toEqual([]);
  });

  it('with credentials it is forwarded, path canonical', async () => {
    const r = await call('/legacy/admin/%75sers?x=1', { headers: { 'x-api-key': KEY } });
    expect(r.status).toBe(200);
    expect(r.reached.map((s) => s.url)).toEqual(['/admin/users?x=1']);
  });

  it('the WAF judges undeclared paths too', async () => {
    const r = await call(`/legacy/report?q=${encodeURIComponent("1' OR '1'='1")}`, {
      headers: { 'x-api-key': KEY },
    });
    expect(r).toMatchObject({ status: 403, code: 'PC_WAF_BLOCKED' });
    expect(r.reached).toEqual([]);
  });

  it('a method-scoped rule applies to undeclared paths of that method', async () => {
    const r = await call('/legacy/anything/7', { method: 'DELETE', headers: { 'x-api-key': KEY } });
    expect(r).toMatchObject({ status: 403, code: 'PC_IP_DENIED' });
    expect(r.reached).toEqual([]);
  });

  it('declared operations keep their own rules', async () => {
    const r = await call('/legacy/status', { headers: { 'x-api-key': KEY } });
    expect(r.status).toBe(200);
    expect(r.reached[0]?.headers['x-caller']).toBe('robot');
  });

  it('an identity header some route of the service sets is stripped from pass-through requests', async () => {
    const r = await call('/legacy/other', {
      headers: { 'x-api-key': KEY, 'x-caller': 'admin', x_caller: 'admin', X_CALLER: 'root' },
    });
    expect(r.status).toBe(200);
    expect(r.reached[0]?.headers['x-caller']).toBeUndefined();
    // PHP, CGI and WSGI read X_Caller as X-Caller: the underscore spelling is stripped too.
    expect(r.reached[0]?.headers.x_caller).toBeUndefined();
  });

  it('an identity header only a pass-through rule sets is stripped too, on every route', async () => {
    const declared = await call('/legacy/status', { headers: { 'x-api-key': KEY, 'x-patcher': 'admin' } });
    expect(declared.status).toBe(200);
    expect(declared.reached[0]?.headers['x-patcher']).toBeUndefined();
    const patched = await call('/legacy/doc/1', {
      method: 'PATCH',
      headers: { 'x-api-key': KEY, 'x-patcher': 'admin' },
    });
    expect(patched.status).toBe(200);
    expect(patched.reached[0]?.headers['x-patcher']).toBe('robot');
  });

  it('a method the listener does not route is 404 on an undeclared path, never forwarded', async () => {
    const r = await call('/legacy/x', { method: 'PROPFIND', headers: { 'x-api-key': KEY } });
    expect(r.status).toBe(404);
    expect(r.reached).toEqual([]);
  });
});
