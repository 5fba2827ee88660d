/**
 * gateway.yaml → GatewayConfig: parse, check against the schema (file:line issues), apply
 * environment overrides (see env.ts), fill defaults, resolve relative paths. Everything
 * downstream trusts the result and never re-checks it.
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import {
  CONFIG_FILE_VAR,
  type EnvOverride,
  envIssue,
  envValue,
  isAddressOrCidr,
  readEnvOverrides,
  urlProblem,
} from './env.ts';
import {
  type GatewayConfig,
  type GatewayConfigInput,
  GatewayConfigSchema,
  type TelemetryPropagator,
} from './schema.ts';
import { DEFAULT_TLS12_CIPHERS } from './tls.ts';
import { compileCheck } from './validate.ts';
import { escapePointer, parseSource, type SourceDocument } from './yaml.ts';

/** The file looked for in the working directory when none is named. */
export const DEFAULT_CONFIG_FILE = 'gateway.yaml';

/** The TLS 1.2 cipher list `listen.https.ciphers` defaults to (defined with the TLS options). */
export const MODERN_CIPHERS = DEFAULT_TLS12_CIPHERS;

/** Every default of gateway.yaml in one place (paths before resolution). */
export const DEFAULTS = {
  http: { port: 8080, host: '0.0.0.0', redirectToHttps: false },
  https: { minVersion: 'TLSv1.2', http2: true, ciphers: MODERN_CIPHERS },
  admin: { port: 9090, host: '127.0.0.1' },
  openapi: './openapi',
  policies: './policies',
  watch: true,
  telemetry: {
    serviceName: 'portcullis',
    sampleRatio: 1,
    propagators: ['tracecontext', 'baggage'],
    accessLog: true,
    accessLogSample: 1,
  },
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
  logBufferBytes: 4 * 1024 * 1024,
} as const;

const checkGatewayConfig = compileCheck(GatewayConfigSchema);

/**
 * Load gateway.yaml (or none) → defaulted, env-overridden, path-resolved GatewayConfig.
 * File chosen by: `file`, else `$PORTCULLIS_CONFIG`, else `<cwd>/gateway.yaml` if it exists, else
 * none (pure defaults). A file that was named but cannot be read is an error. `cwd` defaults to
 * `process.cwd()`, `env` to `process.env`. Throws ConfigError listing every issue found.
 */
