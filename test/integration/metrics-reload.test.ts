/**
 * Metrics across reloads: a reload rebuilds routes, chains and (when a service's upstream settings
 * change) upstream pools, but every series keeps one line per label set for the life of the
 * process and counts every request sent, before and after each reload.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { stringify } from 'yaml';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  parsePrometheus,
  type Sample,
  scrapeUntil as scrapeMetricsUntil,
  total,
  value,
} from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const DOWN = 'http://127.0.0.1:9';
const OTHER_OPS = { 'GET /items': 'listItems', 'GET /items/{id}': 'getItem' };

/** What each reload changes: the `tweak` policy file always, and one spec file each time. */
const RELOADS: Array<{ description: string; spec: [string, Record<string, unknown>] }> = [
  {
    description: 'other gains an operation',
    spec: ['other', { ...OTHER_OPS, 'GET /extra': 'extra' }],
  },
  {
    description: "svc's upstream timeout changes (a new upstream pool)",
    spec: ['svc', { timeoutMs: 9_000 }],
  },
  {
    description: "down's upstream timeout changes (a new upstream pool)",
    spec: ['down', { timeoutMs: 9_000, retries: 0 }],
  },
  { description: 'other loses it again', spec: ['other', OTHER_OPS] },
];

function specOf(name: string, change: Record<string, unknown>, upstream: string): Record<string, unknown> {
  if (name === 'other')
    return spec({
      title: name,
      basePath: `/${name}`,
      upstreams: [upstream],
      operations: change as Record<string, string>,
    });
  if (name === 'down') return spec({ title: name, basePath: '/down', upstreams: [DOWN], extra: change });
  return spec({ title: name, basePath: `/${name}`, upstreams: [upstream], extra: change });
}

/** The tweak policy: a response header on `other` whose value changes with every reload. */
const tweak = (n: number) => [
  { match: { service: 'other' }, headers: { response: { set: { 'x-tweak': String(n) } } } },
];

