import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type ConfigIssue, formatIssue } from '../errors.ts';
import { ENV_VARS } from './env.ts';
import { loadGatewayConfig, MODERN_CIPHERS, resolveGatewayConfig } from './load.ts';
import type { GatewayConfig } from './schema.ts';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures/config');

/** Run `fn`, expect a ConfigError, return its issues. */
async function issuesOf(fn: () => unknown): Promise<ConfigIssue[]> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('PC_CONFIG_INVALID');
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError, got a config');
}

let empty: string;
beforeAll(async () => {
  empty = await mkdtemp(path.join(tmpdir(), 'portcullis-config-'));
});
afterAll(async () => {
  await rm(empty, { recursive: true, force: true });
});

describe('loadGatewayConfig without a file', () => {
  it('gives every default in a folder with no gateway.yaml', async () => {
    const config = await loadGatewayConfig({ cwd: empty, env: {} });
    expect(config).toEqual({
      baseDir: empty,
      listen: { http: { port: 8080, host: '0.0.0.0', redirectToHttps: false } },
      admin: { port: 9090, host: '127.0.0.1' },
      openapi: path.join(empty, 'openapi'),
      policies: path.join(empty, 'policies'),
      watch: true,
      state: {},
      telemetry: {
        serviceName: 'portcullis',
        sampleRatio: 1,
        propagators: ['tracecontext', 'baggage'],
        accessLog: true,
        accessLogSample: 1,
      },
      trustProxy: [],
      limits: {
        bodyBytes: 1_048_576,
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 30_000,
        keepAliveTimeoutMs: 72_000,
        shutdownGraceMs: 10_000,
      },
      headers: { hideUpstreamIdentity: true },
      workers: 1,
      logLevel: 'info',
      logFormat: 'json',
      logBufferBytes: 4194304,
    } satisfies GatewayConfig);
  });

  it('picks up gateway.yaml from cwd when present', async () => {
    const cwd = path.join(FIXTURES, 'default-file');
    const config = await loadGatewayConfig({ cwd, env: {} });
    expect(config.file).toBe(path.join(cwd, 'gateway.yaml'));
    expect(config.listen.http?.port).toBe(7070);
    expect(config.openapi).toBe(path.join(cwd, 'specs'));
  });

  it('uses PORTCULLIS_CONFIG when no file is given, relative to cwd', async () => {
    const config = await loadGatewayConfig({
      cwd: FIXTURES,
      env: { PORTCULLIS_CONFIG: 'default-file/gateway.yaml' },
    });
    expect(config.listen.http?.port).toBe(7070);
  });

  it('prefers the explicit file over PORTCULLIS_CONFIG', async () => {
    const config = await loadGatewayConfig({
      cwd: FIXTURES,
      file: 'empty.yaml',
      env: { PORTCULLIS_CONFIG: 'default-file/gateway.yaml' },
    });
    expect(config.listen.http?.port).toBe(8080);
    expect(config.file).toBe(path.join(FIXTURES, 'empty.yaml'));
  });
});

