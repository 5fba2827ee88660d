import { mkdir, mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { resolveGatewayConfig } from '../../src/config/load.ts';
import { createGateway, type Gateway, type ListenAddresses } from '../../src/gateway.ts';
import { createLogger, type Logger } from '../../src/logger.ts';

export interface SpecOptions {
  title?: string;
  basePath?: string;
  upstreams?: Array<string | { url: string; weight?: number }>;
  extra?: Record<string, unknown>;
  /** Operations as `METHOD /path` → operationId; default GET /items, GET /items/{id}, POST /items, GET /slow, GET /bytes. */
  operations?: Record<string, string>;
}

const DEFAULT_OPERATIONS: Record<string, string> = {
  'GET /items': 'listItems',
  'POST /items': 'createItem',
  'PUT /items/{id}': 'putItem',
  'GET /items/{id}': 'getItem',
  'GET /slow': 'slow',
  'GET /bytes': 'bytes',
  'POST /upload': 'upload',
};

/** An OpenAPI 3.1 document for a test service forwarding to `upstreams`. */
export function spec(opts: SpecOptions): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, operationId] of Object.entries(opts.operations ?? DEFAULT_OPERATIONS)) {
    const [method = 'GET', path = '/'] = key.split(' ');
    const params = [...path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    paths[path] ??= {};
    (paths[path] as Record<string, unknown>)[method.toLowerCase()] = {
      operationId,
      ...(params.length ? { parameters: params } : {}),
      responses: { '200': { description: 'ok' } },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: opts.title ?? 'Test', version: '1.0.0' },
    'x-portcullis': {
      basePath: opts.basePath ?? '/svc',
      upstreams: (opts.upstreams ?? []).map((u) => (typeof u === 'string' ? { url: u } : u)),
      ...opts.extra,
    },
    paths,
  };
}

export interface TestGateway {
  gateway: Gateway;
  dir: string;
  /** `http://127.0.0.1:<port>` of the public HTTP listener. */
  url: string;
  addresses: ListenAddresses;
  /** Write (atomically: temp file + rename) `openapi/<name>.yaml`. */
  writeSpec(name: string, doc: unknown): Promise<void>;
  writeRaw(name: string, text: string): Promise<void>;
  removeSpec(name: string): Promise<void>;
  /** Write (atomically) `policies/<name>.yaml` holding `rules` (a list of policy rules). */
  writePolicy(name: string, rules: unknown[]): Promise<void>;
  /** Write `policies/<name>` as raw text (to test invalid YAML). */
  writePolicyRaw(name: string, text: string): Promise<void>;
  removePolicy(name: string): Promise<void>;
  close(): Promise<void>;
}

export interface StartGatewayOptions {
  /** Call listen() (default true). */
  listen?: boolean;
  /** Policy files written as `policies/<name>.yaml` before the gateway starts. Default: none. */
  policies?: Record<string, unknown[]>;
  /** Extra files (path relative to the temp folder → content), written before the gateway starts. Default: none. */
  files?: Record<string, string>;
  /** Logger the gateway writes to (e.g. a pino logger on a captured stream). Default: silent. */
  logger?: Logger;
}

/** Start a real gateway on 127.0.0.1 (port 0) over a temp folder holding the given specs. */
export async function startGateway(
  specs: Record<string, unknown>,
  config: Record<string, unknown> = {},
  opts: StartGatewayOptions = {},
): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-test-'));
  await mkdir(join(dir, 'openapi'));
  await mkdir(join(dir, 'policies'));
  // Temp files start with a dot: the loaders skip dot files, so a half-written file is never read.
  const writeInto = async (folder: string, name: string, text: string) => {
    const tmp = join(dir, folder, `.${name}.tmp`);
    await writeFile(tmp, text);
    await rename(tmp, join(dir, folder, name));
  };
  const writeRaw = (name: string, text: string) => writeInto('openapi', name, text);
  const writeSpec = (name: string, doc: unknown) => writeRaw(`${name}.yaml`, stringify(doc));
  const writePolicyRaw = (name: string, text: string) => writeInto('policies', name, text);
  const writePolicy = (name: string, rules: unknown[]) => writePolicyRaw(`${name}.yaml`, stringify(rules));
  for (const [name, doc] of Object.entries(specs)) await writeSpec(name, doc);
  for (const [name, rules] of Object.entries(opts.policies ?? {})) await writePolicy(name, rules);
  for (const [path, text] of Object.entries(opts.files ?? {})) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  const resolved = resolveGatewayConfig(
    {
      listen: { http: { port: 0, host: '127.0.0.1' } },
      admin: { port: 0, host: '127.0.0.1' },
      watch: false,
      logLevel: 'silent',
      ...config,
    },
    { baseDir: dir, env: {} },
  );
  let gateway: Gateway;
  try {
    gateway = await createGateway(resolved, { logger: opts.logger ?? createLogger(resolved.logLevel) });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const addresses = opts.listen === false ? {} : await gateway.listen();
  return {
    gateway,
    dir,
    url: addresses.http ?? '',
    addresses,
    writeSpec,
    writeRaw,
    removeSpec: (name) => unlink(join(dir, 'openapi', `${name}.yaml`)),
    writePolicy,
    writePolicyRaw,
    removePolicy: (name) => unlink(join(dir, 'policies', `${name}.yaml`)),
    async close() {
      await gateway.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface CapturedLogs {
  /** A pino logger writing JSON lines into `lines` (synchronously). */
  logger: Logger;
  /** Every entry logged so far, parsed. */
  lines: Array<Record<string, unknown>>;
}

/** A logger whose entries a test can read back (pass it as `startGateway(..., { logger })`). */
export function captureLogs(level = 'info'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  const stream = {
    write(line: string) {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    },
  };
  return { logger: pino({ level, base: { name: 'portcullis' } }, stream), lines };
}
