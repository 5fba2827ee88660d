/**
 * A pass-through service forwards paths its spec does not declare. Those requests are not a way
 * around the service's protections: the rules that select the whole service (by `service` and
 * `methods`) apply to them too. Each case asserts the gateway's answer and what a real upstream
 * (which logs every request) received.
 */
import { request } from 'node:http';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Request } from '../helpers/h2.ts';
import { parsePrometheus } from '../helpers/prometheus.ts';
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

  it.each(['PROPFIND', 'M-SEARCH', 'PURGE', 'MKCOL'])(
    'an extension method (%s) on an undeclared path is forwarded as sent, its body included',
    async (method) => {
      const r = await raw(method, '/legacy/dav/x?depth=1', { 'x-api-key': KEY }, '<propfind/>');
      expect(r.status).toBe(200);
      expect(r.reached).toHaveLength(1);
      expect(r.reached[0]).toMatchObject({ method, url: '/dav/x?depth=1' });
      expect(r.reached[0]?.body).toBe('<propfind/>');
    },
  );

  it("an extension method runs the service's policies: auth and the WAF refuse before the upstream", async () => {
    const anonymous = await raw('PROPFIND', '/legacy/dav/x', {});
    expect(anonymous).toMatchObject({ status: 401, code: 'PC_UNAUTHORIZED' });
    expect(anonymous.reached).toEqual([]);
    const attack = await raw('M-SEARCH', `/legacy/dav?q=${encodeURIComponent("1' OR '1'='1")}`, {
      'x-api-key': KEY,
    });
    expect(attack).toMatchObject({ status: 403, code: 'PC_WAF_BLOCKED' });
    expect(attack.reached).toEqual([]);
    // A rule scoped to other methods (DELETE: ipFilter) does not select it.
    expect((await raw('REPORT', '/legacy/dav/x', { 'x-api-key': KEY })).status).toBe(200);
  });

  it('an extension method on a path the spec declares is 405 with its methods, never forwarded', async () => {
    const r = await raw('PROPFIND', '/legacy/status', { 'x-api-key': KEY });
    expect(r).toMatchObject({ status: 405, code: 'PC_METHOD_NOT_ALLOWED' });
    expect(r.allow).toBe('GET, HEAD');
    expect(r.reached).toEqual([]);
  });

  it.each(['DELETE', 'PUT', 'POST', 'OPTIONS'])(
    'an undeclared standard method (%s) on a path the spec declares is 405 too, never forwarded',
    async (method) => {
      const r = await raw(method, '/legacy/status', { 'x-api-key': KEY });
      expect(r).toMatchObject({ status: 405, code: 'PC_METHOD_NOT_ALLOWED' });
      expect(r.allow).toBe('GET, HEAD');
      expect(r.reached).toEqual([]);
    },
  );

  it("a method token Node's HTTP/1.1 parser does not know gets 400 problem+json, never forwarded", async () => {
    const r = await raw('FROBNICATE', '/legacy/dav/x', { 'x-api-key': KEY });
    expect(r).toMatchObject({ status: 400, code: 'PC_BAD_REQUEST' });
    expect(r.reached).toEqual([]);
  });

  it('header fields over the parser limit get 431 problem+json', async () => {
    const r = await raw('GET', '/legacy/dav/x', { 'x-api-key': KEY, 'x-big': 'b'.repeat(17_000) });
    expect(r).toMatchObject({ status: 431, code: 'PC_HEADERS_TOO_LARGE' });
    expect(r.reached).toEqual([]);
  });

  /** A request with any method on a fresh connection; the body (if any) sent with a length. */
  function raw(method: string, path: string, headers: Record<string, string>, body?: string) {
    const before = up.seen.length;
    return new Promise<{
      status: number;
      code: string | undefined;
      allow: string | undefined;
      reached: typeof up.seen;
    }>((ok, fail) => {
      const req = request(`${gw.url}${path}`, { method, headers, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          const code = String(res.headers['content-type']).includes('problem+json')
            ? (JSON.parse(text) as { code: string }).code
            : undefined;
          ok({ status: res.statusCode ?? 0, code, allow: res.headers.allow, reached: up.seen.slice(before) });
        });
      });
      req.on('error', fail);
      req.end(body);
    });
  }
});