describe('loadGatewayConfig with a full file', () => {
  it('reads every field and resolves paths against the file’s folder', async () => {
    const dir = path.join(FIXTURES, 'full');
    const config = await loadGatewayConfig({ cwd: FIXTURES, file: 'full/gateway.yaml', env: {} });
    const tls = (f: string) => path.join(dir, 'tls', f);
    expect(config).toEqual({
      baseDir: dir,
      file: path.join(dir, 'gateway.yaml'),
      listen: {
        http: { port: 8081, host: '127.0.0.1', redirectToHttps: true },
        https: {
          port: 8443,
          host: '127.0.0.1',
          cert: tls('cert.pem'),
          key: tls('key.pem'),
          sni: { 'api.example.com': { cert: tls('cert.pem'), key: tls('key.pem') } },
          minVersion: 'TLSv1.3',
          ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384',
          http2: false,
        },
      },
      admin: { port: 0, host: '0.0.0.0' },
      openapi: path.join(FIXTURES, 'specs'),
      policies: path.join(dir, 'rules'),
      watch: false,
      state: { redis: 'redis://127.0.0.1:6379' },
      telemetry: {
        otlp: 'http://127.0.0.1:4318',
        serviceName: 'edge',
        sampleRatio: 0.25,
        propagators: ['tracecontext', 'baggage'],
        accessLog: true,
        accessLogSample: 0.1,
      },
      trustProxy: ['10.0.0.0/8', '::1', '192.168.1.7'],
      limits: {
        bodyBytes: 2048,
        headersTimeoutMs: 1000,
        requestTimeoutMs: 2000,
        keepAliveTimeoutMs: 3000,
        shutdownGraceMs: 4000,
      },
      headers: { hideUpstreamIdentity: false },
      workers: 3,
      logLevel: 'debug',
      logFormat: 'pretty',
      logBufferBytes: 65536,
    } satisfies GatewayConfig);
  });

  it('defaults https to TLS 1.2+, HTTP/2 and the modern ciphers', () => {
    const config = resolveGatewayConfig(
      { listen: { https: { port: 8443, cert: 'tls/cert.pem', key: 'tls/key.pem' } } },
      { baseDir: path.join(FIXTURES, 'full'), env: {} },
    );
    expect(config.listen.https).toMatchObject({
      minVersion: 'TLSv1.2',
      http2: true,
      sni: {},
      host: '0.0.0.0',
    });
    expect(config.listen.https?.ciphers).toBe(MODERN_CIPHERS);
  });

  it('resolves workers: auto to the core count and rejects 0', async () => {
    const baseDir = path.join(FIXTURES, 'full');
    expect(resolveGatewayConfig({ workers: 'auto' }, { baseDir, env: {} }).workers).toBe(
      availableParallelism(),
    );
    const issues = await issuesOf(() => resolveGatewayConfig({ workers: 0 }, { baseDir, env: {} }));
    expect(new Set(issues.map((i) => i.path))).toEqual(new Set(['/workers']));
  });

  it('treats an empty file as all defaults', async () => {
    const config = await loadGatewayConfig({ file: path.join(FIXTURES, 'empty.yaml'), env: {} });
    expect(config.listen).toEqual({ http: { port: 8080, host: '0.0.0.0', redirectToHttps: false } });
    expect(config.openapi).toBe(path.join(FIXTURES, 'openapi'));
  });
});

