/**
 * The k6 scripts cannot run here (no k6): they are type-checked against @types/k6
 * (tsconfig.k6.json, checkJs), and each is checked for what makes it useful: how to run it
 * against the compose stack, thresholds, and paths the example stack routes.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { buildRouteTable } from '../src/registry/index.ts';
import { loadSpecs } from '../src/runtime.ts';

const REPO = join(import.meta.dirname, '..');
const SCRIPTS = ['smoke.js', 'load.js', 'rate-limit.js', 'auth.js'];
const read = (name: string) => readFileSync(join(REPO, 'k6', name), 'utf8');

describe('k6 scripts', () => {
  test('type-check against @types/k6 (tsc -p tsconfig.k6.json)', async () => {
    const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.k6.json'], {
      cwd: REPO,
      timeout: 60_000,
    }).then(
      () => ({ ok: true, output: '' }),
      (err: { stdout?: string }) => ({ ok: false, output: err.stdout ?? String(err) }),
    );
    expect(result.output).toBe('');
    expect(result.ok).toBe(true);
  }, 90_000);

  test.each(SCRIPTS)('%s says how to run it against the compose stack and has thresholds', (name) => {
    const text = read(name);
    const header = text.slice(0, text.indexOf('import '));
    expect(header).toContain(`docker compose --profile k6 run --rm k6 run /scripts/${name}`);
    expect(text).toMatch(/export const options = \{[\s\S]*thresholds: \{/);
    expect(text).toContain("__ENV.BASE_URL || 'http://localhost:8080'");
  });

  test('load.js ramps an arrival rate with p95, p99 and error-rate thresholds', () => {
    const text = read('load.js');
    expect(text).toContain("executor: 'ramping-arrival-rate'");
    expect(text).toMatch(/http_req_duration: \['p\(95\)<\d+', 'p\(99\)<\d+'\]/);
    expect(text).toMatch(/http_req_failed: \['rate<[\d.]+'\]/);
  });

  test('rate-limit.js asserts 429s and the RateLimit headers; auth.js valid and invalid keys', () => {
    const rate = read('rate-limit.js');
    for (const want of ['429', 'Retry-After', 'Ratelimit', 'Ratelimit-Policy']) expect(rate).toContain(want);
    const auth = read('auth.js');
    for (const want of ['valid key', 'missing key', 'wrong key', '401']) expect(auth).toContain(want);
  });

  test('every path the scripts call is routed by the compose example', async () => {
    const { services, issues } = await loadSpecs(join(REPO, 'examples', 'compose', 'openapi'));
    expect(issues).toEqual([]);
    const table = buildRouteTable(services);
    const paths = SCRIPTS.flatMap((name) =>
      [...read(name).matchAll(/\$\{BASE_URL\}(\/[\w/-]+)/g)].map((m) => m[1]),
    );
    expect(paths.length).toBeGreaterThan(4);
    for (const path of paths) {
      const routed = table.find('GET', path as string) !== null;
      // smoke.js also checks that an unknown path is a 404.
      expect(routed, path).toBe(path !== '/echo/not-in-the-spec');
    }
  });
});