export async function loadGatewayConfig(
  opts: { file?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<GatewayConfig> {
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const env = opts.env ?? process.env;
  const fromEnv = opts.file === undefined ? envValue(env, CONFIG_FILE_VAR) : undefined;
  const named = opts.file ?? fromEnv;
  let file: string;
  if (named !== undefined) {
    file = path.resolve(cwd, named);
  } else {
    file = path.join(cwd, DEFAULT_CONFIG_FILE);
    if (!existsSync(file)) return resolveGatewayConfig({}, { baseDir: cwd, cwd, env });
  }

  const display = displayName(file, cwd);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    const reason =
      (cause as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'file not found'
        : `cannot read file: ${(cause as Error).message}`;
    const via = fromEnv !== undefined ? ` (named by ${CONFIG_FILE_VAR})` : '';
    throw new ConfigError([{ file: display, path: '', message: `${reason}${via}` }], { cause });
  }
  const source = parseSource(text, display);
  return resolveGatewayConfig(source.value, { file, baseDir: path.dirname(file), cwd, env, source });
}

/**
 * Same, from an already-parsed object (tests, programmatic use). `baseDir` is what relative paths
 * in the input resolve against; `cwd` (default `baseDir`) is what relative paths from environment
 * variables resolve against. `source` supplies line numbers; without it issues name `file`
 * (default `gateway.yaml`) and no line. `null`/`undefined` input means an empty file.
 */
export function resolveGatewayConfig(
  input: unknown,
  opts: { file?: string; baseDir: string; cwd?: string; env?: NodeJS.ProcessEnv; source?: SourceDocument },
): GatewayConfig {
  const env = opts.env ?? process.env;
  const baseDir = path.resolve(opts.baseDir);
  const cwd = path.resolve(opts.cwd ?? baseDir);
  const value = input ?? {};
  const source = opts.source ?? plainSource(opts.file ? path.basename(opts.file) : DEFAULT_CONFIG_FILE);

  const issues = checkGatewayConfig(value, source);
  const envRead = readEnvOverrides(env);
  issues.push(...envRead.issues);
  if (!isRecord(value)) throw new ConfigError(issues);
  issues.push(...checkTrustProxy(value.trustProxy, source), ...checkUrls(value, source));

  const merged = structuredClone(value);
  const applied: EnvOverride[] = [];
  for (const o of envRead.overrides) {
    if (o.pointer.startsWith('/listen/https/') && !isRecord(getPath(merged, '/listen/https'))) {
      issues.push(
        envIssue(o.name, `listen.https is not configured in ${source.file}; add it there with cert and key`),
      );
      continue;
    }
    setPath(merged, o.pointer, o.value);
    applied.push(o);
  }
  // The file was checked above; re-checking the merge reports only what the environment broke.
  for (const issue of checkGatewayConfig(merged, source)) {
    const by = applied.find((o) => issue.path === o.pointer || issue.path.startsWith(`${o.pointer}/`));
    if (by) issues.push(envIssue(by.name, issue.message));
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const fromEnv = new Set(applied.map((o) => o.pointer));
  const config = applyDefaults(merged as GatewayConfigInput, {
    baseDir,
    resolveDir: (pointer, p) => path.resolve(fromEnv.has(pointer) ? cwd : baseDir, p),
  });
  if (opts.file !== undefined) config.file = path.resolve(cwd, opts.file);

  const fileIssues = checkTlsFiles(config, source);
  if (fileIssues.length > 0) throw new ConfigError(fileIssues);
  return config;
}

function applyDefaults(
  c: GatewayConfigInput,
  ctx: { baseDir: string; resolveDir: (pointer: string, p: string) => string },
): GatewayConfig {
  const rel = (p: string) => path.resolve(ctx.baseDir, p);
  const httpIn = c.listen?.http;
  const http = {
    port: httpIn?.port ?? DEFAULTS.http.port,
    host: httpIn?.host ?? DEFAULTS.http.host,
    redirectToHttps: httpIn?.redirectToHttps ?? DEFAULTS.http.redirectToHttps,
  };
  const httpsIn = c.listen?.https;
  const https = httpsIn && {
    port: httpsIn.port,
    host: httpsIn.host ?? http.host,
    cert: rel(httpsIn.cert),
    key: rel(httpsIn.key),
    sni: Object.fromEntries(
      Object.entries(httpsIn.sni ?? {}).map(([host, pair]) => [
        host,
        { cert: rel(pair.cert), key: rel(pair.key) },
      ]),
    ),
    minVersion: httpsIn.minVersion ?? DEFAULTS.https.minVersion,
    ciphers: httpsIn.ciphers ?? DEFAULTS.https.ciphers,
    http2: httpsIn.http2 ?? DEFAULTS.https.http2,
  };
  const telemetry: GatewayConfig['telemetry'] = {
    serviceName: c.telemetry?.serviceName ?? DEFAULTS.telemetry.serviceName,
    sampleRatio: c.telemetry?.sampleRatio ?? DEFAULTS.telemetry.sampleRatio,
    propagators: [
      ...((c.telemetry?.propagators as TelemetryPropagator[] | undefined) ?? DEFAULTS.telemetry.propagators),
    ],
    accessLog: c.telemetry?.accessLog !== false,
    accessLogSample:
      typeof c.telemetry?.accessLog === 'object'
        ? (c.telemetry.accessLog.sample ?? DEFAULTS.telemetry.accessLogSample)
        : DEFAULTS.telemetry.accessLogSample,
  };
  if (c.telemetry?.otlp !== undefined) telemetry.otlp = c.telemetry.otlp;
  return {
    baseDir: ctx.baseDir,
    listen: https ? { http, https } : { http },
    admin: {
      port: c.admin?.port ?? DEFAULTS.admin.port,
      host: c.admin?.host ?? DEFAULTS.admin.host,
      ...(c.admin?.hosts && { hosts: [...c.admin.hosts] }),
    },
    openapi: ctx.resolveDir('/openapi', c.openapi ?? DEFAULTS.openapi),
    policies: ctx.resolveDir('/policies', c.policies ?? DEFAULTS.policies),
    watch: c.watch ?? DEFAULTS.watch,
    state: { ...c.state },
    telemetry,
    trustProxy: [...(c.trustProxy ?? [])],
    limits: { ...DEFAULTS.limits, ...c.limits },
    headers: {
      hideUpstreamIdentity: c.headers?.hideUpstreamIdentity ?? DEFAULTS.headers.hideUpstreamIdentity,
    },
    workers: c.workers === 'auto' ? availableParallelism() : (c.workers ?? DEFAULTS.workers),
    ...(c.zone !== undefined && { zone: c.zone }),
    logLevel: c.logLevel ?? DEFAULTS.logLevel,
    logFormat: c.logFormat ?? DEFAULTS.logFormat,
    logBufferBytes: c.logBufferBytes ?? DEFAULTS.logBufferBytes,
  };
}

function checkTrustProxy(list: unknown, source: SourceDocument): ConfigIssue[] {
  if (!Array.isArray(list)) return [];
  const issues: ConfigIssue[] = [];
  list.forEach((entry, i) => {
    if (typeof entry === 'string' && !isAddressOrCidr(entry)) {
      const p = `/trustProxy/${i}`;
      issues.push(at(source, p, `must be an IP address or CIDR (e.g. 10.0.0.0/8), got "${entry}"`));
    }
  });
  return issues;
}

function checkUrls(c: Record<string, unknown>, source: SourceDocument): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const fields: [string, string[]][] = [
    ['/state/redis', ['redis:', 'rediss:']],
    ['/telemetry/otlp', ['http:', 'https:']],
  ];
  for (const [p, protocols] of fields) {
    const v = getPath(c, p);
    const problem = typeof v === 'string' ? urlProblem(v, protocols) : undefined;
    if (problem) issues.push(at(source, p, problem));
  }
  return issues;
}

/** Missing certificates are found now, at load, rather than when the listener starts. */
function checkTlsFiles(config: GatewayConfig, source: SourceDocument): ConfigIssue[] {
  const https = config.listen.https;
  if (!https) return [];
  const files: [string, string][] = [
    ['/listen/https/cert', https.cert],
    ['/listen/https/key', https.key],
  ];
  for (const [host, pair] of Object.entries(https.sni)) {
    const h = escapePointer(host);
    files.push([`/listen/https/sni/${h}/cert`, pair.cert], [`/listen/https/sni/${h}/key`, pair.key]);
  }
  return files.filter(([, f]) => !isFile(f)).map(([p, f]) => at(source, p, `file not found: ${f}`));
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function at(source: SourceDocument, p: string, message: string): ConfigIssue {
  return { file: source.file, line: source.lineOf(p), path: p, message };
}

/** Issues name the file as the user would type it: relative to cwd when it lies below it. */
function displayName(file: string, cwd: string): string {
  const rel = path.relative(cwd, file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

function plainSource(file: string): SourceDocument {
  return { file, value: undefined, lineOf: () => undefined };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function getPath(obj: Record<string, unknown>, pointer: string): unknown {
  let node: unknown = obj;
  for (const seg of pointer.slice(1).split('/')) {
    if (!isRecord(node)) return undefined;
    node = node[seg];
  }
  return node;
}

/** Env pointers are fixed, escape-free paths; missing or non-object parents are replaced. */
function setPath(obj: Record<string, unknown>, pointer: string, value: unknown): void {
  const segs = pointer.slice(1).split('/');
  const last = segs.pop() as string;
  let node = obj;
  for (const seg of segs) {
    const next = node[seg];
    if (!isRecord(next)) node[seg] = {};
    node = node[seg] as Record<string, unknown>;
  }
  node[last] = value;
}