describe('MODERN_CIPHERS', () => {
  it('holds only forward-secret AEAD suites', () => {
    const suites = MODERN_CIPHERS.split(':');
    expect(suites.length).toBeGreaterThan(0);
    for (const s of suites)
      expect(s).toMatch(/^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
  });
});

describe('environment overrides', () => {
  const base = {
    listen: { http: { port: 1 }, https: { port: 2, cert: 'tls/cert.pem', key: 'tls/key.pem' } },
  };
  const baseDir = path.join(FIXTURES, 'full');
  const cwd = '/srv/gw';
  const cases: { variable: string; value: string; pick: (c: GatewayConfig) => unknown; want: unknown }[] = [
    { variable: 'PORTCULLIS_HTTP_PORT', value: '8088', pick: (c) => c.listen.http?.port, want: 8088 },
    { variable: 'PORTCULLIS_HTTP_HOST', value: '::', pick: (c) => c.listen.http?.host, want: '::' },
    { variable: 'PORTCULLIS_HTTPS_PORT', value: '0', pick: (c) => c.listen.https?.port, want: 0 },
    { variable: 'PORTCULLIS_ADMIN_PORT', value: '9999', pick: (c) => c.admin?.port, want: 9999 },
    { variable: 'PORTCULLIS_ADMIN_HOST', value: '0.0.0.0', pick: (c) => c.admin?.host, want: '0.0.0.0' },
    { variable: 'PORTCULLIS_OPENAPI_DIR', value: 'specs', pick: (c) => c.openapi, want: '/srv/gw/specs' },
    { variable: 'PORTCULLIS_POLICIES_DIR', value: '/etc/pc', pick: (c) => c.policies, want: '/etc/pc' },
    {
      variable: 'PORTCULLIS_REDIS_URL',
      value: 'rediss://cache:6380/2',
      pick: (c) => c.state.redis,
      want: 'rediss://cache:6380/2',
    },
    {
      variable: 'PORTCULLIS_OTLP_ENDPOINT',
      value: 'http://jaeger:4318',
      pick: (c) => c.telemetry.otlp,
      want: 'http://jaeger:4318',
    },
    { variable: 'PORTCULLIS_SAMPLE_RATIO', value: '0.1', pick: (c) => c.telemetry.sampleRatio, want: 0.1 },
    {
      variable: 'PORTCULLIS_TRUST_PROXY',
      value: '10.0.0.0/8, fd00::/8 ,127.0.0.1',
      pick: (c) => c.trustProxy,
      want: ['10.0.0.0/8', 'fd00::/8', '127.0.0.1'],
    },
    { variable: 'PORTCULLIS_LOG_LEVEL', value: 'warn', pick: (c) => c.logLevel, want: 'warn' },
    { variable: 'PORTCULLIS_ZONE', value: 'eu-west-1a', pick: (c) => c.zone, want: 'eu-west-1a' },
    { variable: 'PORTCULLIS_WORKERS', value: '3', pick: (c) => c.workers, want: 3 },
    { variable: 'PORTCULLIS_WORKERS', value: 'auto', pick: (c) => c.workers, want: availableParallelism() },
    { variable: 'PORTCULLIS_WATCH', value: 'false', pick: (c) => c.watch, want: false },
    { variable: 'PORTCULLIS_WATCH', value: 'TRUE', pick: (c) => c.watch, want: true },
  ];

  it.each(cases)('$variable=$value wins over the file', ({ variable, value, pick, want }) => {
    const file = { ...base, watch: want === true ? false : undefined, trustProxy: ['1.2.3.4'] };
    const config = resolveGatewayConfig(file, { baseDir, cwd, env: { [variable]: value } });
    expect(pick(config)).toEqual(want);
  });

  it('documents every variable it reads, with a description', () => {
    const names = ENV_VARS.map((v) => v.name);
    for (const c of cases) expect(names).toContain(c.variable);
    expect(names).toContain('PORTCULLIS_CONFIG');
    for (const v of ENV_VARS) expect(v.description.length).toBeGreaterThan(10);
  });

  it('ignores empty variables', () => {
    const config = resolveGatewayConfig(base, {
      baseDir,
      env: { PORTCULLIS_HTTP_PORT: '', PORTCULLIS_WATCH: ' ' },
    });
    expect(config.listen.http?.port).toBe(1);
    expect(config.watch).toBe(true);
  });

  it('fills a section the file does not have', () => {
    const config = resolveGatewayConfig({}, { baseDir, env: { PORTCULLIS_ADMIN_HOST: '0.0.0.0' } });
    expect(config.admin).toEqual({ port: 9090, host: '0.0.0.0' });
  });

  const bad: { env: Record<string, string>; message: RegExp }[] = [
    { env: { PORTCULLIS_HTTP_PORT: 'abc' }, message: /integer port.*"abc"/ },
    { env: { PORTCULLIS_HTTP_PORT: '-1' }, message: /integer port/ },
    { env: { PORTCULLIS_ADMIN_PORT: '70000' }, message: /<= 65535/ },
    { env: { PORTCULLIS_SAMPLE_RATIO: 'half' }, message: /number/ },
    { env: { PORTCULLIS_SAMPLE_RATIO: '1.5' }, message: /<= 1/ },
    { env: { PORTCULLIS_WATCH: 'sometimes' }, message: /true or false/ },
    { env: { PORTCULLIS_WORKERS: 'many' }, message: /integer or auto, got "many"/ },
    { env: { PORTCULLIS_LOG_LEVEL: 'loud' }, message: /must be one of .*"info"/ },
    { env: { PORTCULLIS_TRUST_PROXY: '10.0.0.0/8,proxy.local' }, message: /entry 1 "proxy.local"/ },
    { env: { PORTCULLIS_REDIS_URL: 'localhost:6379' }, message: /redis:\/\/ or rediss:\/\// },
    { env: { PORTCULLIS_OTLP_ENDPOINT: 'jaeger' }, message: /http:\/\/ or https:\/\// },
  ];
  it.each(bad)('rejects $env naming the variable', async ({ env, message }) => {
    const issues = await issuesOf(() => resolveGatewayConfig(base, { baseDir, env }));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: 'environment', path: Object.keys(env)[0] });
    expect(issues[0]?.message).toMatch(message);
  });

  it('rejects PORTCULLIS_HTTPS_PORT when the file has no https listener', async () => {
    const issues = await issuesOf(() =>
      resolveGatewayConfig({}, { baseDir, env: { PORTCULLIS_HTTPS_PORT: '8443' } }),
    );
    expect(issues).toEqual([
      {
        file: 'environment',
        path: 'PORTCULLIS_HTTPS_PORT',
        message: expect.stringMatching(/listen\.https is not configured in gateway\.yaml/),
      },
    ]);
  });

  it('names PORTCULLIS_CONFIG when the file it names is missing', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: empty, env: { PORTCULLIS_CONFIG: 'nope.yaml' } }),
    );
    expect(issues).toEqual([
      { file: 'nope.yaml', path: '', message: 'file not found (named by PORTCULLIS_CONFIG)' },
    ]);
  });
});

