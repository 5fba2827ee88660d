/**
 * What the bench measures, as data: every target is a name and a way to start it in front of
 * the shared upstream. Adding a configuration to compare is one entry in TARGETS, e.g.
 *
 *   portcullisTarget({ name: 'portcullis+policies', policies: { 'bench.yaml': '- match: ...' } })
 *   portcullisTarget({ name: 'portcullis+telemetry', gatewayYaml: 'telemetry: { otlp: ... }' })
 *   portcullisTarget({ name: 'portcullis+waf', policies: { 'bench.yaml': '- match: { service: bench }\n  waf: { mode: block }\n' } })
 *
 * each being its own config dir under a temp dir.
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nginxTarget } from './nginx.ts';
import { preparePolicies, prepareSameRequest } from './policies.ts';
import { type Child, freePort, readJsonLine, readMemory, startNode, stopChild } from './processes.ts';
import { prepareTelemetry } from './telemetry.ts';

const BENCH_DIR = import.meta.dirname;
const REPO_DIR = join(BENCH_DIR, '..');
/** How long the gateway gets to answer 200 on /readyz. */
const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 100;
/**
 * The Node options `npm start` runs the gateway with (package.json `scripts.start`, the same as the
 * Dockerfile's CMD), so every gateway here runs as users run it.
 */
export const START_NODE_ARGS: readonly string[] = (() => {
  const pkg = JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')) as {
    scripts: { start: string };
  };
  const words = pkg.scripts.start.split(/\s+/);
  return words.slice(1, words.indexOf('bin/portcullis.js'));
})();
/** The public prefix of the bench service, shared by the reference proxy and the gateway. */
export const BASE_PATH = '/bench';

/** What a target's start() gets. */
export interface TargetContext {
  /** The shared upstream, e.g. `http://127.0.0.1:40123`. */
  upstreamUrl: string;
  /** CPU to pin the proxy to; null when running unpinned. */
  proxyCpu: number | null;
  /** CPU of the load side (upstream, load generator), for a target's helpers (Redis); null when unpinned. */
  loadCpu: number | null;
  /** A fresh directory this target may write its config into. */
  workDir: string;
}

/** A started target. */
export interface RunningTarget {
  /** The URL the load generator requests. */
  url: string;
  /** Method, body and headers of the load's requests. Default: a plain GET. */
  request?: LoadRequest;
  /** The proxy's processes: their CPU time is its cost, their death ends its run. Empty for `direct`. */
  proxies: Child[];
  /** Further processes of the proxy that this script did not start (the workers of `workers: N`): their CPU counts too. */
  cpuPids?: number[];
  stop(): Promise<void>;
}

/** What the load generator sends besides the URL. */
export interface LoadRequest {
  /** Default GET. */
  method?: string;
  /** JSON body text (sent with content-type application/json). Default: none. */
  body?: string;
  /** Extra request headers. Default: none. */
  headers?: Record<string, string>;
}

/** What a target's `prepare` adds to its config: helpers it started and how to load it. */
export interface PreparedTarget {
  /** More policy files, name → YAML text. Default: none. */
  policies?: Record<string, string>;
  /** More gateway.yaml text. Default: none. */
  gatewayYaml?: string;
  /** How the load calls it. Default: a plain GET. */
  request?: LoadRequest;
  /** Stops what prepare started (called after the gateway stopped, and when it failed to start). */
  stop(): Promise<void>;
}

/** One thing to benchmark. */
export interface Target {
  name: string;
  description: string;
  /** Starts the target; throws with a readable reason when it cannot, and the target is skipped. */
  start(context: TargetContext): Promise<RunningTarget>;
  /** Skipping it (e.g. nginx not installed) is a note, not a problem of the run. Default false. */
  optional?: boolean;
}

/** The upstream itself, no proxy: the ceiling the proxies are measured against. */
export const directTarget: Target = {
  name: 'direct',
  description: 'the upstream itself, no proxy',
  async start({ upstreamUrl }) {
    return { url: `${upstreamUrl}/hello`, proxies: [], stop: async () => {} };
  },
};

/**
 * A proxy run as one script of bench/ (`node <script> <upstreamUrl>`), which prints `{"port":n}`
 * once it listens and serves BASE_PATH + /hello.
 */
