/**
 * `npm run bench:memory`: resident memory of the gateway per configured feature, each in its own
 * process: idle (1 s after it answered its first request) and peak (VmHWM after a short load of
 * `--duration` seconds at `--connections`), plus the example configuration idle. The table in
 * bench/README.md comes from here. Features are loaded only when configured (src/lazy.ts and the
 * dynamic imports in the policy kinds), so each line is what that feature costs.
 *
 * Flags: --duration <s> (default 3), --connections (default 50), --only <name,...>.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { preparePolicies, serveJwks, startRedisServer } from './policies.ts';
import { planPinning, readJsonLine, readMemory, startNode, stopAllChildren, stopChild } from './processes.ts';
import { measureExampleIdle, portcullisTarget, type Target } from './targets.ts';
import { prepareTelemetry } from './telemetry.ts';

const BENCH_DIR = import.meta.dirname;
const MB = 1024 * 1024;
const SETTLE_MS = 1000;

const FEATURES: Target[] = [
  portcullisTarget({ name: 'bare', description: 'no policies, access log on' }),
  portcullisTarget({
    name: 'tracing',
    description: 'telemetry.otlp, 100% sampled',
    prepare: prepareTelemetry,
  }),
  portcullisTarget({
    name: 'redis',
    description: 'state: redis (rate limits and sticky sessions shared)',
    async prepare({ loadCpu }) {
      const redis = await startRedisServer(loadCpu);
      return {
        gatewayYaml: `state: { redis: 'redis://127.0.0.1:${redis.port}' }`,
        policies: {
          'rl.yaml': '- match: { service: bench }\n  rateLimit: { limit: 1000000000, window: 1m }\n',
        },
        stop: () => stopChild(redis.child),
      };
    },
  }),
  portcullisTarget({
    name: 'jwt',
    description: 'auth.jwt, RS256 against a JWKS',
    async prepare() {
      const jwks = await serveJwks();
      return {
        policies: {
          'jwt.yaml': `- match: { service: bench }\n  auth:\n    jwt: { jwksUri: '${jwks.url}', issuer: 'https://issuer.bench.invalid', audience: portcullis-bench }\n`,
        },
        request: { headers: { authorization: `Bearer ${jwks.token}` } },
        stop: () => jwks.close(),
      };
    },
  }),
  portcullisTarget({
    name: 'validate',
    description: 'validate (the query parameter against the spec)',
    path: '/hello?name=bench',
    policies: { 'validate.yaml': '- match: { service: bench }\n  validate: {}\n' },
  }),
  portcullisTarget({
    name: 'waf',
    description: 'waf, paranoia 1',
    policies: { 'waf.yaml': '- match: { service: bench }\n  waf: { mode: block, paranoia: 1 }\n' },
  }),
  portcullisTarget({
    name: 'full chain',
    description: 'auth.jwt + rateLimit (Redis) + ipFilter + validate + waf',
    path: '/hello?name=bench',
    prepare: preparePolicies,
  }),
];

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    only: { type: 'string' },
  },
});
const only = values.only?.split(',').map((s) => s.trim());
const { pinning } = planPinning();
const root = await mkdtemp(join(tmpdir(), 'portcullis-memory-'));
try {
  const upstream = startNode('upstream', [join(BENCH_DIR, 'upstream.ts')], pinning?.loadCpu ?? null);
  const { port } = await readJsonLine<{ port: number }>(upstream);
  const rows: string[][] = [['feature', 'what', 'idle MB', 'peak MB']];
  for (const feature of FEATURES) {
    if (only && !only.includes(feature.name)) continue;
    const workDir = join(root, feature.name.replace(/\W/g, '-'));
    await mkdir(workDir, { recursive: true });
    try {
      const target = await feature.start({
        upstreamUrl: `http://127.0.0.1:${port}`,
        proxyCpu: pinning?.proxyCpu ?? null,
        loadCpu: pinning?.loadCpu ?? null,
        workDir,
      });
      try {
        const first = await fetch(target.url, { headers: target.request?.headers });
        await first.arrayBuffer();
        if (!first.ok) throw new Error(`${target.url} answered ${first.status}`);
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const pid = target.proxies[0]!.pid;
        const idle = readMemory(pid)?.rss ?? Number.NaN;
        const load = startNode(
          'load',
          [
            join(BENCH_DIR, 'load.ts'),
            '--url',
            target.url,
            '--connections',
            values.connections,
            '--warmup',
            '0',
            '--duration',
            values.duration,
            ...Object.entries(target.request?.headers ?? {}).flatMap(([n, v]) => ['--header', `${n}: ${v}`]),
          ],
          pinning?.loadCpu ?? null,
        );
        await readJsonLine(load, (Number(values.duration) + 30) * 1000);
        await stopChild(load);
        const peak = readMemory(pid)?.peak ?? Number.NaN;
        rows.push([feature.name, feature.description, (idle / MB).toFixed(0), (peak / MB).toFixed(0)]);
      } finally {
        await target.stop();
      }
    } catch (err) {
      rows.push([feature.name, `not measured: ${(err as Error).message.split('\n')[0]}`, '', '']);
    }
    console.log(rows.at(-1)!.join('  '));
  }
  if (!only || only.includes('example')) {
    const idle = await measureExampleIdle();
    rows.push([
      'example',
      '`npm start`: ./openapi, ./policies (mocks, apiKey)',
      idle === null ? '-' : (idle / MB).toFixed(0),
      '',
    ]);
  }
  console.log(`\nNode ${process.version}${pinning ? `, gateway pinned to CPU ${pinning.proxyCpu}` : ''}\n`);
  console.log(`| ${rows[0]!.join(' | ')} |\n|${rows[0]!.map(() => '---').join('|')}|`);
  for (const row of rows.slice(1)) console.log(`| ${row.join(' | ')} |`);
} finally {
  await stopAllChildren();
  await rm(root, { recursive: true, force: true });
}