describe('invalid files', () => {
  it('reports every bad value with file, line, path and what was expected', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: FIXTURES, file: 'bad-values.yaml', env: {} }),
    );
    expect(issues.map(formatIssue).sort()).toEqual(
      [
        'bad-values.yaml:4: /listen/http/port: must be integer',
        'bad-values.yaml:5: /admin/port: must be <= 65535',
        'bad-values.yaml:6: /logLevel: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent"',
        'bad-values.yaml:8: /telemetry/sampleRatio: must be <= 1',
        'bad-values.yaml:11: /trustProxy/1: must be an IP address or CIDR (e.g. 10.0.0.0/8), got "not-an-ip"',
        'bad-values.yaml:12: /trustProxy/2: must be an IP address or CIDR (e.g. 10.0.0.0/8), got "10.0.0.0/33"',
      ].sort(),
    );
  });

  it('reports file and environment issues together', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: FIXTURES, file: 'bad-values.yaml', env: { PORTCULLIS_WATCH: 'maybe' } }),
    );
    expect(issues.filter((i) => i.file === 'environment').map((i) => i.path)).toEqual(['PORTCULLIS_WATCH']);
    expect(issues.filter((i) => i.file === 'bad-values.yaml')).toHaveLength(6);
  });

  it('names an unknown field and its line', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: FIXTURES, file: 'unknown-field.yaml', env: {} }),
    );
    // The path is the parent's (where the field is not allowed); the line is the field's own.
    expect(issues).toEqual([
      { file: 'unknown-field.yaml', line: 3, path: '/listen', message: 'unknown field "htps"' },
    ]);
  });

  it('names the file of a YAML syntax error', async () => {
    // Written at test time: a broken YAML fixture would fail the repo-wide `biome check`.
    await writeFile(path.join(empty, 'syntax-error.yaml'), 'listen:\n  http: { port: 8080\nadmin: {}\n');
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: empty, file: 'syntax-error.yaml', env: {} }),
    );
    expect(issues[0]).toMatchObject({
      file: 'syntax-error.yaml',
      line: expect.any(Number),
      message: expect.stringMatching(/Flow map/),
    });
  });

  it('rejects a file that is not a mapping', async () => {
    const issues = await issuesOf(() => resolveGatewayConfig(['listen'], { baseDir: empty, env: {} }));
    expect(issues).toEqual([{ file: 'gateway.yaml', path: '', line: undefined, message: 'must be object' }]);
  });

  it('names an explicit file that does not exist', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: empty, file: 'conf/gateway.yaml', env: {} }),
    );
    expect(issues).toEqual([
      { file: path.join('conf', 'gateway.yaml'), path: '', message: 'file not found' },
    ]);
  });

  it('names each missing certificate or key by field and line', async () => {
    const issues = await issuesOf(() =>
      loadGatewayConfig({ cwd: FIXTURES, file: 'missing-certs.yaml', env: {} }),
    );
    expect(issues.map(formatIssue)).toEqual([
      `missing-certs.yaml:4: /listen/https/cert: file not found: ${path.join(FIXTURES, 'nowhere/cert.pem')}`,
      `missing-certs.yaml:5: /listen/https/key: file not found: ${path.join(FIXTURES, 'nowhere/key.pem')}`,
    ]);
  });

  it('names a missing SNI certificate by host', async () => {
    const input = {
      listen: {
        https: {
          port: 1,
          cert: 'tls/cert.pem',
          key: 'tls/key.pem',
          sni: { 'a.example': { cert: 'x', key: 'tls/key.pem' } },
        },
      },
    };
    const issues = await issuesOf(() =>
      resolveGatewayConfig(input, { baseDir: path.join(FIXTURES, 'full'), env: {} }),
    );
    expect(issues.map((i) => i.path)).toEqual(['/listen/https/sni/a.example/cert']);
  });
});

describe('relative paths', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'portcullis-paths-'));
    await mkdir(path.join(root, 'deploy', 'certs'), { recursive: true });
    await writeFile(path.join(root, 'deploy', 'certs', 'site.pem'), 'placeholder');
    await writeFile(
      path.join(root, 'deploy', 'gateway.yaml'),
      'openapi: ../services\nlisten:\n  https: { port: 0, cert: certs/site.pem, key: ./certs/site.pem }\n',
    );
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('resolves file paths against the config file’s folder, not cwd', async () => {
    const config = await loadGatewayConfig({ cwd: root, file: 'deploy/gateway.yaml', env: {} });
    expect(config.baseDir).toBe(path.join(root, 'deploy'));
    expect(config.openapi).toBe(path.join(root, 'services'));
    expect(config.policies).toBe(path.join(root, 'deploy', 'policies'));
    expect(config.listen.https?.cert).toBe(path.join(root, 'deploy', 'certs', 'site.pem'));
  });

  it('resolves directories from the environment against cwd', async () => {
    const config = await loadGatewayConfig({
      cwd: root,
      file: 'deploy/gateway.yaml',
      env: { PORTCULLIS_POLICIES_DIR: 'rules' },
    });
    expect(config.policies).toBe(path.join(root, 'rules'));
  });
});
