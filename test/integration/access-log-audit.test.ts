import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const API_KEY = 'audit-key-0123456789abcdef';

/**
 * The access log as an audit trail: every denial is found by its request id, with the policy
 * kind, the rule that applied it, the reason and (when auth accepted the caller) the subject.
 */
describe('access log: denials as an audit trail', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const logs = captureLogs('info');
  /** The access-log line of the request answered with `reqId`. */
  const lineOf = async (res: Response) => {
    await res.arrayBuffer();
    const reqId = res.headers.get('x-request-id');
    expect(reqId).toBeTruthy();
    let line: Record<string, unknown> | undefined;
    await expect
      .poll(() => (line = logs.lines.find((e) => e.msg === 'request' && e.reqId === reqId)), {
        timeout: 5_000,
        interval: 10,
      })
      .toBeDefined();
    return line as Record<string, unknown>;
  };

  beforeAll(async () => {
    upstream = await startUpstream();
    const svc = (name: string) => spec({ title: name, basePath: `/${name}`, upstreams: [upstream.url] });
    gw = await startGateway(
      {
        fenced: svc('fenced'),
        keyed: svc('keyed'),
        limited: svc('limited'),
        guarded: svc('guarded'),
        watched: svc('watched'),
      },
      {},
      {
        logger: logs.logger,
        files: { 'policies/secrets/keys.yaml': `robot: ${API_KEY}\n` },
        policies: {
          edge: [{ match: { service: 'fenced' }, ipFilter: { deny: ['127.0.0.1', '::1'] } }],
          access: [
            { match: { service: 'keyed' }, auth: { apiKey: { keysFile: 'secrets/keys.yaml' } } },
            {
              match: { service: 'limited' },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
              rateLimit: { limit: 1, window: '1m', key: 'subject' },
            },
          ],
          waf: [
            { match: { service: 'guarded' }, waf: { mode: 'block', paranoia: 1 } },
            { match: { service: 'watched' }, ipFilter: { mode: 'dry-run', deny: ['127.0.0.1', '::1'] } },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('ipFilter: kind, rule, reason and code', async () => {
    const res = await fetch(`${gw.url}/fenced/items`);
    expect(res.status).toBe(403);
    const line = await lineOf(res);
    expect(line).toMatchObject({ status: 403, code: 'PC_IP_DENIED', service: 'fenced' });
    expect(line.policies).toEqual([
      { policy: 'ipFilter', outcome: 'deny', rule: 'edge.yaml#0', reason: 'deny_list' },
    ]);
  });

  test('auth: a bad key is denied with its reason, no subject; a good one logs the subject', async () => {
    const denied = await fetch(`${gw.url}/keyed/items`, { headers: { 'x-api-key': 'wrong' } });
    expect(denied.status).toBe(401);
    const line = await lineOf(denied);
    expect(line).toMatchObject({ status: 401, code: 'PC_UNAUTHORIZED' });
    expect(line.subject).toBeUndefined();
    expect(line.policies).toEqual([
      { policy: 'auth', outcome: 'deny', rule: 'access.yaml#0', reason: expect.any(String) },
    ]);
    const allowed = await fetch(`${gw.url}/keyed/items`, { headers: { 'x-api-key': API_KEY } });
    expect(allowed.status).toBe(200);
    const ok = await lineOf(allowed);
    expect(ok).toMatchObject({ status: 200, subject: 'robot' });
    expect(ok.policies).toBeUndefined();
  });

  test('rateLimit: the refused request names the limit rule, its reason and the subject', async () => {
    const headers = { 'x-api-key': API_KEY };
    expect((await fetch(`${gw.url}/limited/items`, { headers })).status).toBe(200);
    const refused = await fetch(`${gw.url}/limited/items`, { headers });
    expect(refused.status).toBe(429);
    const line = await lineOf(refused);
    expect(line).toMatchObject({ status: 429, code: 'PC_RATE_LIMITED', subject: 'robot' });
    expect(line.policies).toEqual([
      { policy: 'rateLimit', outcome: 'deny', rule: 'access.yaml#1', reason: 'limit' },
    ]);
  });

  test('waf: the blocked request lists the rule, the reason, the matched rule ids and the score', async () => {
    const res = await fetch(`${gw.url}/guarded/items?q=${encodeURIComponent("1' OR '1'='1' --")}`);
    expect(res.status).toBe(403);
    const line = await lineOf(res);
    expect(line).toMatchObject({ status: 403, service: 'guarded' });
    const [decision] = line.policies as Array<Record<string, unknown>>;
    expect(decision).toMatchObject({ policy: 'waf', outcome: 'deny', rule: 'waf.yaml#0' });
    expect(typeof decision?.reason).toBe('string');
    expect(decision?.rules).toEqual(expect.arrayContaining([expect.any(String)]));
  });

  test('dry-run: the request goes through; its line and the dry-run line carry the request id and the rule', async () => {
    const res = await fetch(`${gw.url}/watched/items`);
    expect(res.status).toBe(200);
    const line = await lineOf(res);
    expect(line.policies).toEqual([
      { policy: 'ipFilter', outcome: 'would-deny', rule: 'waf.yaml#1', reason: 'PC_IP_DENIED' },
    ]);
    const dryRun = logs.lines.find((e) => e.msg === 'dry-run: would deny' && e.reqId === line.reqId);
    expect(dryRun).toMatchObject({ policy: 'ipFilter', rule: 'waf.yaml#1', outcome: 'would-deny' });
  });
});

describe('access log: sampling', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const logs = captureLogs('info');

  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      { svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }) },
      { telemetry: { accessLog: { sample: 0 } } },
      { logger: logs.logger },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('sample 0 logs no success but every error', async () => {
    for (let i = 0; i < 20; i++) await (await fetch(`${gw.url}/svc/items`)).arrayBuffer();
    const missing = await fetch(`${gw.url}/svc/nowhere`);
    expect(missing.status).toBe(404);
    await missing.arrayBuffer();
    const reqId = missing.headers.get('x-request-id');
    await expect
      .poll(() => logs.lines.some((e) => e.msg === 'request' && e.reqId === reqId), {
        timeout: 5_000,
        interval: 10,
      })
      .toBe(true);
    expect(logs.lines.filter((e) => e.msg === 'request').map((e) => e.status)).toEqual([404]);
    expect(upstream.seen.length).toBe(20);
  });
});
