/**
 * docker-compose.yml, the Dockerfile and the example stack they run, checked without Docker:
 * the compose file's services, ports (published on loopback only; Redis not at all), environment
 * and mounted files; the gateway's config as the container would load it (env overrides included)
 * pointing at the compose services, its admin app answering the health check's Host; the example
 * specs and policies loading; the Dockerfile running the README's commands as a non-root user and
 * exposing only the public port; and the example upstream script actually serving.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import { createAdmin } from '../src/admin/admin.ts';
import { ENV_VARS } from '../src/config/env.ts';
import { loadGatewayConfig } from '../src/config/load.ts';
import type { GatewayConfig } from '../src/config/schema.ts';
import { createLogger } from '../src/logger.ts';
import { POLICY_KINDS } from '../src/policies/index.ts';
import { Runtime, type Snapshot } from '../src/runtime.ts';
import { createMemoryStore } from '../src/state/memory.ts';

const REPO = join(import.meta.dirname, '..');
const read = (file: string) => readFileSync(join(REPO, file), 'utf8');

interface ComposeService {
  image?: string;
  user?: string;
  build?: { context: string; dockerfile?: string };
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  cap_drop?: string[];
  security_opt?: string[];
}

const compose = parse(read('docker-compose.yml')) as { services: Record<string, ComposeService> };
const services = compose.services;
const service = (name: string): ComposeService => {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
};
/** Container ports a service publishes (`"8080:8080"` → 8080). */
const published = (s: ComposeService) => (s.ports ?? []).map((p) => Number(p.split(':').at(-1)));
/**
 * Host address each published port binds (`"127.0.0.1:9090:9090"` → 127.0.0.1); a short entry
 * without one (`"9090:9090"`, `"9090"`) binds every interface: `0.0.0.0`.
 */
const bindAddresses = (s: ComposeService) =>
  (s.ports ?? []).map((p) => {
    const parts = p.split(':');
    return parts.length === 3 ? (parts[0] as string) : '0.0.0.0';
  });

describe('docker-compose.yml', () => {
  test('has the gateway, Redis, Jaeger, two example upstreams, and k6 under a profile', () => {
    expect(Object.keys(services).sort()).toEqual([
      'gateway',
      'jaeger',
      'k6',
      'redis',
      'upstream-a',
      'upstream-b',
    ]);
    expect(service('k6').profiles).toEqual(['k6']);
    for (const name of ['gateway', 'redis', 'jaeger', 'upstream-a', 'upstream-b'])
      expect(service(name).profiles).toBeUndefined();
  });

  test('every file or folder it mounts or builds from exists', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const volume of s.volumes ?? []) {
        const host = volume.split(':')[0] as string;
        expect(host.startsWith('./'), `${name}: ${volume} is a bind mount`).toBe(true);
        expect(existsSync(join(REPO, host)), `${name}: ${host} exists`).toBe(true);
      }
      if (s.build) {
        expect(existsSync(join(REPO, s.build.context, s.build.dockerfile ?? 'Dockerfile'))).toBe(true);
      }
    }
  });

  test('publishes nothing on all interfaces: every published port binds 127.0.0.1', () => {
    const everyBinding = Object.entries(services).flatMap(([name, s]) =>
      bindAddresses(s).map((address, i) => ({ port: s.ports?.[i], name, address })),
    );
    expect(everyBinding.length).toBeGreaterThan(0);
    for (const b of everyBinding) expect(b.address, `${b.name}: ${b.port}`).toBe('127.0.0.1');
  });

  test('does not publish Redis (no password; only the gateway talks to it, over the compose network)', () => {
    expect(service('redis').ports).toBeUndefined();
  });

  test('the admin port and the Jaeger UI are published on loopback only', () => {
    expect(service('gateway').ports).toContain('127.0.0.1:9090:9090');
    expect(service('jaeger').ports).toContain('127.0.0.1:16686:16686');
  });

  test('the gateway drops every capability and cannot gain privileges; the upstreams run as node', () => {
    const gateway = service('gateway');
    expect(gateway.cap_drop).toEqual(['ALL']);
    expect(gateway.security_opt).toContain('no-new-privileges:true');
    expect(gateway.user).toBeUndefined(); // the image's USER node applies
    for (const name of ['upstream-a', 'upstream-b']) expect(service(name).user, name).toBe('node');
  });

  test('Jaeger all-in-one accepts OTLP/HTTP and shows its UI', () => {
    const jaeger = service('jaeger');
    expect(jaeger.image).toMatch(/^jaegertracing\/all-in-one:/);
    expect(jaeger.environment?.COLLECTOR_OTLP_ENABLED).toBe('true');
    expect(published(jaeger)).toEqual(expect.arrayContaining([4318, 16686]));
  });

  test('the gateway waits for its dependencies and only uses environment variables it knows', () => {
    const gateway = service('gateway');
    expect(Object.keys(gateway.depends_on ?? {}).sort()).toEqual([
      'jaeger',
      'redis',
      'upstream-a',
      'upstream-b',
    ]);
    const known = new Set(ENV_VARS.map((v) => v.name));
    for (const name of Object.keys(gateway.environment ?? {})) expect(known, name).toContain(name);
    expect(published(gateway)).toEqual([8080, 9090]);
    expect(service('redis').healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
  });

  test('the example upstreams run examples/upstream.js on the port the spec names', () => {
    for (const name of ['upstream-a', 'upstream-b']) {
      const s = service(name);
      expect(s.image).toMatch(/^node:24/);
      expect(s.command).toEqual(['node', '/srv/upstream.js']);
      expect(s.volumes).toEqual(['./examples/upstream.js:/srv/upstream.js:ro']);
      expect(s.environment?.PORT).toBe('4001');
    }
  });

  test('k6 runs a script from k6/ against the gateway service', () => {
    const k6 = service('k6');
    expect(k6.image).toMatch(/^grafana\/k6:/);
    expect(k6.environment?.BASE_URL).toBe('http://gateway:8080');
    const script = (k6.command ?? []).find((a) => a.startsWith('/scripts/')) as string;
    expect(existsSync(join(REPO, 'k6', script.slice('/scripts/'.length)))).toBe(true);
  });
});

