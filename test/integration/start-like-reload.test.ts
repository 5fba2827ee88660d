/**
 * Issue 13, part 2: `portcullis start` treats a bad file as a reload does, against real gateway
 * processes. A spec that fails is reported with its file:line and left out while the other services
 * are served; a policy file that fails withholds the services its rules name (503, nothing
 * forwarded) until it is fixed (here: fixed, then SIGHUP); a failed policy file whose targets
 * cannot be told makes start refuse; `start --strict` and `validate` refuse on any error. /readyz
 * lists the rejected files and stays 200 while anything is served.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const API_KEY = 'k-start-like-reload-0123456789';

const spec = (title: string, basePath: string, upstream: string) => ({
  openapi: '3.1.0',
  info: { title, version: '1.0.0' },
  'x-portcullis': { basePath, upstreams: [{ url: upstream }] },
  paths: {
    '/items': { get: { operationId: 'listItems', responses: { '200': { description: 'ok' } } } },
  },
});

/** Line 5 has the typo: `operationId` listItem does not exist. */
const TYPO_POLICY = `# orders policies
- match: { service: orders }
  headers: { securityHeaders: true }
- match:
    service: orders
    operations: [listItem]
  auth:
    apiKey: { keysFile: keys/api-keys.yaml }
`;
const GOOD_POLICY = TYPO_POLICY.replace('[listItem]', '[listItems]');

interface Ready {
  ready: boolean;
  services: number;
  withheld: string[];
  rejected: Array<{ file: string; kind: string; serving: string; services?: string[]; errors: string[] }>;
}

async function readyz(gw: CliGateway): Promise<{ status: number; body: Ready }> {
  const res = await fetch(`${gw.admin}/readyz`);
  return { status: res.status, body: (await res.json()) as Ready };
}

/** Poll until `check` passes (SIGHUP reloads asynchronously); bounded by vitest's test timeout. */
/** Retry `check` until it passes (every 50 ms, 10 s at most). */
const eventually = (check: () => Promise<void> | void) =>
  vi.waitFor(check, { timeout: 10_000, interval: 50 });

let pets: TestUpstream;
let orders: TestUpstream;
beforeAll(async () => {
  pets = await startUpstream({ name: 'pets' });
  orders = await startUpstream({ name: 'orders' });
});
afterAll(async () => {
  await pets?.close();
  await orders?.close();
});
const forwarded = (u: TestUpstream) => u.seen.filter((r) => r.url !== '/health').length;

