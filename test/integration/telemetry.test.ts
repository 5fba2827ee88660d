import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../helpers/otlp.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const SERVER = 2;
const CLIENT = 3;
const API_KEY = 'telemetry-test-key-0123456789';
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;

/** Spans of `traceId`, once the gateway exported at least `count` of them (bounded by the test timeout). */
async function spansOf(gw: TestGateway, receiver: OtlpReceiver, traceId: string, count: number) {
  let found: ReceivedSpan[] = [];
  await expect
    .poll(
      async () => {
        await gw.gateway.tracing?.forceFlush();
        found = receiver.spans.filter((s) => s.traceId === traceId);
        return found.length;
      },
      { timeout: 10_000, interval: 50 },
    )
    .toBeGreaterThanOrEqual(count);
  return found;
}

/** The trace id of the upstream's last request, from the traceparent it received. */
function upstreamTraceparent(upstream: TestUpstream): { traceId: string; parentId: string } {
  const header = upstream.seen.at(-1)?.headers.traceparent;
  const m = TRACEPARENT.exec(String(header));
  if (!m) throw new Error(`upstream got no valid traceparent: ${String(header)}`);
  return { traceId: m[1] as string, parentId: m[2] as string };
}

describe('tracing across the proxy hop (OTLP/HTTP to a local receiver)', () => {
  let receiver: OtlpReceiver;
  let upstream: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    gw = await startGateway(
      { svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }) },
      { telemetry: { otlp: receiver.url, serviceName: 'gw-under-test', sampleRatio: 1 } },
      {
        files: { 'policies/secrets/keys.yaml': `ci-robot: ${API_KEY}\n` },
        policies: {
          rules: [
            {
              match: { service: 'svc', operations: ['createItem'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
            { match: { service: 'svc', operations: ['getItem'] }, rateLimit: { limit: 1, window: '1m' } },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await receiver?.close();
  });

  test('one request: a SERVER span and its child CLIENT span in one trace; the upstream gets that trace', async () => {
    const res = await fetch(`${gw.url}/svc/items`);
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id');
    expect(requestId).toBeTruthy();
    const sent = upstreamTraceparent(upstream);
    const spans = await spansOf(gw, receiver, sent.traceId, 2);
    const server = spans.find((s) => s.kind === SERVER);
    const client = spans.find((s) => s.kind === CLIENT);
    expect(server).toMatchObject({
      name: 'GET /svc/items',
      parentSpanId: '',
      attributes: {
        'http.request.method': 'GET',
        'http.route': '/svc/items',
        'http.response.status_code': 200,
        'url.path': '/svc/items',
        'portcullis.service': 'svc',
        'portcullis.operation_id': 'listItems',
        'portcullis.request_id': requestId,
      },
      resource: { 'service.name': 'gw-under-test' },
    });
    expect(client).toMatchObject({
      name: 'GET /items',
      parentSpanId: server?.spanId,
      attributes: {
        'http.request.method': 'GET',
        'server.address': '127.0.0.1',
        'server.port': upstream.port,
        'http.response.status_code': 200,
        'url.full': `${upstream.url}/items`,
        'portcullis.upstream': upstream.url,
      },
    });
    // The upstream is the CLIENT span's to say (one per attempt), not repeated on the SERVER span.
    expect(server?.attributes['portcullis.upstream']).toBeUndefined();
    // The upstream's parent is the CLIENT span: the hop is one unbroken trace.
    expect(sent.parentId).toBe(client?.spanId);
    expect(upstream.seen.at(-1)?.headers['x-request-id']).toBe(requestId);
  });

  test("a client's traceparent is continued, not replaced (and its baggage passed on)", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentId = '00f067aa0ba902b7';
    const res = await fetch(`${gw.url}/svc/items`, {
      headers: { traceparent: `00-${traceId}-${parentId}-01`, baggage: 'tenant=acme' },
    });
    expect(res.status).toBe(200);
    const sent = upstreamTraceparent(upstream);
    expect(sent.traceId).toBe(traceId);
    expect(upstream.seen.at(-1)?.headers.baggage).toBe('tenant=acme');
    const spans = await spansOf(gw, receiver, traceId, 2);
    const server = spans.find((s) => s.kind === SERVER);
    expect(server?.parentSpanId).toBe(parentId);
    expect(spans.find((s) => s.kind === CLIENT)?.parentSpanId).toBe(server?.spanId);
  });

  test('a 401 is traced with the auth decision; nothing reaches the upstream', async () => {
    const traceId = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa0401';
    const before = upstream.seen.length;
    const res = await fetch(`${gw.url}/svc/items`, {
      method: 'POST',
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'x-api-key': 'wrong' },
    });
    expect(res.status).toBe(401);
    expect(upstream.seen.length).toBe(before);
    const [server] = await spansOf(gw, receiver, traceId, 1);
    expect(server).toMatchObject({
      kind: SERVER,
      name: 'POST /svc/items',
      attributes: {
        'http.response.status_code': 401,
        'portcullis.operation_id': 'createItem',
        'portcullis.problem.code': 'PC_UNAUTHORIZED',
      },
    });
    const auth = server?.events.find((e) => e.name === 'policy.auth');
    expect(auth?.attributes).toMatchObject({ 'policy.outcome': 'deny' });
    expect(String(auth?.attributes['policy.reason'])).toMatch(/invalid|unknown|key/i);
  });

  test('an accepted API key is recorded with its subject', async () => {
    const traceId = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa0200';
    const res = await fetch(`${gw.url}/svc/items`, {
      method: 'POST',
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'x-api-key': API_KEY },
    });
    expect(res.status).toBe(200);
    const spans = await spansOf(gw, receiver, traceId, 2);
    const auth = spans.find((s) => s.kind === SERVER)?.events.find((e) => e.name === 'policy.auth');
    expect(auth?.attributes).toMatchObject({ 'policy.outcome': 'allow', 'policy.subject': 'ci-robot' });
  });

  test('a 429 is traced with the rate-limit decision (allow with remaining 0, then deny)', async () => {
    const first = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa0001';
    const second = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa0429';
    const ok = await fetch(`${gw.url}/svc/items/1`, {
      headers: { traceparent: `00-${first}-00f067aa0ba902b7-01` },
    });
    expect(ok.status).toBe(200);
    const limited = await fetch(`${gw.url}/svc/items/1`, {
      headers: { traceparent: `00-${second}-00f067aa0ba902b7-01` },
    });
    expect(limited.status).toBe(429);
    const allowed = (await spansOf(gw, receiver, first, 2)).find((s) => s.kind === SERVER);
    expect(allowed?.name).toBe('GET /svc/items/{id}');
    expect(allowed?.events.find((e) => e.name === 'policy.rateLimit')?.attributes).toMatchObject({
      'policy.outcome': 'allow',
      'policy.default': 0,
    });
    const [denied] = await spansOf(gw, receiver, second, 1);
    expect(denied?.attributes['http.response.status_code']).toBe(429);
    expect(denied?.events.find((e) => e.name === 'policy.rateLimit')?.attributes).toMatchObject({
      'policy.outcome': 'deny',
      'policy.reason': 'limit',
    });
  });

  test('a 404 is traced too (no route: the span is named by the method alone)', async () => {
    const traceId = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa0404';
    const res = await fetch(`${gw.url}/nowhere`, {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(res.status).toBe(404);
    const [server] = await spansOf(gw, receiver, traceId, 1);
    expect(server).toMatchObject({
      kind: SERVER,
      name: 'GET',
      attributes: { 'http.response.status_code': 404 },
    });
    expect(server?.attributes['http.route']).toBeUndefined();
  });

  test('a caller’s tracestate goes upstream and onto the spans; baggage alone starts a new trace and passes on', async () => {
    const traceId = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbb0001';
    const res = await fetch(`${gw.url}/svc/items`, {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: 'acme=t61rcWkgMzE' },
    });
    expect(res.status).toBe(200);
    expect(upstream.seen.at(-1)?.headers.tracestate).toBe('acme=t61rcWkgMzE');
    const spans = await spansOf(gw, receiver, traceId, 2);
    expect(spans.map((s) => s.traceState).sort()).toEqual(['acme=t61rcWkgMzE', 'acme=t61rcWkgMzE']);

    const alone = await fetch(`${gw.url}/svc/items`, { headers: { baggage: 'tenant=globex' } });
    expect(alone.status).toBe(200);
    expect(upstream.seen.at(-1)?.headers.baggage).toBe('tenant=globex');
    const sent = upstreamTraceparent(upstream);
    expect(sent.traceId).not.toBe(traceId);
    expect((await spansOf(gw, receiver, sent.traceId, 2)).map((s) => s.kind).sort()).toEqual([
      SERVER,
      CLIENT,
    ]);
  });

  test('the receiver only ever got OTLP/protobuf trace exports, all of which decoded', () => {
    expect(receiver.rejected).toBe(0);
    expect(receiver.errors).toEqual([]);
    expect([...receiver.contentTypes]).toEqual(['application/x-protobuf']);
  });
});

describe('configurable propagators and sampling', () => {
  let receiver: OtlpReceiver;
  let upstream: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    upstream = await startUpstream();
    gw = await startGateway(
      { svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }) },
      { telemetry: { otlp: receiver.url, sampleRatio: 0, propagators: ['b3multi', 'tracecontext'] } },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await receiver?.close();
  });

  test('B3 (multi-header) context from a client is continued and sent upstream as B3 and traceparent', async () => {
    const traceId = '463ac35c9f6413ad48485a3953bb6124';
    const res = await fetch(`${gw.url}/svc/items`, {
      headers: { 'x-b3-traceid': traceId, 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '1' },
    });
    expect(res.status).toBe(200);
    const seen = upstream.seen.at(-1)?.headers ?? {};
    expect(seen['x-b3-traceid']).toBe(traceId);
    expect(seen['x-b3-spanid']).not.toBe('a2fb4a1d1a96d312');
    expect(upstreamTraceparent(upstream).traceId).toBe(traceId);
    // Parent-based: the caller sampled it, so it is recorded although sampleRatio is 0.
    expect((await spansOf(gw, receiver, traceId, 2)).map((s) => s.kind).sort()).toEqual([SERVER, CLIENT]);
  });

  test('sampleRatio 0: a request without a sampled parent is not exported, but context still propagates', async () => {
    const res = await fetch(`${gw.url}/svc/items`);
    expect(res.status).toBe(200);
    const sent = upstreamTraceparent(upstream);
    expect(upstream.seen.at(-1)?.headers.traceparent).toMatch(/-00$/);
    await gw.gateway.tracing?.forceFlush();
    expect(receiver.spans.filter((s) => s.traceId === sent.traceId)).toEqual([]);
  });
});

describe('telemetry off', () => {
  test('no OpenTelemetry: no tracing handle, and a client traceparent passes to the upstream untouched', async () => {
    const upstream = await startUpstream();
    const gw = await startGateway({
      svc: spec({ title: 'svc', basePath: '/svc', upstreams: [upstream.url] }),
    });
    try {
      expect(gw.gateway.tracing).toBeUndefined();
      const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
      const res = await fetch(`${gw.url}/svc/items`, { headers: { traceparent } });
      expect(res.status).toBe(200);
      expect(upstream.seen.at(-1)?.headers.traceparent).toBe(traceparent);
    } finally {
      await gw.close();
      await upstream.close();
    }
  });
});