describe('extension methods over HTTP/2: any method token', () => {
  let up: TestUpstream;
  /** Node's HTTP/1.1 parser refuses unknown tokens: this upstream reads the request line itself. */
  let raw: RawUpstream;
  let gw: TestGateway;
  let certDir: string;
  let caPem: string;
  let origin: string;

  beforeAll(async () => {
    up = await startUpstream({ name: 'legacy' });
    raw = await rawUpstream();
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    gw = await startGateway(
      {
        legacy: spec({
          basePath: '/legacy',
          upstreams: [raw.url],
          operations: { 'GET /status': 'status' },
          extra: { passThrough: true },
        }),
        strict: spec({
          basePath: '/strict',
          upstreams: [up.url],
          operations: { 'GET /status': 'strictStatus' },
        }),
      },
      {
        listen: { https: { port: 0, host: '127.0.0.1', ...pair } },
        admin: { port: 0, host: '127.0.0.1' },
      },
      { policies: { legacy: [{ match: { service: 'legacy' }, waf: { mode: 'block' } }] } },
    );
    origin = `https://localhost:${new URL(gw.addresses.https ?? '').port}`;
  }, 30_000);
  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await raw?.close();
    if (certDir) await removeCertDir(certDir);
  });

  it('a custom token is forwarded by a pass-through service, the WAF still judging it', async () => {
    const ok = await h2Request(origin, caPem, '/legacy/things/1', { method: 'X-FROBNICATE', body: 'abc' });
    expect(ok.status).toBe(200);
    expect(raw.seen).toEqual([{ line: 'X-FROBNICATE /things/1 HTTP/1.1', body: 'abc' }]);
    const attack = await h2Request(
      origin,
      caPem,
      `/legacy/x?q=${encodeURIComponent('<script>alert(1)</script>')}`,
      {
        method: 'X-FROBNICATE',
      },
    );
    expect(attack.status).toBe(403);
    expect(raw.seen).toHaveLength(1);
  });

  it('custom tokens share one method label in the metrics (_OTHER): a client cannot grow the series', async () => {
    for (const method of ['X-ONE', 'X-TWO', 'X-THREE']) {
      await h2Request(origin, caPem, '/legacy/things/2', { method });
      await h2Request(origin, caPem, '/nowhere', { method });
    }
    const text = await (await fetch(`${gw.addresses.admin}/metrics`)).text();
    const methods = new Set(
      parsePrometheus(text)
        .filter((m) => m.name === 'portcullis_http_requests_total')
        .map((m) => m.labels.method),
    );
    expect(methods.has('_OTHER')).toBe(true);
    expect([...methods].filter((m) => m?.startsWith('X-'))).toEqual([]);
  });

  it('a service without pass-through answers 404 for an undeclared path and 405 for a declared one', async () => {
    const before = up.seen.length;
    expect((await h2Request(origin, caPem, '/strict/other', { method: 'PROPFIND' })).status).toBe(404);
    const declared = await h2Request(origin, caPem, '/strict/status', { method: 'X-FROBNICATE' });
    expect(declared.status).toBe(405);
    expect(declared.headers.allow).toBe('GET, HEAD');
    expect(up.seen.length).toBe(before);
  });
});

interface RawUpstream {
  url: string;
  /** Request line and body of each request. */
  seen: Array<{ line: string; body: string }>;
  close(): Promise<void>;
}

/** An HTTP/1.1 upstream on a plain socket: any method token, chunked or sized bodies, 200 `ok` each. */
async function rawUpstream(): Promise<RawUpstream> {
  const seen: RawUpstream['seen'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1').split('\r\n');
        const fields = new Map(
          head
            .slice(1)
            .map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
        );
        let rest = buf.subarray(end + 4);
        let body = '';
        if (fields.get('transfer-encoding') === 'chunked') {
          const text = rest.toString('latin1');
          const last = text.indexOf('0\r\n\r\n');
          if (last < 0) return;
          let i = 0;
          while (i < last) {
            const eol = text.indexOf('\r\n', i);
            const size = Number.parseInt(text.slice(i, eol), 16);
            body += text.slice(eol + 2, eol + 2 + size);
            i = eol + 2 + size + 2;
          }
          rest = rest.subarray(last + 5);
        } else {
          const length = Number(fields.get('content-length') ?? 0);
          if (rest.length < length) return;
          body = rest.subarray(0, length).toString('latin1');
          rest = rest.subarray(length);
        }
        buf = rest;
        seen.push({ line: head[0] ?? '', body });
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok');
      }
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
