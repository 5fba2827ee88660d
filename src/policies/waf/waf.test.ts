import { gzipSync } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, describe, expect, test } from 'vitest';
import { ConfigError, ProblemError } from '../../errors.ts';
import { buildChain, createContext, readBody, readBodyThen, runChain } from '../../pipeline/chain.ts';
import type { Decision, PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import { sendProblem } from '../../problem.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type WafConfig, wafPolicy } from './waf.ts';

const route = { service: 'svc', operationId: 'op', method: 'POST', specPath: '/x' } as Route;
const service = { name: 'svc' } as Service;

interface Logged {
  obj: Record<string, unknown>;
  msg: string;
}

/** A real Fastify app whose catch-all runs one waf chain and echoes what reached "upstream". */
async function appFor(config: WafConfig, logs: Logged[] = []): Promise<FastifyInstance> {
  const logger = {
    info() {},
    warn(obj: Record<string, unknown>, msg: string) {
      logs.push({ obj, msg });
    },
  };
  const deps = {
    route,
    service,
    logger,
    config: { limits: { bodyBytes: 1024 * 1024 } },
    readBody,
    readBodyThen,
  } as unknown as Omit<PolicyDeps, 'baseDir'>;
  const chain = await buildChain(
    [{ kind: wafPolicy, config, rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' } }],
    deps,
  );
  const app = Fastify();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  app.all('/*', async (req, reply) => {
    const ctx: RequestContext = createContext(req, reply, route, service);
    try {
      await runChain(chain, ctx);
    } catch (err) {
      if (err instanceof ProblemError) return sendProblem(req, reply, err);
      throw err;
    }
    const body = ctx.body ?? (await readBody(ctx, 1024 * 1024));
    return { passed: true, bodyBytes: body.length, decisions: ctx.decisions as Decision[] };
  });
  await app.ready();
  return app;
}

describe('waf policy', () => {
  const apps: FastifyInstance[] = [];
  const make = async (c: WafConfig, logs?: Logged[]) => {
    const app = await appFor(c, logs);
    apps.push(app);
    return app;
  };
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
  });

  test('blocks an attack with 403 problem+json naming rules and score, without echoing the payload', async () => {
    const logs: Logged[] = [];
    const app = await make({ mode: 'block' }, logs);
    const res = await app.inject({ method: 'GET', url: "/items?q=x'%20OR%20'1'%3D'1" });
    expect(res.statusCode).toBe(403);
    expect(res.headers['content-type']).toContain('application/problem+json');
    const problem = res.json();
    expect(problem).toMatchObject({
      code: 'PC_WAF_BLOCKED',
      type: 'https://portcullis.dev/problems/waf-blocked',
    });
    expect(problem.rules).toContain('sqli-syntax');
    expect(problem.score).toBeGreaterThanOrEqual(5);
    expect(res.body).not.toContain("'1'='1");
    expect(res.body).not.toContain('OR');
    expect(logs[0]?.obj).toMatchObject({ policy: 'waf', mode: 'enforce', targets: ['query:q'] });
    expect(JSON.stringify(logs)).not.toContain("'1'='1");
  });

  test('a benign JSON request passes and its body still reaches the upstream whole', async () => {
    const app = await make({});
    const payload = JSON.stringify({
      title: "Rock 'n' roll",
      body: 'Call me at 555-0100; thanks & regards',
      tags: ['a', 'b'],
    });
    const res = await app.inject({
      method: 'POST',
      url: '/items',
      payload,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ passed: true, bodyBytes: Buffer.byteLength(payload), decisions: [] });
  });

  test('inspects a JSON body whose Content-Type says octet-stream (deeply nested field)', async () => {
    const app = await make({});
    const res = await app.inject({
      method: 'POST',
      url: '/items',
      payload: Buffer.from(JSON.stringify({ meta: { deep: { cmd: 'a; cat /etc/passwd' } } })),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(res.statusCode).toBe(403);
    expect(res.json().rules).toEqual(expect.arrayContaining(['rce-command-chain']));
  });

  test('a gzip-coded UTF-16 JSON body is decoded (gzip, then UTF-16) and blocked; a utf-7 form is refused', async () => {
    const app = await make({});
    const utf16 = Buffer.from(JSON.stringify({ q: '<script>alert(1)</script>' }), 'utf16le');
    const res = await app.inject({
      method: 'POST',
      url: '/items',
      payload: gzipSync(utf16),
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    });
    expect(res.statusCode).toBe(403);
    expect(res.json().rules).toEqual(expect.arrayContaining(['xss-tag']));
    const utf7 = await app.inject({
      method: 'POST',
      url: '/items',
      payload: 'q=+ADw-script+AD4-alert(1)+ADw-/script+AD4-',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-7' },
    });
    expect(utf7.statusCode).toBe(403);
    expect(utf7.json().rules).toEqual(expect.arrayContaining(['protocol-body-charset']));
  });

  test('dry-run lets the request through and records would-deny with rules and score', async () => {
    const logs: Logged[] = [];
    const app = await make({ mode: 'dry-run' }, logs);
    const res = await app.inject({ method: 'GET', url: '/items?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E' });
    expect(res.statusCode).toBe(200);
    const decisions = res.json().decisions as Decision[];
    expect(decisions).toHaveLength(1);
    expect(decisions[0]).toMatchObject({ policy: 'waf', outcome: 'would-deny' });
    expect((decisions[0]!.detail as { rules: string[] }).rules).toContain('xss-tag');
    expect(logs[0]?.obj).toMatchObject({ policy: 'waf', mode: 'dry-run' });
  });

  test('a threshold above one critical rule lets a single weak finding through', async () => {
    const app = await make({ threshold: 10 });
    const res = await app.inject({ method: 'GET', url: '/items?q=%3Cscript%3Ex%3C%2Fscript%3E' });
    expect(res.statusCode).toBe(200);
  });

  test('a body over maxBodyBytes is blocked by default', async () => {
    const app = await make({ maxBodyBytes: 64 });
    const res = await app.inject({
      method: 'POST',
      url: '/items',
      payload: 'x'.repeat(200),
      headers: { 'content-type': 'text/plain' },
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: 'PC_WAF_BODY_LIMIT', limit: 'bodyBytes', max: 64 });
  });

  test('overLimit inspect-prefix inspects only the first maxBodyBytes and forwards the whole body', async () => {
    const app = await make({ maxBodyBytes: 64, overLimit: 'inspect-prefix' });
    const late = `${'x'.repeat(100)} <script>alert(1)</script>`;
    const ok = await app.inject({
      method: 'POST',
      url: '/items',
      payload: late,
      headers: { 'content-type': 'text/plain' },
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.json().bodyBytes).toBe(Buffer.byteLength(late));
    const early = `<script>alert(1)</script>${'x'.repeat(100)}`;
    const blocked = await app.inject({
      method: 'POST',
      url: '/items',
      payload: early,
      headers: { 'content-type': 'text/plain' },
    });
    expect(blocked.statusCode).toBe(403);
  });

  test('an exclusion lets a known field carry markup while the same markup elsewhere is blocked', async () => {
    const app = await make({ exclusions: [{ target: 'body:article.html', families: ['xss'] }] });
    const send = (payload: unknown) =>
      app.inject({
        method: 'POST',
        url: '/items',
        payload: JSON.stringify(payload),
        headers: { 'content-type': 'application/json' },
      });
    expect((await send({ article: { html: '<style>p{}</style><p>hi</p>' } })).statusCode).toBe(200);
    expect((await send({ article: { title: '<style>p{}</style>' } })).statusCode).toBe(403);
  });

  test('a path-scoped exclusion holds on its paths only; without a target it covers every value there', async () => {
    const app = await make({
      exclusions: [
        { target: 'body:html', families: ['xss'], paths: ['/cms/pages/{id}'] },
        { paths: ['/search/**'], rules: ['sqli-syntax'] },
      ],
    });
    const post = (url: string, payload: unknown) =>
      app.inject({
        method: 'POST',
        url,
        payload: JSON.stringify(payload),
        headers: { 'content-type': 'application/json' },
      });
    const markup = { html: '<style>p{}</style><p>hi</p>' };
    expect((await post('/cms/pages/7', markup)).statusCode).toBe(200);
    // Another path, another field, a deeper path: still inspected.
    expect((await post('/cms/posts/7', markup)).statusCode).toBe(403);
    expect((await post('/cms/pages/7', { title: markup.html })).statusCode).toBe(403);
    expect((await post('/cms/pages/7/draft', markup)).statusCode).toBe(403);
    const sqli = "/?q=x'%20OR%20'1'%3D'1";
    expect((await app.inject({ method: 'GET', url: `/search${sqli}` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: `/search/deep${sqli}` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: `/items${sqli}` })).statusCode).toBe(403);
    // Only the excluded rule: another family on the same path is still blocked.
    expect(
      (await app.inject({ method: 'GET', url: '/search?q=%3Cscript%3Ealert(1)%3C/script%3E' })).statusCode,
    ).toBe(403);
  });

  test('an exclusion with neither target nor paths is a config error naming it', async () => {
    try {
      await wafPolicy.create({ exclusions: [{ target: 'query:q' }, { families: ['xss'] }] }, {
        config: { limits: { bodyBytes: 1 } },
      } as unknown as PolicyDeps);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]).toMatchObject({ path: '/exclusions/1' });
    }
  });

  test('an unknown rule id in an exclusion is a config error naming its path', async () => {
    await expect(
      wafPolicy.create({ exclusions: [{ target: 'query:q', rules: ['sqli-nope'] }] }, {
        config: { limits: { bodyBytes: 1 } },
      } as unknown as PolicyDeps),
    ).rejects.toThrow(ConfigError);
    try {
      await wafPolicy.create({ exclusions: [{ target: 'query:q', rules: ['sqli-nope'] }] }, {
        config: { limits: { bodyBytes: 1 } },
      } as unknown as PolicyDeps);
    } catch (err) {
      expect((err as ConfigError).issues[0]).toMatchObject({ path: '/exclusions/0/rules/0' });
    }
  });
  test('past maxValues: block answers 403 naming the limit; inspect-prefix records a decision', async () => {
    const url = `/items?${Array.from({ length: 20 }, (_, i) => `p${i}=v`).join('&')}`;
    const blocked = await (await make({ maxValues: 10 })).inject({ method: 'GET', url });
    expect(blocked.statusCode).toBe(403);
    expect(blocked.json()).toMatchObject({ code: 'PC_WAF_LIMIT', limit: 'values', max: 10 });
    const logs: Logged[] = [];
    const prefix = await (await make({ maxValues: 10, onLimit: 'inspect-prefix' }, logs)).inject({
      method: 'GET',
      url,
    });
    expect(prefix.statusCode).toBe(200);
    expect(prefix.json().decisions).toEqual([
      { policy: 'waf', outcome: 'allow', reason: 'limit', detail: { limit: 'values', max: 10 } },
    ]);
    expect(logs[0]?.obj).toMatchObject({ policy: 'waf', limit: 'values' });
  });

  test('dry-run past a limit records would-deny and inspects the prefix', async () => {
    const res = await (await make({ mode: 'dry-run', maxValueBytes: 10 })).inject({
      method: 'GET',
      url: `/items?q=${'x'.repeat(50)}`,
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().decisions[0]).toMatchObject({
      outcome: 'would-deny',
      reason: 'limit',
      detail: { limit: 'valueBytes' },
    });
  });

  test('a multipart body with two Content-Disposition headers in a part is 400 with a reason', async () => {
    const res = await (await make({})).inject({
      method: 'POST',
      url: '/items',
      payload:
        '--b\r\nContent-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"\r\n\r\nv\r\n--b--\r\n',
      headers: { 'content-type': 'multipart/form-data; boundary=b' },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'PC_BAD_REQUEST', reason: 'multipart-disposition' });
  });

  test('an excluded rule id that no longer exists (waf-body-over-limit) is a config error, not silently ignored', async () => {
    await expect(
      wafPolicy.create({ exclusions: [{ target: 'body:x', rules: ['waf-body-over-limit'] }] }, {
        config: { limits: { bodyBytes: 1 } },
      } as unknown as PolicyDeps),
    ).rejects.toThrow(ConfigError);
  });
});