function scriptTarget(name: string, description: string, script: string): Target {
  return {
    name,
    description,
    async start({ upstreamUrl, proxyCpu }) {
      const child = startNode(name, [join(BENCH_DIR, script), upstreamUrl], proxyCpu);
      try {
        const { port } = await readJsonLine<{ port: number }>(child);
        return {
          url: `http://127.0.0.1:${port}${BASE_PATH}/hello`,
          proxies: [child],
          stop: () => stopChild(child),
        };
      } catch (err) {
        await stopChild(child);
        throw err;
      }
    },
  };
}

/** Plain Fastify + @fastify/http-proxy with default options (bench/reference.ts). */
export const referenceTarget: Target = scriptTarget(
  'reference',
  'Fastify + @fastify/http-proxy, default options',
  'reference.ts',
);

/** node:http + one undici Pool, nothing else (bench/plain-undici.ts): the floor for a Node proxy. */
export const plainUndiciTarget: Target = scriptTarget(
  'plain-undici',
  'plain node:http + undici Pool proxy, no framework',
  'plain-undici.ts',
);

/** Options of a Portcullis target: each combination is one entry in TARGETS. */
export interface PortcullisTargetOptions {
  /** Name in the table and in .bench/last.json. */
  name: string;
  /** Default: `portcullis gateway, no policies` or `portcullis gateway, with policies`. */
  description?: string;
  /** Files to write into policies/, name → YAML text. Default: none (no policies). */
  policies?: Record<string, string>;
  /** Extra top-level gateway.yaml text appended to the generated file. Default: none. */
  gatewayYaml?: string;
  /** Node options before the script (V8 flags). Default: those of `npm start` (START_NODE_ARGS). */
  nodeArgs?: string[];
  /** Path (and query) under the service loaded. Default `/hello`. */
  path?: string;
  /** Method, body and headers the load sends (a `prepare` result's request wins). Default: a plain GET. */
  request?: LoadRequest;
  /**
   * Runs before the gateway starts (e.g. starts a Redis, a JWKS server): what it returns is added
   * to the config and the load. Default: nothing.
   */
  prepare?: (context: TargetContext) => Promise<PreparedTarget>;
}

/** The Portcullis CLI (`bin/portcullis.js start`) with a generated config dir. */
export function portcullisTarget(options: PortcullisTargetOptions): Target {
  const policies = options.policies ?? {};
  const hasPolicies = Object.keys(policies).length > 0 || options.prepare !== undefined;
  return {
    name: options.name,
    description: options.description ?? `portcullis gateway, ${hasPolicies ? 'with' : 'no'} policies`,
    async start(context) {
      const { upstreamUrl, proxyCpu, workDir } = context;
      const prepared = options.prepare ? await options.prepare(context) : undefined;
      let child: Child | undefined;
      const stop = async () => {
        if (child) await stopChild(child);
        await prepared?.stop();
      };
      try {
        const [port, adminPort] = [await freePort(), await freePort()];
        await writePortcullisConfig(workDir, {
          port,
          adminPort,
          upstreamUrl,
          policies: { ...policies, ...prepared?.policies },
          extra: [options.gatewayYaml, prepared?.gatewayYaml].filter(Boolean).join('\n'),
        });
        // BENCH_CPU_PROF=<dir>: the gateway writes a V8 CPU profile there when it stops.
        const profile = process.env.BENCH_CPU_PROF
          ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]
          : [];
        child = startNode(
          options.name,
          [
            ...profile,
            ...(options.nodeArgs ?? START_NODE_ARGS),
            join(REPO_DIR, 'bin', 'portcullis.js'),
            'start',
            '--config',
            join(workDir, 'gateway.yaml'),
          ],
          proxyCpu,
        );
        await waitForReady(child, `http://127.0.0.1:${adminPort}/readyz`);
        return {
          url: `http://127.0.0.1:${port}${BASE_PATH}${options.path ?? '/hello'}`,
          request: prepared?.request ?? options.request,
          proxies: [child],
          cpuPids: await workerPids(`http://127.0.0.1:${adminPort}/readyz`),
          stop,
        };
      } catch (err) {
        await stop();
        throw err;
      }
    },
  };
}

