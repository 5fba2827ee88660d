import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { killChildren, REPO_ROOT, type RunningCli, runCli, startCli } from '../helpers/spawn.ts';

/**
 * `npm start` on a fresh clone: the repo's openapi/ examples in mock mode, nothing else installed.
 * Only the ports (0) and bind addresses (127.0.0.1) are overridden.
 */
describe('embedded default (npm start in the repo root)', () => {
  let gw: RunningCli;
  let http: string;
  let admin: string;

  beforeAll(async () => {
    gw = await startCli({ cwd: REPO_ROOT });
    http = gw.addresses.http as string;
    admin = gw.addresses.admin as string;
  });
  afterAll(async () => {
    try {
      // SIGTERM ends it cleanly, like Ctrl-C after `npm start`.
      if (gw) expect(await gw.stop()).toEqual({ code: 0, signal: null });
    } finally {
      killChildren();
    }
  });

  it('is what `npm start` runs', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as {
      scripts: { start: string };
    };
    expect(pkg.scripts.start).toMatch(/^node (--[\w-]+=\S+ )*bin\/portcullis\.js start$/);
  });

  it('answers GET /petstore/pets with the example from the spec', async () => {
    const spec = parse(await readFile(join(REPO_ROOT, 'openapi/petstore.yaml'), 'utf8'));
    const example = spec.paths['/pets'].get.responses['200'].content['application/json'].example;
    expect(example).toHaveLength(3);

    const res = await request(`${http}/petstore/pets`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(await res.body.json()).toEqual(example);
  });

  it('answers a templated path of the second example service', async () => {
    const res = await request(`${http}/store/orders/ord_1001`);
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ id: expect.any(String), status: expect.any(String) });
  });

  it('answers an unknown path with 404 problem+json', async () => {
    const res = await request(`${http}/petstore/owners`);
    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(await res.body.json()).toMatchObject({
      status: 404,
      code: 'PC_ROUTE_NOT_FOUND',
      instance: '/petstore/owners',
    });
  });

  it('reports ready and healthy on the admin port', async () => {
    const ready = await request(`${admin}/readyz`);
    expect(ready.statusCode).toBe(200);
    expect(await ready.body.json()).toMatchObject({ ready: true, services: 2 });
    const health = await request(`${admin}/healthz`);
    expect(health.statusCode).toBe(200);
    await health.body.dump();
  });

  it('lists the petstore operations on /routes', async () => {
    const res = await request(`${admin}/routes`);
    expect(res.statusCode).toBe(200);
    const { routes } = (await res.body.json()) as {
      routes: Array<{ service: string; method: string; path: string; operationId: string; mock: boolean }>;
    };
    const petstore = routes.filter((r) => r.service === 'petstore');
    expect(petstore.map((r) => `${r.method} ${r.path} ${r.operationId}`).sort()).toEqual([
      'DELETE /petstore/pets/{petId} deletePet',
      'GET /petstore/pets listPets',
      'GET /petstore/pets/{petId} getPet',
      'POST /petstore/pets createPet',
    ]);
    expect(petstore.every((r) => r.mock)).toBe(true);
  });

  it('/routes shows each route with its policies, exactly as `portcullis routes --json` prints them', async () => {
    const res = await request(`${admin}/routes`);
    const served = (await res.body.json()) as { routes: Array<{ operationId: string; policies: unknown[] }> };
    const cli = await runCli(['routes', '--json'], { cwd: REPO_ROOT });
    expect(cli.code).toBe(0);
    const printed = JSON.parse(cli.stdout) as { routes: unknown[] };
    expect(served.routes).toEqual(printed.routes);
    const createPet = served.routes.find((r) => r.operationId === 'createPet');
    expect(createPet?.policies).toContainEqual(
      expect.objectContaining({
        kind: 'auth',
        mode: 'enforce',
        file: join(REPO_ROOT, 'policies/petstore.yaml'),
        rule: 1,
      }),
    );
  });

  it('answers the README tour commands of steps 1 and 5 as the README says', async () => {
    // Step 1.
    const one = await request(`${http}/petstore/pets/1`);
    expect(one.statusCode).toBe(200);
    await one.body.dump();
    const patch = await request(`${http}/petstore/pets`, { method: 'PATCH' });
    expect(patch.statusCode).toBe(405);
    expect(patch.headers.allow).toBe('GET, HEAD, POST');
    await patch.body.dump();
    // Step 5.
    const json = { 'content-type': 'application/json' };
    const noKey = await request(`${http}/petstore/pets`, {
      method: 'POST',
      headers: json,
      body: '{"name":"Rex","species":"dog"}',
    });
    expect(noKey.statusCode).toBe(401);
    await noKey.body.dump();
    const invalid = await request(`${http}/petstore/pets`, {
      method: 'POST',
      headers: { ...json, 'x-api-key': 'demo-key-change-me' },
      body: '{"name":"Rex"}',
    });
    expect(invalid.statusCode).toBe(400);
    await invalid.body.dump();
    const list = await request(`${http}/petstore/pets`);
    expect(list.headers.ratelimit).toEqual(expect.any(String));
    expect(list.headers['ratelimit-policy']).toEqual(expect.any(String));
    await list.body.dump();
    const waf = await request(`${http}/petstore/pets?q=1'%20OR%20'1'='1`);
    expect(waf.statusCode).toBe(403);
    expect(await waf.body.json()).toMatchObject({ code: 'PC_WAF_BLOCKED' });
  });

  it('keeps the admin endpoints off the public port', async () => {
    for (const path of ['/routes', '/readyz']) {
      const res = await request(`${http}${path}`);
      expect(res.statusCode, path).toBe(404);
      await res.body.dump();
    }
  });
});
