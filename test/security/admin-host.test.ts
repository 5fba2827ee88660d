/**
 * DNS rebinding against the admin port: a web page whose name resolves to 127.0.0.1 makes the
 * browser call the admin port with that name as Host. The admin app answers only the loopback
 * names, its own address and `admin.hosts`; anything else gets 421 problem+json. Real listeners
 * on 127.0.0.1, port 0; requests sent with node:http so the Host header is exactly the one given.
 */
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createAdmin } from '../../src/admin/admin.ts';
import type { AdminConfig } from '../../src/admin/allowed-hosts.ts';
import { readEnvOverrides } from '../../src/config/env.ts';
import { resolveGatewayConfig } from '../../src/config/load.ts';
import { ConfigError, PROBLEM_BASE } from '../../src/errors.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { rawRequest, rawStatus } from '../helpers/raw-http.ts';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** GET `path` on 127.0.0.1:`port` with exactly this Host header (none when undefined). */
function get(port: number, path: string, host: string | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    if (host !== undefined) req.setHeader('host', host);
    req.on('error', reject);
    req.end();
  });
}

function expectMisdirected(answer: Answer): void {
  expect(answer.status).toBe(421);
  expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(answer.headers['cache-control']).toBe('no-store');
  const problem = JSON.parse(answer.body) as Record<string, unknown>;
  expect(problem).toMatchObject({
    type: `${PROBLEM_BASE}misdirected-request`,
    status: 421,
    code: 'PC_MISDIRECTED',
  });
}

const portOf = (app: FastifyInstance) => (app.server.address() as AddressInfo).port;

let gw: TestGateway;
/** The gateway's own admin listener (gateway.yaml defaults: 127.0.0.1, no admin.hosts). */
let adminPort: number;
/** Admin apps built with other `admin` settings, listening on 127.0.0.1:0. */
const extraApps: FastifyInstance[] = [];

async function adminWith(config: AdminConfig, localAddresses = () => ['127.0.0.1', '10.9.8.7']) {
  const app = createAdmin({
    runtime: gw.gateway.runtime,
    store: gw.gateway.store,
    isClosing: () => false,
    config,
    localAddresses,
  });
  extraApps.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return portOf(app);
}

beforeAll(async () => {
  gw = await startGateway({ svc: spec({ upstreams: ['http://127.0.0.1:9'] }) });
  adminPort = Number(new URL(gw.addresses.admin ?? '').port);
});
afterAll(async () => {
  for (const app of extraApps) await app.close();
  await gw?.close();
});

describe('the admin port with the default settings', () => {
  test.each([
    { description: 'a rebinding name', host: 'evil.example' },
    { description: 'a rebinding name with the admin port', host: 'evil.example:PORT' },
    { description: 'a name that merely starts with localhost', host: 'localhost.evil.example:PORT' },
    { description: 'a name that ends in a loopback address', host: '127.0.0.1.nip.io:PORT' },
    { description: 'a name that ends with localhost but is not it', host: 'notlocalhost:PORT' },
    { description: 'userinfo smuggled into Host', host: 'evil.example@localhost:PORT' },
    { description: 'a second port', host: 'localhost:PORT:80' },
    { description: 'an address it does not listen on', host: '10.20.30.40:PORT' },
    { description: 'an empty Host', host: '' },
  ])('answers 421 problem+json to $description', async ({ host }) => {
    expectMisdirected(await get(adminPort, '/healthz', host.replace('PORT', String(adminPort))));
  });

  test.each(['/routes', '/metrics', '/readyz', '/no-such-path'])(
    'refuses a rebinding name on %s too, before routing',
    async (path) => {
      expectMisdirected(await get(adminPort, path, `evil.example:${adminPort}`));
    },
  );

  test.each([
    { description: '127.0.0.1 with the port', host: '127.0.0.1:PORT' },
    { description: 'localhost with the port', host: 'localhost:PORT' },
    { description: 'localhost in capitals, with a trailing dot', host: 'LOCALHOST.:PORT' },
    { description: '[::1] with the port', host: '[::1]:PORT' },
    { description: '127.0.0.1 without a port', host: '127.0.0.1' },
  ])('answers 200 to $description', async ({ host }) => {
    const answer = await get(adminPort, '/healthz', host.replace('PORT', String(adminPort)));
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ status: 'ok' });
  });

  test('answers a request without Host (HTTP/1.0 probes; no browser sends one)', async () => {
    const answer = await rawRequest(`http://127.0.0.1:${adminPort}`, 'GET /healthz HTTP/1.0\r\n\r\n');
    expect(rawStatus(answer)).toBe(200);
  });

  test('the public listener is not affected: it serves any Host', async () => {
    const answer = await get(Number(new URL(gw.url).port), '/svc/nothing-here', 'evil.example');
    expect(answer.status).toBe(404);
  });
});

