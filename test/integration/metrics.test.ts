import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  parsePrometheus,
  type Sample,
  scrapeUntil as scrapeMetricsUntil,
  total,
} from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** The HS256 secret of the JWT route (at least 32 bytes). */
const JWT_SECRET = 'metrics-test-secret-0123456789abcdef';

describe('Prometheus metrics on the admin port', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const scrape = async () => {
    const res = await fetch(`${gw.addresses.admin}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return parsePrometheus(await res.text());
  };
  const scrapeUntil = (check: (s: Sample[]) => boolean) => scrapeMetricsUntil(scrape, check);

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
      {},
      {
        policies: {
          rules: [
            { match: { service: 'svc', operations: ['getItem'] }, rateLimit: { limit: 2, window: '1m' } },
            {
              match: { service: 'svc', operations: ['createItem'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
            {
              match: { service: 'svc', operations: ['putItem'] },
              auth: { jwt: { secret: JWT_SECRET, audience: 'metrics-test' } },
            },
          ],
        },
        files: { 'policies/secrets/keys.yaml': 'robot: metrics-test-key-0123456789\n' },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('/metrics parses as Prometheus text and includes process metrics and the config version', async () => {
    const samples = await scrape();
    expect(total(samples, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(samples.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    const info = samples.find((s) => s.name === 'portcullis_config_info');
    expect(info?.labels.version).toBe(gw.gateway.runtime.snapshot?.version);
    expect(info?.value).toBe(1);
    expect(total(samples, 'portcullis_upstream_healthy', { service: 'svc', upstream: upstream.url })).toBe(1);
  });

  test('request counters move by exactly the requests sent, labelled by route template, never the raw path', async () => {
    const before = await scrape();
    const labels = { service: 'svc', route: '/svc/items/{id}', method: 'GET' };
    const count = (s: Sample[], cls: string) =>
      total(s, 'portcullis_http_requests_total', { ...labels, status_class: cls });
    const ok2xx = count(before, '2xx');
    const lat = total(before, 'portcullis_http_request_duration_seconds_count', {
      ...labels,
      status_class: '2xx',
    });
    const up = total(before, 'portcullis_upstream_request_duration_seconds_count', {
      upstream: upstream.url,
    });
    const notFound = total(before, 'portcullis_http_requests_total', {
      route: '(unmatched)',
      status_class: '4xx',
    });

    // Two pass the rate limit (2 per minute), the third gets 429; plus three 404s.
    const statuses = [];
    for (const id of ['1', '2', '3']) statuses.push((await fetch(`${gw.url}/svc/items/${id}`)).status);
    for (const p of ['/nope', '/svc/missing', '/other/x'])
      statuses.push((await fetch(`${gw.url}${p}`)).status);
    expect(statuses).toEqual([200, 200, 429, 404, 404, 404]);

    const after = await scrapeUntil(
      (s) => total(s, 'portcullis_http_requests_total', { route: '(unmatched)' }) - notFound === 3,
    );
    expect(count(after, '2xx') - ok2xx).toBe(2);
    expect(count(after, '4xx') - count(before, '4xx')).toBe(1);
    expect(
      total(after, 'portcullis_http_request_duration_seconds_count', { ...labels, status_class: '2xx' }) -
        lat,
    ).toBe(2);
    expect(
      total(after, 'portcullis_upstream_request_duration_seconds_count', { upstream: upstream.url }) - up,
    ).toBe(2);
    expect(
      total(after, 'portcullis_rate_limit_decisions_total', { service: 'svc', outcome: 'deny' }) -
        total(before, 'portcullis_rate_limit_decisions_total', { service: 'svc', outcome: 'deny' }),
    ).toBe(1);
    // Bounded cardinality: no label anywhere holds a raw path.
    for (const s of after)
      for (const v of Object.values(s.labels)) expect(v).not.toMatch(/\/items\/\d|\/nope|\/missing/);
  });

  test('auth failures are counted by reason', async () => {
    const before = await scrape();
    const failures = (s: Sample[]) =>
      total(s, 'portcullis_auth_failures_total', { service: 'svc', outcome: 'deny' });
    const res = await fetch(`${gw.url}/svc/items`, { method: 'POST' });
    expect(res.status).toBe(401);
    const after = await scrapeUntil((s) => failures(s) - failures(before) === 1);
    expect(total(after, 'portcullis_auth_failures_total', { reason: 'missing_credentials' })).toBeGreaterThan(
      0,
    );
  });

  test('JWT checks are counted as verified (signature) or cached (verified-token cache)', async () => {
    const before = await scrape();
    const count = (s: Sample[], result: string) => total(s, 'portcullis_jwt_verifications_total', { result });
    const token = await new SignJWT({ sub: 'metrics' })
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience('metrics-test')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(JWT_SECRET));
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${gw.url}/svc/items/1`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    const after = await scrapeUntil((s) => count(s, 'cached') - count(before, 'cached') === 2);
    expect(count(after, 'verified') - count(before, 'verified')).toBe(1);
    expect(
      after.some((s) => s.name === 'portcullis_jwt_cache_drops_total' && s.labels.reason === 'key_changed'),
    ).toBe(true);
  });

  test('an unreachable upstream counts as an upstream error (and a 502)', async () => {
    const before = await scrape();
    const errors = (s: Sample[]) =>
      total(s, 'portcullis_upstream_errors_total', { service: 'down', upstream: 'http://127.0.0.1:9' });
    const res = await fetch(`${gw.url}/down/items`);
    expect(res.status).toBe(502);
    const after = await scrapeUntil((s) => errors(s) - errors(before) === 1);
    expect(
      total(after, 'portcullis_http_requests_total', { service: 'down', status_class: '5xx' }) -
        total(before, 'portcullis_http_requests_total', { service: 'down', status_class: '5xx' }),
    ).toBe(1);
  });

  test('config reloads are counted by result, and the version follows the served config', async () => {
    const before = await scrape();
    await gw.writeSpec('extra', spec({ title: 'extra', basePath: '/extra', upstreams: [upstream.url] }));
    expect((await gw.gateway.runtime.reload()).ok).toBe(true);
    await gw.writeRaw('broken.yaml', 'openapi: 3.1.0\ninfo: [not, an, object]\n');
    expect((await gw.gateway.runtime.reload()).ok).toBe(false);
    const after = await scrape();
    const reloads = (s: Sample[], result: string) => total(s, 'portcullis_config_reloads_total', { result });
    expect(reloads(after, 'success') - reloads(before, 'success')).toBe(1);
    expect(reloads(after, 'failure') - reloads(before, 'failure')).toBe(1);
    const version = after.find((s) => s.name === 'portcullis_config_info')?.labels.version;
    expect(version).toBe(gw.gateway.runtime.snapshot?.version);
    expect(version).not.toBe(before.find((s) => s.name === 'portcullis_config_info')?.labels.version);
  });
});