/** What a browser's fetch() of a JSON API sends: the WAF inspects these headers and the 5 fields. */
const BROWSER_POST: LoadRequest = {
  method: 'POST',
  body: JSON.stringify({
    sku: 'KB-2041',
    quantity: 2,
    note: "Please leave it at the door, it's fine",
    email: 'jane.doe@example.com',
    giftWrap: false,
  }),
  headers: {
    'user-agent':
      'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    accept: 'application/json, text/plain, */*',
    'accept-language': 'en-GB,en;q=0.9',
    origin: 'https://shop.example.com',
    referer: 'https://shop.example.com/cart',
    'sec-fetch-mode': 'cors',
    'sec-fetch-site': 'same-site',
  },
};

/** What Chrome and Firefox send: the compress policy's default order picks br from it. */
const BROWSER_ACCEPT_ENCODING = 'gzip, deflate, br, zstd';

/**
 * Every target, in table order. `--only` selects by name. Gateways run with their defaults (log
 * level info: the access log is on, to stdout, read by the bench as a log shipper would).
 */
export const TARGETS: readonly Target[] = [
  directTarget,
  nginxTarget,
  plainUndiciTarget,
  referenceTarget,
  portcullisTarget({
    name: 'portcullis',
    description: 'portcullis gateway, defaults (access log on, to stdout), no policies',
  }),
  portcullisTarget({
    name: 'portcullis-nolog',
    description: 'portcullis with telemetry.accessLog: false',
    gatewayYaml: 'telemetry: { accessLog: false }',
  }),
  portcullisTarget({
    name: 'portcullis+policies',
    description:
      'portcullis, the full chain: auth.jwt (RS256) + rateLimit (Redis) + ipFilter + validate + waf',
    path: '/hello?name=bench',
    prepare: preparePolicies,
  }),
  portcullisTarget({
    name: 'portcullis-bearer',
    description: "portcullis+policies' exact request (query + Bearer token) without policies: its control",
    path: '/hello?name=bench',
    prepare: prepareSameRequest,
  }),
  portcullisTarget({
    name: 'portcullis-post',
    description: 'portcullis, no policies, POST /echo with a small JSON body from a browser',
    path: '/echo',
    request: BROWSER_POST,
  }),
  portcullisTarget({
    name: 'portcullis+waf',
    description: 'portcullis-post with the WAF on (paranoia 1, block)',
    path: '/echo',
    request: BROWSER_POST,
    policies: { 'waf.yaml': '- match: { service: bench }\n  waf: { mode: block, paranoia: 1 }\n' },
  }),
  portcullisTarget({
    name: 'portcullis+workers2',
    description: 'portcullis with workers: 2 (primary + 2 workers, all on the proxy CPU), no policies',
    gatewayYaml: 'workers: 2',
  }),
  portcullisTarget({
    name: 'portcullis-json10k',
    description: 'portcullis, no policies, GET of a 10 KB JSON body by a client accepting br/zstd/gzip',
    path: '/json10k',
    request: { headers: { 'accept-encoding': BROWSER_ACCEPT_ENCODING } },
  }),
  portcullisTarget({
    name: 'portcullis+compress',
    description: 'portcullis-json10k with `compress: {}` on the route (br, the default first choice)',
    path: '/json10k',
    request: { headers: { 'accept-encoding': BROWSER_ACCEPT_ENCODING } },
    policies: { 'compress.yaml': '- match: { service: bench }\n  compress: {}\n' },
  }),
  portcullisTarget({
    name: 'portcullis+cache',
    description:
      'portcullis-json10k with `cache: { ttl: 60s }` on the route (memory store): answers from the cache',
    path: '/json10k',
    request: { headers: { 'accept-encoding': BROWSER_ACCEPT_ENCODING } },
    policies: { 'cache.yaml': '- match: { service: bench }\n  cache: { ttl: 60s }\n' },
  }),
  portcullisTarget({
    name: 'portcullis+telemetry',
    description: 'portcullis, no policies, tracing on: 100% sampled, OTLP/HTTP to a local receiver',
    prepare: prepareTelemetry,
  }),
];

async function writePortcullisConfig(
  dir: string,
  config: {
    port: number;
    adminPort: number;
    upstreamUrl: string;
    policies: Record<string, string>;
    extra: string | undefined;
  },
): Promise<void> {
  await mkdir(join(dir, 'openapi'), { recursive: true });
  await mkdir(join(dir, 'policies'), { recursive: true });
  const gateway = [
    `listen: { http: { port: ${config.port}, host: 127.0.0.1 } }`,
    `admin: { port: ${config.adminPort}, host: 127.0.0.1 }`,
    'openapi: ./openapi',
    'policies: ./policies',
    'watch: false',
    config.extra ?? '',
  ].join('\n');
  await writeFile(join(dir, 'gateway.yaml'), gateway);
  await writeFile(join(dir, 'openapi', 'bench.yaml'), benchSpec(config.upstreamUrl));
  for (const [file, yaml] of Object.entries(config.policies))
    await writeFile(join(dir, 'policies', file), yaml);
}

function benchSpec(upstreamUrl: string): string {
  return `openapi: 3.1.0
info: { title: Bench, version: 1.0.0 }
x-portcullis:
  basePath: ${BASE_PATH}
  upstreams:
    - url: ${upstreamUrl}
paths:
  /hello:
    get:
      operationId: hello
      parameters:
        - { name: name, in: query, schema: { type: string, maxLength: 32, pattern: '^[a-z]+$' } }
      responses:
        '200': { description: 'A small JSON greeting' }
  /json10k:
    get:
      operationId: json10k
      responses:
        '200': { description: 'A 10 KB JSON list' }
  /echo:
    post:
      operationId: echo
      requestBody:
        content:
          application/json: { schema: { type: object } }
      responses:
        '200': { description: 'The request body, echoed' }
`;
}

/** The worker pids /readyz lists with `workers: N` (none for one process). */
async function workerPids(readyz: string): Promise<number[]> {
  const res = await fetch(readyz, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as { workers?: Array<{ pid: number }> };
  return (body.workers ?? []).map((w) => w.pid).filter((pid) => pid > 0);
}

/** Polls `url` until it answers 200 with the store ok; rejects when `child` exits first or after READY_TIMEOUT_MS. */
async function waitForReady(child: Child, url: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let exited: number | string | undefined;
  void child.exited.then((code) => {
    exited = code;
  });
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (exited !== undefined) {
      throw new Error(`${child.name} exited (${exited}) before it was ready:\n${child.outputTail()}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json().catch(() => ({}))) as { store?: { ok?: boolean; error?: string } };
      // A down store (Redis) does not make the gateway unready, but would measure a fallback.
      if (res.status === 200 && body.store?.ok !== false) return;
      last = res.status === 200 ? `store not ok (${body.store?.error})` : `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error(
    `${child.name}: ${url} not 200 after ${READY_TIMEOUT_MS} ms (${last}):\n${child.outputTail()}`,
  );
}

/** How long the example gateway idles before its RSS is read, ms. */
const EXAMPLE_SETTLE_MS = 2000;

/**
 * Idle resident memory (bytes) of `portcullis start` with the repository's example
 * configuration (./openapi, ./policies, defaults otherwise: what `npm start` runs), on free
 * loopback ports; null when it could not start (the reason is printed).
 */
export async function measureExampleIdle(): Promise<number | null> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_'))),
    PORTCULLIS_HTTP_PORT: String(port),
    PORTCULLIS_HTTP_HOST: '127.0.0.1',
    PORTCULLIS_ADMIN_PORT: String(adminPort),
    PORTCULLIS_ADMIN_HOST: '127.0.0.1',
  };
  const child = startNode(
    'example',
    [...START_NODE_ARGS, join(REPO_DIR, 'bin', 'portcullis.js'), 'start'],
    null,
    {
      cwd: REPO_DIR,
      env,
    },
  );
  try {
    await waitForReady(child, `http://127.0.0.1:${adminPort}/readyz`);
    await new Promise((r) => setTimeout(r, EXAMPLE_SETTLE_MS));
    return readMemory(child.pid)?.rss ?? null;
  } catch (err) {
    console.error(`\n*** example configuration: ${(err as Error).message}\n`);
    return null;
  } finally {
    await stopChild(child);
  }
}