describe('admin.hosts', () => {
  test('a listed name is answered, in any case and with any port; others still get 421', async () => {
    const port = await adminWith({ port: 0, host: '127.0.0.1', hosts: ['admin.internal', 'Gateway'] });
    for (const host of [`admin.internal:${port}`, 'ADMIN.INTERNAL', `gateway:${port}`]) {
      expect((await get(port, '/healthz', host)).status, host).toBe(200);
    }
    expect((await get(port, '/healthz', `localhost:${port}`)).status).toBe(200);
    expectMisdirected(await get(port, '/healthz', `evil.example:${port}`));
    expectMisdirected(await get(port, '/healthz', `sub.admin.internal:${port}`));
  });

  test('a listed IPv6 address is answered in any spelling', async () => {
    const port = await adminWith({ port: 0, host: '127.0.0.1', hosts: ['fd00::1'] });
    expect((await get(port, '/healthz', `[fd00:0:0::0001]:${port}`)).status).toBe(200);
    expectMisdirected(await get(port, '/healthz', `[fd00::2]:${port}`));
  });

  test('"*" answers every Host (the explicit opt-out)', async () => {
    const port = await adminWith({ port: 0, host: '127.0.0.1', hosts: ['*'] });
    for (const host of ['evil.example', `anything.at.all:${port}`, '10.20.30.40']) {
      expect((await get(port, '/healthz', host)).status, host).toBe(200);
    }
  });

  test('bound to 0.0.0.0, it answers its own interface addresses (probes by pod IP) and no others', async () => {
    const port = await adminWith({ port: 0, host: '0.0.0.0' }, () => ['127.0.0.1', '10.9.8.7']);
    expect((await get(port, '/healthz', `10.9.8.7:${port}`)).status).toBe(200);
    expectMisdirected(await get(port, '/healthz', `10.9.8.8:${port}`));
    expectMisdirected(await get(port, '/healthz', `0.0.0.0:${port}`));
  });

  test('a specific bind address is answered', async () => {
    const port = await adminWith({ port: 0, host: '10.1.2.3' });
    expect((await get(port, '/healthz', `10.1.2.3:${port}`)).status).toBe(200);
    expectMisdirected(await get(port, '/healthz', `10.9.8.7:${port}`));
  });
});

describe('admin.hosts in gateway.yaml and the environment', () => {
  const resolve = (admin: unknown, env: NodeJS.ProcessEnv = {}) =>
    resolveGatewayConfig({ admin }, { baseDir: '/tmp', env });

  test.each([
    { description: 'names, addresses and "*"', hosts: ['gateway', 'admin.example.com', '10.0.0.5', '*'] },
    { description: 'IPv6, bare or in brackets', hosts: ['::1', '[fd00::1]'] },
  ])('accepts $description', ({ hosts }) => {
    expect(() => resolve({ hosts })).not.toThrow();
  });

  test.each([
    { description: 'a name with a port', entry: 'admin.example.com:9090' },
    { description: 'a URL', entry: 'http://admin.example.com' },
    { description: 'a path', entry: 'admin.example.com/metrics' },
    { description: 'a wildcard pattern', entry: '*.example.com' },
    { description: 'an empty entry', entry: '' },
  ])('rejects $description, naming the entry', ({ entry }) => {
    let issues: ConfigError['issues'] = [];
    try {
      resolve({ hosts: ['localhost', entry] });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      issues = (err as ConfigError).issues;
    }
    expect(issues.map((i) => i.path)).toEqual(['/admin/hosts/1']);
  });

  test('PORTCULLIS_ADMIN_HOSTS is a comma-separated list for admin.hosts', () => {
    const { overrides, issues } = readEnvOverrides({
      PORTCULLIS_ADMIN_HOSTS: ' gateway , prometheus.local,,',
    });
    expect(issues).toEqual([]);
    expect(overrides).toEqual([
      {
        name: 'PORTCULLIS_ADMIN_HOSTS',
        pointer: '/admin/hosts',
        kind: 'list',
        value: ['gateway', 'prometheus.local'],
      },
    ]);
  });

  test('admin.hosts from gateway.yaml reaches the running admin listener', async () => {
    const listed = await startGateway(
      { svc: spec({ upstreams: ['http://127.0.0.1:9'] }) },
      { admin: { port: 0, host: '127.0.0.1', hosts: ['admin.internal'] } },
    );
    try {
      const port = Number(new URL(listed.addresses.admin ?? '').port);
      expect((await get(port, '/healthz', `admin.internal:${port}`)).status).toBe(200);
      expect((await get(port, '/healthz', `localhost:${port}`)).status).toBe(200);
      expectMisdirected(await get(port, '/healthz', `evil.example:${port}`));
    } finally {
      await listed.close();
    }
  });

  test('PORTCULLIS_ADMIN_HOSTS sets admin.hosts, over the file', () => {
    const config = resolve({ hosts: ['from-file'] }, { PORTCULLIS_ADMIN_HOSTS: 'gateway,prometheus.local' });
    expect(config.admin?.hosts).toEqual(['gateway', 'prometheus.local']);
    expect(resolve({}).admin?.hosts).toBeUndefined();
  });

  test('PORTCULLIS_ADMIN_HOSTS is checked like the file', () => {
    let issues: ConfigError['issues'] = [];
    try {
      resolve({}, { PORTCULLIS_ADMIN_HOSTS: 'gateway:9090' });
    } catch (err) {
      issues = (err as ConfigError).issues;
    }
    expect(issues).toMatchObject([{ file: 'environment', path: 'PORTCULLIS_ADMIN_HOSTS' }]);
  });
});