describe('start with an invalid spec', () => {
  let gw: CliGateway;
  beforeAll(async () => {
    gw = await startCliGateway({
      specs: {
        pets: spec('Pets', '/pets', pets.url),
        // `paths` is a list: the OpenAPI schema rejects it (line 6 of broken.yaml).
        broken: { ...spec('Broken', '/broken', orders.url), paths: ['not', 'a', 'map'] },
      },
    });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('serves the other services and leaves the broken one out (404)', async () => {
    expect((await fetch(`${gw.url}/pets/items`)).status).toBe(200);
    expect((await fetch(`${gw.url}/broken/items`)).status).toBe(404);
  });

  it('logs the same file:line error a reload would', () => {
    const errors = gw.logs.filter((l) => l.code === 'PC_CONFIG_INVALID').map((l) => String(l.msg));
    expect(errors).toContainEqual(expect.stringMatching(/broken\.yaml:\d+: \/paths: /));
    expect(gw.logs).toContainEqual(
      expect.objectContaining({
        msg: 'spec rejected; its service is not served',
        file: expect.stringMatching(/broken\.yaml$/),
      }),
    );
  });

  it('/readyz is 200 and lists the rejected file with its errors', async () => {
    const { status, body } = await readyz(gw);
    expect(status).toBe(200);
    expect(body.ready).toBe(true);
    expect(body.services).toBe(1);
    expect(body.rejected).toEqual([
      {
        file: join(gw.dir, 'openapi', 'broken.yaml'),
        kind: 'spec',
        serving: 'not-served',
        errors: [expect.stringMatching(/broken\.yaml:\d+: \/paths: /)],
      },
    ]);
  });
});

describe('start with a policy file that fails', () => {
  let gw: CliGateway;
  beforeAll(async () => {
    gw = await startCliGateway({
      specs: { pets: spec('Pets', '/pets', pets.url), orders: spec('Orders', '/orders', orders.url) },
      policies: { orders: TYPO_POLICY },
    });
    await mkdir(join(gw.dir, 'policies', 'keys'));
    await writeFile(join(gw.dir, 'policies', 'keys', 'api-keys.yaml'), `ci: ${API_KEY}\n`);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('withholds the service it protects: 503 service-withheld, nothing forwarded; others served', async () => {
    const before = forwarded(orders);
    const res = await fetch(`${gw.url}/orders/items`, { headers: { 'x-api-key': API_KEY } });
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.json()).toMatchObject({
      type: 'https://portcullis.dev/problems/service-withheld',
      status: 503,
    });
    expect(forwarded(orders)).toBe(before);
    expect((await fetch(`${gw.url}/pets/items`)).status).toBe(200);
  });

  it('/readyz is 200 (pets is served) and names the file, the line and the withheld service', async () => {
    const { status, body } = await readyz(gw);
    expect(status).toBe(200);
    expect(body.withheld).toEqual(['orders']);
    expect(body.rejected).toEqual([
      {
        file: join(gw.dir, 'policies', 'orders.yaml'),
        kind: 'policy',
        serving: 'withheld',
        services: ['orders'],
        errors: [expect.stringMatching(/orders\.yaml:6: \/1\/match\/operations\/0: no operation "listItem"/)],
      },
    ]);
  });

  it('once fixed, SIGHUP serves the service with its policies (no key: 401, key: 200)', async () => {
    await writeFile(join(gw.dir, 'policies', 'orders.yaml'), GOOD_POLICY);
    process.kill(gw.pid, 'SIGHUP');
    await eventually(async () => {
      expect((await fetch(`${gw.url}/orders/items`)).status).toBe(401);
    });
    const before = forwarded(orders);
    const res = await fetch(`${gw.url}/orders/items`, { headers: { 'x-api-key': API_KEY } });
    expect(res.status).toBe(200);
    expect(forwarded(orders)).toBe(before + 1);
    const { body } = await readyz(gw);
    expect(body.rejected).toEqual([]);
    expect(body.withheld).toEqual([]);
  });
});

describe('start refuses', () => {
  it('when a failed policy file does not say which services it protects', async () => {
    const started = startCliGateway({
      specs: { pets: spec('Pets', '/pets', pets.url) },
      // A rule without match.service may select any service's routes.
      policies: { global: '- match: { methods: [GET] }\n  ipFilter: { deny: [not-a-cidr] }\n' },
    });
    const err = await started.then(
      async (gw) => {
        await gw.stop();
        throw new Error('the gateway started');
      },
      (e: unknown) => e as Error,
    );
    expect(err.message).toMatch(/exited with 1 before listening/);
    expect(err.message).toMatch(/global\.yaml:2: \/0\/ipFilter\/deny\/0: /);
    expect(err.message).toMatch(/nothing started/);
  });

  it('with --strict and workers: 2 too (the primary loads the files)', async () => {
    const started = startCliGateway({
      specs: {
        pets: spec('Pets', '/pets', pets.url),
        broken: { ...spec('Broken', '/broken', orders.url), paths: ['not', 'a', 'map'] },
      },
      config: { workers: 2 },
      args: ['--strict'],
      startTimeoutMs: 30_000,
    });
    const err = await started.then(
      async (gw) => {
        await gw.stop();
        throw new Error('the gateway started');
      },
      (e: unknown) => e as Error,
    );
    expect(err.message).toMatch(/exited with 1 before listening/);
    expect(err.message).toMatch(/broken\.yaml:\d+: \/paths: /);
  });

  it('with --strict on any rejected file, naming it', async () => {
    const started = startCliGateway({
      specs: {
        pets: spec('Pets', '/pets', pets.url),
        broken: { ...spec('Broken', '/broken', orders.url), paths: ['not', 'a', 'map'] },
      },
      args: ['--strict'],
    });
    const err = await started.then(
      async (gw) => {
        await gw.stop();
        throw new Error('the gateway started');
      },
      (e: unknown) => e as Error,
    );
    expect(err.message).toMatch(/exited with 1 before listening/);
    expect(err.message).toMatch(/broken\.yaml:\d+: \/paths: /);
  });
});
