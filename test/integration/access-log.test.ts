import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLogger } from '../../src/logger.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const API_KEY = 'apikey-SECRET-0123456789abcdef';
const BEARER = 'bearer-SECRET-eyJhbGciOiJub25lIn0';
const COOKIE = 'cookie-SECRET-session-42';
const QUERY_KEY = 'query-SECRET-key-77';
const SECRETS = [API_KEY, BEARER, COOKIE, QUERY_KEY];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The gateway's real logger (redaction included) writing JSON lines into `lines`. */
function capture() {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  const entries = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, lines, entries };
}

describe('access log and request ids', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const logs = capture();
  const accessLines = () => logs.entries().filter((e) => e.msg === 'request');
  /** The access-log entry of the request that got `reqId`, once its response closed. */
  const entryFor = async (reqId: string | null) => {
    let entry: Record<string, unknown> | undefined;
    await expect
      .poll(() => (entry = accessLines().find((e) => e.reqId === reqId)), { timeout: 5_000, interval: 10 })
      .toBeDefined();
    return entry as Record<string, unknown>;
  };

  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }),
        down: spec({
          title: 'down',
          basePath: '/down',
          upstreams: ['http://127.0.0.1:9'],
          extra: { retries: 0 },
        }),
      },
      { logLevel: 'info' },
      {
        logger: logs.logger,
        files: { 'policies/secrets/keys.yaml': `robot: ${API_KEY}\n` },
        policies: {
          rules: [
            {
              match: { service: 'svc', operations: ['createItem'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('one JSON line per forwarded request with ids, route, status, bytes, durations and upstream', async () => {
    const res = await fetch(`${gw.url}/svc/items/7?x=1`, { headers: { 'user-agent': 'access-log-test' } });
    expect(res.status).toBe(200);
    const body = await res.text();
    const reqId = res.headers.get('x-request-id');
    expect(reqId).toMatch(UUID);
    expect(upstream.seen.at(-1)?.headers['x-request-id']).toBe(reqId);
    const entry = await entryFor(reqId);
    expect(entry).toMatchObject({
      level: 30,
      clientIp: '127.0.0.1',
      method: 'GET',
      path: '/svc/items/7',
      route: '/svc/items/{id}',
      service: 'svc',
      operationId: 'getItem',
      status: 200,
      bytes: Buffer.byteLength(body),
      upstream: upstream.url,
    });
    expect(entry.traceId).toBeUndefined(); // tracing is off here
    expect(entry.durationMs).toBeGreaterThan(0);
    expect(entry.upstreamMs).toBeGreaterThan(0);
    expect(entry.upstreamMs as number).toBeLessThanOrEqual(entry.durationMs as number);
  });

  test('rejections and upstream failures are logged with their stable code', async () => {
    const unauthorized = await fetch(`${gw.url}/svc/items`, {
      method: 'POST',
      headers: { 'x-api-key': 'nope' },
    });
    expect(unauthorized.status).toBe(401);
    const problem = await unauthorized.text();
    expect(await entryFor(unauthorized.headers.get('x-request-id'))).toMatchObject({
      status: 401,
      bytes: Buffer.byteLength(problem),
      code: 'PC_UNAUTHORIZED',
      operationId: 'createItem',
    });
    const failed = await fetch(`${gw.url}/down/items`);
    expect(failed.status).toBe(502);
    const reqId = failed.headers.get('x-request-id');
    expect(await entryFor(reqId)).toMatchObject({
      status: 502,
      bytes: Buffer.byteLength(await failed.text()),
      code: 'PC_UPSTREAM_ERROR',
      service: 'down',
    });
    const warning = logs.entries().find((e) => e.msg === 'upstream request failed' && e.reqId === reqId);
    expect(warning).toMatchObject({ level: 40, code: 'PC_UPSTREAM_ERROR', cause: 'ECONNREFUSED' });
  });

  test('no log line holds an Authorization header, cookie or API key value', async () => {
    const credentials = {
      authorization: `Bearer ${BEARER}`,
      cookie: `sid=${COOKIE}`,
      'x-api-key': API_KEY,
    };
    const ids: Array<string | null> = [];
    for (const [path, method] of [
      [`/svc/items?api_key=${QUERY_KEY}`, 'GET'],
      [`/svc/items?api_key=${QUERY_KEY}`, 'POST'],
      [`/down/items?api_key=${QUERY_KEY}`, 'GET'],
      [`/nowhere?api_key=${QUERY_KEY}`, 'GET'],
    ] as const) {
      const res = await fetch(`${gw.url}${path}`, { method, headers: credentials });
      ids.push(res.headers.get('x-request-id'));
    }
    for (const id of ids) await entryFor(id);
    // Fastify's and the gateway's other loggers get the same redaction.
    logs.logger.error({ req: { headers: credentials }, headers: credentials }, 'a log with headers');
    logs.logger.error({ err: new Error('x'), ...credentials }, 'a log with credentials');
    const text = logs.lines.join('');
    for (const secret of SECRETS) expect(text).not.toContain(secret);
    expect(text).toContain('[redacted]');
  });

  test("an untrusted peer's X-Request-Id is replaced by a generated one (sent upstream and returned)", async () => {
    const res = await fetch(`${gw.url}/svc/items`, { headers: { 'x-request-id': 'client-chosen-id' } });
    const reqId = res.headers.get('x-request-id');
    expect(reqId).toMatch(UUID);
    expect(upstream.seen.at(-1)?.headers['x-request-id']).toBe(reqId);
  });

  test('a 404 gets a request id and an access-log line too', async () => {
    const res = await fetch(`${gw.url}/not/routed`);
    expect(res.status).toBe(404);
    expect(await entryFor(res.headers.get('x-request-id'))).toMatchObject({
      status: 404,
      code: 'PC_ROUTE_NOT_FOUND',
      path: '/not/routed',
    });
  });
});

describe('X-Request-Id from a trusted peer (trustProxy)', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      { svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }) },
      { trustProxy: ['127.0.0.1'], telemetry: { accessLog: false } },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('is kept, sent upstream and returned', async () => {
    const res = await fetch(`${gw.url}/svc/items`, { headers: { 'x-request-id': 'edge-lb-1234' } });
    expect(res.headers.get('x-request-id')).toBe('edge-lb-1234');
    expect(upstream.seen.at(-1)?.headers['x-request-id']).toBe('edge-lb-1234');
  });

  test('unless it is not a plain token (log injection): then one is generated', async () => {
    const res = await fetch(`${gw.url}/svc/items`, { headers: { 'x-request-id': 'a b"} {"level":60' } });
    expect(res.headers.get('x-request-id')).toMatch(UUID);
  });
});
