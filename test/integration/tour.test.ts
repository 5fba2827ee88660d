/**
 * Issue 13, part 7: the README tour is true. Its spec (step 2) and gateway.yaml (step 4) live in
 * examples/tour/ and the README shows them verbatim; here they are loaded and run against real
 * processes: the step 2 spec, saved into a running gateway's openapi/ folder, is served without a
 * restart and forwards GET /inventory/items/7 to an upstream at /items/7 (other paths: 404, never
 * forwarded); the step 4 gateway.yaml, with certificates in certs/, redirects HTTP to HTTPS and
 * serves the SNI certificate for api.example.com. Steps 1, 3, 5 and 6 are run by
 * default.test.ts, cli.test.ts, explain.test.ts (examples/cases.yaml) and start-like-reload.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCa, writeCerts } from '../helpers/certs.ts';
import { startCliGateway } from '../helpers/cli.ts';
import { killChildren, REPO_ROOT, type RunningCli, startCli } from '../helpers/spawn.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const TOUR = join(REPO_ROOT, 'examples', 'tour');
const readme = () => readFile(join(REPO_ROOT, 'README.md'), 'utf8');
/** A file of examples/tour without its first line (the yaml-language-server modeline). */
const withoutModeline = async (file: string) =>
  (await readFile(join(TOUR, file), 'utf8')).split('\n').slice(1).join('\n');

/** Retry `check` until it passes (every 50 ms, 10 s at most). */
const eventually = (check: () => Promise<void> | void) =>
  vi.waitFor(check, { timeout: 10_000, interval: 50 });

afterAll(() => killChildren());

describe('README step 2: put a real service behind it', () => {
  let a: TestUpstream;
  let b: TestUpstream;
  beforeAll(async () => {
    a = await startUpstream({ name: 'a' });
    b = await startUpstream({ name: 'b' });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('the README shows examples/tour/openapi/inventory.yaml as it is', async () => {
    const spec = await withoutModeline('openapi/inventory.yaml');
    expect(await readme()).toContain(`\`\`\`yaml\n# openapi/inventory.yaml\n${spec}\`\`\``);
  });

  it('saved into a running gateway, GET /inventory/items/7 reaches an upstream at /items/7', async () => {
    const gw = await startCliGateway({ config: { watch: true } });
    try {
      // The tour's file, with its upstream addresses pointed at this test's upstreams.
      const text = (await readFile(join(TOUR, 'openapi', 'inventory.yaml'), 'utf8'))
        .replace('http://127.0.0.1:4001', a.url)
        .replace('http://127.0.0.1:4002', b.url);
      await writeFile(join(gw.dir, 'openapi', 'inventory.yaml'), text);
      await eventually(async () => {
        const res = await fetch(`${gw.url}/inventory/items/7`);
        await res.arrayBuffer();
        expect(res.status).toBe(200);
      });
      const seen = [...a.seen, ...b.seen].filter((r) => r.url !== '/health');
      expect(seen.at(-1)?.url).toBe('/items/7');
      const before = seen.length;
      const other = await fetch(`${gw.url}/inventory/anything-else`);
      expect(other.status).toBe(404);
      expect([...a.seen, ...b.seen].filter((r) => r.url !== '/health')).toHaveLength(before);
      // Loaded with no error: nothing rejected.
      const ready = (await (await fetch(`${gw.admin}/readyz`)).json()) as { rejected: unknown[] };
      expect(ready.rejected).toEqual([]);
    } finally {
      await gw.stop();
    }
  });
});

describe('README step 4: terminate TLS', () => {
  let gw: RunningCli;
  let dir: string;
  let api: { cert: string; key: string };
  let fallback: { cert: string; key: string };
  beforeAll(async () => {
    const { mkdtemp } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    dir = await mkdtemp(join(tmpdir(), 'portcullis-tour-'));
    await mkdir(join(dir, 'certs'));
    await mkdir(join(dir, 'openapi'));
    const ca = await createCa();
    fallback = await ca.issue({ names: ['localhost'], fresh: true });
    api = await ca.issue({ names: ['api.example.com'], fresh: true });
    // The file names the tour's gateway.yaml uses.
    await writeCerts(join(dir, 'certs'), 'default', fallback);
    await writeFile(join(dir, 'certs', 'default.pem'), fallback.cert);
    await writeCerts(join(dir, 'certs'), 'api', api);
    await writeFile(join(dir, 'certs', 'api.pem'), api.cert);
    await writeFile(join(dir, 'gateway.yaml'), await readFile(join(TOUR, 'tls-gateway.yaml')));
    gw = await startCli({
      cwd: dir,
      // Only the ports are the test's (0: any free one), on loopback.
      env: {
        PORTCULLIS_HTTP_PORT: '0',
        PORTCULLIS_HTTP_HOST: '127.0.0.1',
        PORTCULLIS_HTTPS_PORT: '0',
        PORTCULLIS_ADMIN_PORT: '0',
      },
    });
  });
  afterAll(async () => {
    await gw?.stop();
    const { rm } = await import('node:fs/promises');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the README shows examples/tour/tls-gateway.yaml as it is', async () => {
    const file = await withoutModeline('tls-gateway.yaml');
    expect(await readme()).toContain(`\`\`\`yaml\n${file}\`\`\``);
  });

  it('plain HTTP answers 308 to HTTPS; api.example.com gets its SNI certificate', async () => {
    const http = gw.addresses.http as string;
    const https = new URL(gw.addresses.https as string);
    const res = await fetch(`${http}/petstore/pets?limit=2`, { redirect: 'manual' });
    expect(res.status).toBe(308);
    expect(res.headers.get('location')).toBe(`https://127.0.0.1:${https.port}/petstore/pets?limit=2`);
    const served = (servername: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(
          { host: '127.0.0.1', port: Number(https.port), servername, rejectUnauthorized: false },
          () => {
            const cert = socket.getPeerX509Certificate();
            socket.end();
            resolve(cert?.fingerprint256 ?? '');
          },
        );
        socket.once('error', reject);
      });
    expect(await served('api.example.com')).toBe(new X509Certificate(api.cert).fingerprint256);
    expect(await served('other.example.org')).toBe(new X509Certificate(fallback.cert).fingerprint256);
  });
});
