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
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { type Child, readJsonLine, startNode, stopChild } from './processes.ts';

const BENCH_DIR = import.meta.dirname;
const REPO_DIR = join(BENCH_DIR, '..');
/** How long the gateway gets to answer 200 on /readyz. */
const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 100;
/** The public prefix of the bench service, shared by the reference proxy and the gateway. */
export const BASE_PATH = '/bench';

/** What a target's start() gets. */
export interface TargetContext {
  /** The shared upstream, e.g. `http://127.0.0.1:40123`. */
  upstreamUrl: string;
  /** CPU to pin the proxy to; null when running unpinned. */
  proxyCpu: number | null;
  /** A fresh directory this target may write its config into. */
  workDir: string;
}

/** A started target. */
export interface RunningTarget {
  /** The URL the load generator requests. */
  url: string;
  /** The proxy's processes: their CPU time is its cost, their death ends its run. Empty for `direct`. */
  proxies: Child[];
  stop(): Promise<void>;
}

/** One thing to benchmark. */
export interface Target {
  name: string;
  description: string;
  /** Starts the target; throws with a readable reason when it cannot, and the target is skipped. */
  start(context: TargetContext): Promise<RunningTarget>;
}

/** The upstream itself, no proxy: the ceiling the proxies are measured against. */
export const directTarget: Target = {
  name: 'direct',
  description: 'the upstream itself, no proxy',
  async start({ upstreamUrl }) {
    return { url: `${upstreamUrl}/hello`, proxies: [], stop: async () => {} };
  },
};

/** Plain Fastify + @fastify/http-proxy with default options (bench/reference.ts). */
export const referenceTarget: Target = {
  name: 'reference',
  description: 'Fastify + @fastify/http-proxy, default options',
  async start({ upstreamUrl, proxyCpu }) {
    const child = startNode('reference', [join(BENCH_DIR, 'reference.ts'), upstreamUrl], proxyCpu);
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
}

/** The Portcullis CLI (`bin/portcullis.js start`) with a generated config dir. */
export function portcullisTarget(options: PortcullisTargetOptions): Target {
  const policies = options.policies ?? {};
  const hasPolicies = Object.keys(policies).length > 0;
  return {
    name: options.name,
    description: options.description ?? `portcullis gateway, ${hasPolicies ? 'with' : 'no'} policies`,
    async start({ upstreamUrl, proxyCpu, workDir }) {
      const [port, adminPort] = [await freePort(), await freePort()];
      await writePortcullisConfig(workDir, {
        port,
        adminPort,
        upstreamUrl,
        policies,
        extra: options.gatewayYaml,
      });
      const child = startNode(
        options.name,
        [join(REPO_DIR, 'bin', 'portcullis.js'), 'start', '--config', join(workDir, 'gateway.yaml')],
        proxyCpu,
      );
      try {
        await waitForReady(child, `http://127.0.0.1:${adminPort}/readyz`);
      } catch (err) {
        await stopChild(child);
        throw err;
      }
      return {
        url: `http://127.0.0.1:${port}${BASE_PATH}/hello`,
        proxies: [child],
        stop: () => stopChild(child),
      };
    },
  };
}

/**
 * Every target, in table order. `--only` selects by name. Future entries (portcullis with
 * policies, telemetry on, WAF on) are each one portcullisTarget({...}) line here.
 */
export const TARGETS: readonly Target[] = [
  directTarget,
  referenceTarget,
  portcullisTarget({ name: 'portcullis' }),
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
    'logLevel: warn',
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
      responses:
        '200': { description: 'A small JSON greeting' }
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

/** Polls `url` until it answers 200; rejects when `child` exits first or after READY_TIMEOUT_MS. */
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
      await res.body?.cancel();
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error(
    `${child.name}: ${url} not 200 after ${READY_TIMEOUT_MS} ms (${last}):\n${child.outputTail()}`,
  );
}

/** A port that was free a moment ago: bind port 0, read it, close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