describe('the gateway config the compose stack runs', () => {
  let config: GatewayConfig;
  let snapshot: Snapshot;
  let runtime: Runtime;
  const store = createMemoryStore();

  beforeAll(async () => {
    const command = service('gateway').command ?? [];
    const file = command[command.indexOf('--config') + 1] as string;
    expect(command.slice(0, 3)).toEqual(['node', 'bin/portcullis.js', 'start']);
    config = await loadGatewayConfig({ file, cwd: REPO, env: service('gateway').environment ?? {} });
    runtime = new Runtime({
      config,
      logger: createLogger('silent'),
      store,
      kinds: POLICY_KINDS,
      healthChecks: false,
    });
    snapshot = await runtime.load();
  });
  afterAll(async () => {
    await runtime?.close();
    await store.close();
  });

  test('listens where compose publishes, and sends traces to Jaeger and state to Redis', () => {
    expect(config.listen.http).toMatchObject({ port: 8080, host: '0.0.0.0' });
    expect(config.admin).toEqual({ port: 9090, host: '0.0.0.0', hosts: ['gateway'] });
    const otlp = new URL(config.telemetry.otlp ?? '');
    expect(otlp.hostname).toBe('jaeger');
    expect(published(service('jaeger'))).toContain(Number(otlp.port));
    expect(config.telemetry.sampleRatio).toBe(1);
    const redis = new URL(config.state.redis ?? '');
    expect(redis.hostname).toBe('redis');
    expect(redis.port).toBe('6379'); // redis:7-alpine's port, reached inside the compose network
  });

  test("its admin app answers the Dockerfile health check's Host, the published port's and gateway:9090, not a rebinding name", async () => {
    const admin = createAdmin({ runtime, store, isClosing: () => false, config: config.admin });
    try {
      const healthcheck = /fetch\('([^']+)'\)/.exec(read('Dockerfile'))?.[1] as string;
      const status = async (host: string) =>
        (await admin.inject({ method: 'GET', url: '/healthz', headers: { host } })).statusCode;
      expect(await status(new URL(healthcheck).host)).toBe(200);
      expect(await status('localhost:9090')).toBe(200);
      expect(await status('127.0.0.1:9090')).toBe(200);
      expect(await status('gateway:9090')).toBe(200); // PORTCULLIS_ADMIN_HOSTS: other services of the stack
      expect(await status('evil.example:9090')).toBe(421);
    } finally {
      await admin.close();
    }
  });

  test('its specs and policies load, and every upstream is a compose service on its port', () => {
    const upstreams = [...snapshot.table.services.values()].flatMap((s) => s.settings.upstreams);
    expect(upstreams.length).toBeGreaterThanOrEqual(2);
    for (const u of upstreams) {
      const url = new URL(u.url);
      expect(Object.keys(services)).toContain(url.hostname);
      expect(service(url.hostname).environment?.PORT).toBe(url.port);
    }
  });

  test('routes what the k6 scripts call, with the policies they test', () => {
    const policiesOf = (path: string) => {
      const match = snapshot.table.find('GET', path);
      expect(match, path).not.toBeNull();
      return snapshot.entries.get(match?.route as never)?.chain.applied.map((p) => p.kind) ?? [];
    };
    expect(policiesOf('/echo/hello')).toEqual([]);
    expect(policiesOf('/echo/limited')).toEqual(['rateLimit']);
    expect(policiesOf('/echo/private')).toEqual(['auth']);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const of = (keyword: string) => instructions.filter((l) => l.startsWith(`${keyword} `));

  test('is multi-stage: npm ci in a build stage, a runtime stage on Node 24', () => {
    const stages = of('FROM');
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s).toMatch(/^FROM node:24/);
    expect(of('RUN').some((r) => /\bnpm ci\b/.test(r))).toBe(true);
    expect(of('COPY').some((c) => c.includes('--from='))).toBe(true);
  });

  test('runs as a non-root user with a health check on the admin port over loopback', () => {
    const users = of('USER');
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/USER (root|0)\b/);
    expect(of('HEALTHCHECK')[0]).toContain('http://127.0.0.1:9090/healthz');
  });

  test('exposes only the public port, so `docker run -P` never publishes the admin port', () => {
    expect(of('EXPOSE')).toEqual(['EXPOSE 8080']);
  });

  test("starts the gateway with the README's command (npm start: node [V8 flags] bin/portcullis.js start)", () => {
    const cmd = JSON.parse((of('CMD')[0] as string).slice(4)) as string[];
    expect(cmd[0]).toBe('node');
    expect(cmd.slice(-2)).toEqual(['bin/portcullis.js', 'start']);
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe(cmd.join(' '));
    const readme = read('README.md');
    expect(readme).toContain('npm ci');
    expect(readme).toContain('npm start');
  });

  test('copies only what exists, and .dockerignore keeps node_modules and .git out', () => {
    for (const c of of('COPY').filter((l) => !l.includes('--from='))) {
      const sources = c.split(/\s+/).slice(1, -1);
      for (const src of sources) expect(existsSync(join(REPO, src)), src).toBe(true);
    }
    const ignored = read('.dockerignore').split('\n');
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.git']));
  });
});

describe('examples/upstream.js', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    if (child?.pid && child.exitCode === null) process.kill(child.pid, 'SIGTERM');
  });

  test('serves /health and echoes requests with their request id and traceparent', async () => {
    child = spawn(process.execPath, [join(REPO, 'examples', 'upstream.js')], {
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1', NAME: 'upstream-test' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const first = await new Promise<string>((resolve, reject) => {
      lines.once('line', resolve);
      child?.once('exit', (code) => reject(new Error(`upstream.js exited with ${code}`)));
    });
    const { listening } = JSON.parse(first) as { listening: number };
    const base = `http://127.0.0.1:${listening}`;
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(200);
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const res = await fetch(`${base}/hello?x=1`, { headers: { 'x-request-id': 'rid-1', traceparent } });
    expect(await res.json()).toEqual({
      upstream: 'upstream-test',
      method: 'GET',
      path: '/hello?x=1',
      requestId: 'rid-1',
      traceparent,
    });
  });
});
