/**
 * The k6 scripts cannot run here (no k6): they are type-checked against @types/k6
 * (tsconfig.k6.json, checkJs), and each is checked for what makes it useful: how to run it
 * against `npm start` (the default target) and the compose stack (TARGET=compose), thresholds, and
 * that each target's paths (k6/targets.json) are routed there with the policies the scripts check.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';

const REPO = join(import.meta.dirname, '..');
const SCRIPTS = ['smoke.js', 'load.js', 'rate-limit.js', 'auth.js'];
const read = (name: string) => readFileSync(join(REPO, 'k6', name), 'utf8');

/** One target of k6/targets.json. */
interface Target {
  smoke: { path: string; missing: string; answeredBy: 'mock' | 'upstream' };
  load: { path: string };
  rateLimit: { path: string; limit: number };
  auth: { method: string; path: string; okStatus: number; answeredBy: 'mock' | 'upstream' };
}

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

  test.each(SCRIPTS)(
    '%s reads its paths from k6/targets.json, npm start by default, compose by TARGET',
    (name) => {
      const text = read(name);
      expect(text).toContain("const TARGET = __ENV.TARGET || 'local';");
      expect(text).toContain("JSON.parse(open('./targets.json'))[TARGET]");
      // No path of either target written into a script.
      expect(text).not.toMatch(/\$\{BASE_URL\}\//);
      // The first way to run it is against `npm start`, with no TARGET.
      expect(text.slice(0, text.indexOf('import '))).toMatch(
        new RegExp(`npm start.*: +k6 run (-e API_KEY=\\S+ )?k6/${name}\n`),
      );
    },
  );

  test('the compose k6 service runs the scripts with TARGET=compose', () => {
    const compose = readFileSync(join(REPO, 'docker-compose.yml'), 'utf8');
    expect(compose).toMatch(/k6:[\s\S]*environment:[\s\S]*TARGET: compose/);
  });

  test.each([
    { target: 'local', specs: 'openapi', policies: 'policies' },
    { target: 'compose', specs: 'examples/compose/openapi', policies: 'examples/compose/policies' },
  ])(
    'every path of the $target target is routed there, with the policies the script checks',
    async ({ target, specs, policies }) => {
      const targets = JSON.parse(read('targets.json')) as Record<string, Target>;
      const t = targets[target] as Target;
      const { Runtime } = await import('../src/runtime.ts');
      const { POLICY_KINDS } = await import('../src/policies/index.ts');
      const { createMemoryStore } = await import('../src/state/memory.ts');
      const { createLogger } = await import('../src/logger.ts');
      const { loadGatewayConfig } = await import('../src/config/load.ts');
      const config = await loadGatewayConfig({ cwd: REPO, env: {} });
      const store = createMemoryStore();
      const runtime = new Runtime({
        config: { ...config, openapi: join(REPO, specs), policies: join(REPO, policies) },
        logger: createLogger('silent'),
        store,
        kinds: POLICY_KINDS,
        healthChecks: false,
      });
      try {
        const snapshot = await runtime.load('strict');
        const route = (method: string, path: string) => {
          const match = snapshot.table.find(method, path);
          return match ? snapshot.entries.get(match.route) : undefined;
        };
        expect(route('GET', t.smoke.path), t.smoke.path).toBeDefined();
        expect(route('GET', t.smoke.missing), t.smoke.missing).toBeUndefined();
        expect(route('GET', t.load.path)?.chain.applied.some((p) => p.kind === 'rateLimit')).toBe(false);
        expect(route('GET', t.smoke.path)?.chain.applied.some((p) => p.kind === 'rateLimit')).toBe(false);
        expect(route('GET', t.rateLimit.path)?.chain.applied.some((p) => p.kind === 'rateLimit')).toBe(true);
        const auth = route(t.auth.method, t.auth.path);
        expect(auth?.chain.applied.some((p) => p.kind === 'auth' && p.mode === 'enforce')).toBe(true);
        expect(Boolean(auth?.mock)).toBe(t.auth.answeredBy === 'mock');
        expect(Boolean(route('GET', t.smoke.path)?.mock)).toBe(t.smoke.answeredBy === 'mock');
      } finally {
        await runtime.close();
        await store.close();
      }
    },
  );
});
