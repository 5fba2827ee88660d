import { mkdir, mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { resolveGatewayConfig } from '../../src/config/load.ts';
import { createGateway, type Gateway, type ListenAddresses } from '../../src/gateway.ts';
import { createLogger } from '../../src/logger.ts';

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
  close(): Promise<void>;
}

/** Start a real gateway on 127.0.0.1 (port 0) over a temp folder holding the given specs. */
export async function startGateway(
  specs: Record<string, unknown>,
  config: Record<string, unknown> = {},
  opts: { listen?: boolean } = {},
): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-test-'));
  await mkdir(join(dir, 'openapi'));
  const writeRaw = async (name: string, text: string) => {
    const tmp = join(dir, `.${name}.tmp`);
    await writeFile(tmp, text);
    await rename(tmp, join(dir, 'openapi', name));
  };
  const writeSpec = (name: string, doc: unknown) => writeRaw(`${name}.yaml`, stringify(doc));
  for (const [name, doc] of Object.entries(specs)) await writeSpec(name, doc);
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
  const gateway = await createGateway(resolved, { logger: createLogger(resolved.logLevel) });
  const addresses = opts.listen === false ? {} : await gateway.listen();
  return {
    gateway,
    dir,
    url: addresses.http ?? '',
    addresses,
    writeSpec,
    writeRaw,
    removeSpec: (name) => unlink(join(dir, 'openapi', `${name}.yaml`)),
    async close() {
      await gateway.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