describe('metrics after reloads', () => {
  let upstream: TestUpstream;
  let gw: TestGateway;
  const scrapeText = async () => (await fetch(`${gw.addresses.admin}/metrics`)).text();
  const scrapeUntil = (check: (s: Sample[]) => boolean) =>
    scrapeMetricsUntil(async () => parsePrometheus(await scrapeText()), check);

  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway(
      {
        svc: specOf('svc', {}, upstream.url),
        down: specOf('down', { retries: 0 }, upstream.url),
        other: specOf('other', OTHER_OPS, upstream.url),
      },
      {},
      {
        policies: {
          limits: [
            { match: { service: 'svc', operations: ['getItem'] }, rateLimit: { limit: 2, window: '1m' } },
            {
              match: { service: 'svc', operations: ['createItem'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
          ],
          tweak: tweak(0),
        },
        files: { 'policies/secrets/keys.yaml': 'robot: metrics-reload-key-0123456789\n' },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
  });

  test('after 4 reloads each series has one line and counts every request sent across them', async () => {
    const rounds = RELOADS.length + 1;
    let limited = { ok: 0, denied: 0 };
    let requests = 0;
    const round = async () => {
      for (let i = 0; i < 3; i++) {
        const status = (await fetch(`${gw.url}/svc/items/${i}`)).status;
        expect([200, 429]).toContain(status);
        if (status === 200) limited = { ...limited, ok: limited.ok + 1 };
        else limited = { ...limited, denied: limited.denied + 1 };
      }
      expect((await fetch(`${gw.url}/svc/items`)).status).toBe(200);
      expect((await fetch(`${gw.url}/svc/items`, { method: 'POST' })).status).toBe(401);
      expect((await fetch(`${gw.url}/down/items`)).status).toBe(502);
      expect((await fetch(`${gw.url}/nope`)).status).toBe(404);
      const other = await fetch(`${gw.url}/other/items`);
      expect(other.status).toBe(200);
      requests += 8;
      return other.headers.get('x-tweak');
    };
    const answered = (s: Sample[]) => total(s, 'portcullis_http_requests_total') === requests;

    expect(await round()).toBe('0');
    const first = await scrapeUntil(answered);
    for (const [n, change] of RELOADS.entries()) {
      await gw.writePolicy('tweak', tweak(n + 1));
      await gw.writeSpec(change.spec[0], specOf(change.spec[0], change.spec[1], upstream.url));
      const result = await gw.gateway.runtime.reload();
      expect(result, change.description).toMatchObject({ ok: true, issues: [] });
      expect(await round(), change.description).toBe(String(n + 1));
    }
    // parsePrometheus throws on a duplicate series.
    const last = await scrapeUntil(answered);

    const requestsOf = (service: string, route: string, method: string, statusClass: string) =>
      value(last, 'portcullis_http_requests_total', { service, route, method, status_class: statusClass });
    expect(requestsOf('svc', '/svc/items', 'GET', '2xx')).toBe(rounds);
    expect(requestsOf('svc', '/svc/items', 'POST', '4xx')).toBe(rounds);
    expect(requestsOf('svc', '/svc/items/{id}', 'GET', '2xx')).toBe(limited.ok);
    expect(requestsOf('svc', '/svc/items/{id}', 'GET', '4xx')).toBe(limited.denied);
    expect(limited.ok + limited.denied).toBe(3 * rounds);
    expect(requestsOf('down', '/down/items', 'GET', '5xx')).toBe(rounds);
    expect(requestsOf('other', '/other/items', 'GET', '2xx')).toBe(rounds);
    expect(requestsOf('(none)', '(unmatched)', 'GET', '4xx')).toBe(rounds);
    expect(
      value(last, 'portcullis_http_request_duration_seconds_count', {
        service: 'svc',
        route: '/svc/items',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(rounds);

    const decisions = (outcome: string) =>
      value(last, 'portcullis_rate_limit_decisions_total', {
        service: 'svc',
        route: '/svc/items/{id}',
        outcome,
      });
    expect(decisions('allow')).toBe(limited.ok);
    expect(decisions('deny')).toBe(limited.denied);
    expect(
      value(last, 'portcullis_auth_failures_total', {
        service: 'svc',
        route: '/svc/items',
        reason: 'missing_credentials',
        outcome: 'deny',
      }),
    ).toBe(rounds);

    // svc's and down's pools were replaced by a reload; their series carry on.
    expect(
      value(last, 'portcullis_upstream_request_duration_seconds_count', {
        service: 'svc',
        upstream: upstream.url,
      }),
    ).toBe(rounds + limited.ok);
    expect(
      value(last, 'portcullis_upstream_request_duration_seconds_count', { service: 'down', upstream: DOWN }),
    ).toBe(rounds);
    expect(total(last, 'portcullis_upstream_errors_total', { service: 'down', upstream: DOWN })).toBe(rounds);
    expect(last.filter((s) => s.name === 'portcullis_upstream_errors_total')).toHaveLength(1);
    expect(value(last, 'portcullis_upstream_healthy', { service: 'svc', upstream: upstream.url })).toBe(1);
    expect(value(last, 'portcullis_config_reloads_total', { result: 'success' })).toBe(RELOADS.length);

    // The same requests again touch the same series: the scrape does not grow with reloads.
    const series = (s: Sample[]) => s.filter((x) => x.name.startsWith('portcullis_')).length;
    expect(series(last)).toBe(series(first));
  });

  test('the parser the metrics tests rely on rejects a duplicate series', () => {
    const text = '# HELP c_total c\n# TYPE c_total counter\nc_total{a="1",b="2"} 1\nc_total{b="2",a="1"} 2\n';
    expect(() => parsePrometheus(text)).toThrow(/duplicate series/);
  });
});

describe('a real gateway process reloaded by SIGHUP keeps exact counters', () => {
  let upstream: TestUpstream;
  let gw: CliGateway;
  const cliSpec = (title: string, extra: Record<string, unknown> = {}) => ({
    openapi: '3.1.0',
    info: { title, version: '1.0.0' },
    'x-portcullis': { basePath: `/${title}`, upstreams: [{ url: upstream.url }], ...extra },
    paths: { '/items': { get: { operationId: 'listItems', responses: { '200': { description: 'ok' } } } } },
  });
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startCliGateway({ specs: { kept: cliSpec('kept'), edited: cliSpec('edited') } });
  });
  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  test('5 requests before and after each of 3 reloads: kept 20, edited 20, one series each', async () => {
    const scrape = async () => parsePrometheus(await (await fetch(`${gw.admin}/metrics`)).text());
    const version = async () =>
      ((await (await fetch(`${gw.admin}/readyz`)).json()) as { version: string }).version;
    let sent = 0;
    const round = async () => {
      for (let i = 0; i < 5; i++)
        for (const service of ['kept', 'edited']) {
          const res = await fetch(`${gw.url}/${service}/items`);
          await res.arrayBuffer();
          expect(res.status).toBe(200);
        }
      sent += 10;
    };
    await round();
    for (let n = 1; n <= 3; n++) {
      const before = await version();
      // Only `edited` changes (a new upstream pool each time); `kept` is untouched.
      await writeFile(
        join(gw.dir, 'openapi', 'edited.yaml'),
        stringify(cliSpec('edited', { timeoutMs: 1000 * n })),
      );
      process.kill(gw.pid, 'SIGHUP');
      await expect.poll(version, { timeout: 10_000 }).not.toBe(before);
      await round();
    }
    const last = await scrapeMetricsUntil(scrape, (s) => total(s, 'portcullis_http_requests_total') === sent);
    for (const service of ['kept', 'edited'])
      expect(
        value(last, 'portcullis_http_requests_total', {
          service,
          route: `/${service}/items`,
          method: 'GET',
          status_class: '2xx',
        }),
      ).toBe(20);
  });
});
