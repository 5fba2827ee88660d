/**
 * `npm run bench`: throughput, latency and CPU cost per request of Portcullis against a plain
 * Fastify proxy and against no proxy at all, all in front of the same upstream, in one bounded
 * run. See bench/README.md for how to read the output.
 *
 * Flags: --duration <s> per measured run (default 5), --rounds (default 3), --connections
 * (default 50), --warmup <s> before each measured run (default 1), --first-warmup <s> before a
 * target's first measured run (default 5: a fresh process is still compiling its hot paths and
 * filling its pools), --only <target,...>.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LoadResult } from './load.ts';
import {
  type Child,
  clockTicksPerSecond,
  hasExited,
  type Pinning,
  pinSelf,
  planPinning,
  readJsonLine,
  readMemory,
  startNode,
  stopAllChildren,
  stopChild,
} from './processes.ts';
import { BASE_PATH, measureExampleIdle, type RunningTarget, TARGETS, type Target } from './targets.ts';

const BENCH_DIR = import.meta.dirname;
const RESULT_FILE = join(BENCH_DIR, '..', '.bench', 'last.json');
/** A measured run may take this much longer than warm-up + duration before it counts as hung. */
const LOAD_SLACK_MS = 30_000;
/** Above this share of the proxy's CPU taken by other processes, a run is flagged as disturbed. */
const OTHER_LOAD_WARN_PCT = 10;
const RATIOS: ReadonlyArray<readonly [string, string]> = [
  ['portcullis', 'plain-undici'],
  ['portcullis', 'portcullis-nolog'],
  ['portcullis', 'nginx'],
  ['portcullis', 'reference'],
  ['portcullis', 'direct'],
  ['reference', 'direct'],
  ['portcullis+policies', 'portcullis'],
  ['portcullis+policies', 'portcullis-bearer'],
  ['portcullis-bearer', 'portcullis+policies'],
  ['portcullis+waf', 'portcullis-post'],
  ['portcullis+telemetry', 'portcullis'],
  ['portcullis+workers2', 'portcullis'],
  ['portcullis+compress', 'portcullis-json10k'],
  ['portcullis+cache', 'portcullis-json10k'],
];
/** Issue 3: with auth.jwt + rateLimit (Redis) + ipFilter + validate, at least this share of the same request's req/s without policies. */
const POLICIES_GOAL = 0.75;
/** Issue 5: the WAF (paranoia 1) on a small JSON POST costs at most 15% of the same POST's req/s. */
const WAF_GOAL = 0.85;
/** Issue 4: telemetry on (100% sampling, exporting to a local receiver) keeps at least this share of req/s. */
const TELEMETRY_GOAL = 0.85;
/** Issue 14: with defaults (access log on), CPU per request at most the plain undici proxy's... */
const DEFAULTS_CPU_GOAL = 1.0;
/** ...and at most 5% above the same gateway with the access log off. */
const ACCESS_LOG_CPU_GOAL = 1.05;
/** Issue 14: the full chain keeps at least this share of the bare gateway's req/s. */
const FULL_CHAIN_GOAL = 0.8;
/** Issue 14: resident memory of the gateway, bytes: idle with the example configuration, peak under the bench load. */
const IDLE_RSS_GOAL = 100 * 1024 * 1024;
const PEAK_RSS_GOAL = 150 * 1024 * 1024;
/** Targets also measured with one connection (the latency a single client sees), as `<name>@1conn`. */
const LATENCY_TARGETS = ['direct', 'nginx', 'plain-undici', 'portcullis'];
/** Settle time after a target started before its idle RSS is read, ms. */
const IDLE_SETTLE_MS = 1000;
/** Width of the target name column in round lines. */
const NAME_WIDTH = Math.max(12, ...TARGETS.map((t) => t.name.length + 6));

interface Options {
  duration: number;
  rounds: number;
  connections: number;
  warmup: number;
  firstWarmup: number;
  only: string[] | null;
}

/** One measured run of one target, as stored in .bench/last.json. */
interface RoundResult {
  round: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU time of the proxy process per request, µs; null for `direct` or when unreadable. */
  cpuUsPerReq: number | null;
  /** CPU time of the upstream per request, µs: the same for every target unless a proxy wastes connections. */
  upstreamCpuUsPerReq: number | null;
  /** Proxy CPU time / wall time, %: near 100 means the proxy was the bottleneck. Null for `direct`. */
  proxyCpuPct: number | null;
  /** Share of the proxy's CPU used by other processes during the run, %; null when unpinned. */
  otherLoadPct: number | null;
  /** Bytes on the wire per response (status line, headers, body). */
  bytesPerResp: number | null;
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  errorCodes: Record<string, number>;
}

interface Median {
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerReq: number | null;
  upstreamCpuUsPerReq: number | null;
  bytesPerResp: number | null;
}

interface TargetReport {
  name: string;
  description: string;
  /** Why the target was not measured; absent when it was. */
  skipped?: string;
  /** Why the target stopped being measured part-way (its process exited); absent when it did not. */
  died?: string;
  /** Skipped because it is optional (e.g. nginx not installed): not a problem of the run. */
  optional?: boolean;
  /** Resident memory of the proxy processes, bytes: after start (idle) and the highest reached (peak, read at the end). */
  memory?: { idle: number; peak: number };
  median?: Median;
  totals?: { requests: number; non2xx: number; errors: number; timeouts: number };
  rounds: RoundResult[];
}

const USAGE = `Usage: npm run bench -- [--duration 5] [--rounds 3] [--connections 50] [--warmup 1] [--first-warmup 5] [--only ${TARGETS.map((t) => t.name).join(',')}]`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '1' },
      'first-warmup': { type: 'string', default: '5' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const positive = (name: string, text: string, allowZero = false): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero)) {
      throw new UsageError(
        `--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${text}`,
      );
    }
    return n;
  };
  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = only?.filter((name) => !TARGETS.some((t) => t.name === name)) ?? [];
  if (unknown.length > 0) throw new UsageError(`--only: unknown target(s) ${unknown.join(', ')}`);
  return {
    duration: positive('duration', values.duration),
    rounds: Math.floor(positive('rounds', values.rounds)),
    connections: Math.floor(positive('connections', values.connections)),
    warmup: positive('warmup', values.warmup, true),
    firstWarmup: positive('first-warmup', values['first-warmup'], true),
    only: only ?? null,
  };
}

class UsageError extends Error {}

/** The temp dir holding generated gateway configs; removed on exit and on Ctrl-C. */
let workRoot: string | undefined;

async function cleanUp(): Promise<void> {
  await stopAllChildren();
  if (workRoot) await rm(workRoot, { recursive: true, force: true });
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const targets = TARGETS.filter((t) => options.only === null || options.only.includes(t.name));
  const { pinning, reason } = planPinning();
  if (pinning) {
    pinSelf(pinning.loadCpu);
    console.log(
      `Pinning: upstream, load generator and this script on CPU ${pinning.loadCpu}; proxy under test alone on CPU ${pinning.proxyCpu}.`,
    );
  } else {
    console.log(`Pinning: OFF (${reason}); figures are noisier and include CPU contention.`);
  }
  const clkTck = clockTicksPerSecond();
  const loadCpu = pinning?.loadCpu ?? null;
  workRoot = await mkdtemp(join(tmpdir(), 'portcullis-bench-'));
  const root = workRoot;
  const running = new Map<string, RunningTarget>();
  const reports = new Map<string, TargetReport>(
    targets.map((t) => [t.name, { name: t.name, description: t.description, rounds: [] }]),
  );
  for (const t of targets) {
    if (!LATENCY_TARGETS.includes(t.name)) continue;
    const name = `${t.name}@1conn`;
    reports.set(name, { name, description: `${t.name}, 1 connection`, rounds: [] });
  }

  try {
    const upstream = startNode('upstream', [join(BENCH_DIR, 'upstream.ts')], loadCpu);
    const { port } = await readJsonLine<{ port: number }>(upstream);
    const upstreamUrl = `http://127.0.0.1:${port}`;

    for (const target of targets) {
      const report = reports.get(target.name)!;
      try {
        const workDir = join(root, target.name);
        await mkdir(workDir, { recursive: true });
        const started = await target.start({
          upstreamUrl,
          proxyCpu: pinning?.proxyCpu ?? null,
          loadCpu,
          workDir,
        });
        running.set(target.name, started);
        await preflight(target, started);
        await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
        const idle = sumMemory(started, 'rss');
        if (idle !== null) report.memory = { idle, peak: idle };
      } catch (err) {
        report.skipped = (err as Error).message;
        if (target.optional) {
          report.optional = true;
          console.log(`(${target.name} not measured: ${report.skipped.trim()})`);
        } else console.error(`\n*** SKIPPED ${target.name}: ${report.skipped.trim()}\n`);
        await running.get(target.name)?.stop();
        running.delete(target.name);
      }
    }
    const measured = targets.filter((t) => running.has(t.name));
    for (const t of targets) if (!running.has(t.name)) reports.delete(`${t.name}@1conn`);
    if (measured.length === 0) throw new Error('no target could be started');

    const perRun = options.warmup + options.duration;
    const latencyTargets = measured.filter((t) => LATENCY_TARGETS.includes(t.name));
    const estimate = Math.ceil(
      options.rounds * (measured.length + latencyTargets.length) * (perRun + 0.5) +
        measured.length * (options.firstWarmup - options.warmup),
    );
    console.log(
      `Load: GET ${BASE_PATH}/hello (direct: /hello; portcullis+policies: ?name=bench with a Bearer token; portcullis-post, portcullis+waf: POST /bench/echo with a small JSON body), ${options.connections} connections, ${options.warmup} s warm-up (${options.firstWarmup} s in a target's first round) + ${options.duration} s measured, ${options.rounds} round(s), ~${estimate} s.\n`,
    );
    for (let round = 1; round <= options.rounds; round++) {
      // Rotating the order keeps any drift over time (thermal, page cache) off a single target.
      const order = measured.map((_, i) => measured[(i + round - 1) % measured.length]!);
      for (const target of order) {
        const report = reports.get(target.name)!;
        if (report.died) continue;
        const proxyCpu = pinning?.proxyCpu ?? null;
        const warmup = round === 1 ? options.firstWarmup : options.warmup;
        const result = await measure(running.get(target.name)!, upstream, options, warmup, loadCpu, proxyCpu);
        const roundResult = toRoundResult(round, result, running.get(target.name)!, upstream, clkTck);
        report.rounds.push(roundResult);
        console.log(
          `round ${round}/${options.rounds}  ${target.name.padEnd(NAME_WIDTH)} ${formatRound(roundResult)}`,
        );
        const dead = running.get(target.name)!.proxies.find(hasExited);
        if (dead) {
          report.died = `${dead.name} exited (code ${dead.process.exitCode ?? dead.process.signalCode}) during round ${round}`;
          console.error(
            `\n*** ${target.name} DIED: ${report.died}; no further rounds. Its last output:\n${dead.outputTail()}\n`,
          );
        }
      }
      // The latency one client sees: one connection, so no queueing in the proxy.
      for (const target of latencyTargets) {
        if (reports.get(target.name)!.died) continue;
        const report = reports.get(`${target.name}@1conn`)!;
        const started = running.get(target.name)!;
        const proxyCpu = pinning?.proxyCpu ?? null;
        const single = { ...options, connections: 1 };
        const result = await measure(started, upstream, single, options.warmup, loadCpu, proxyCpu);
        const roundResult = toRoundResult(round, result, started, upstream, clkTck);
        report.rounds.push(roundResult);
        console.log(
          `round ${round}/${options.rounds}  ${report.name.padEnd(NAME_WIDTH)} ${formatRound(roundResult)}`,
        );
      }
    }
    for (const target of measured) {
      const report = reports.get(target.name)!;
      const peak = sumMemory(running.get(target.name)!, 'peak');
      if (report.memory && peak !== null) report.memory.peak = peak;
    }
    const exampleIdle = targets.some((t) => t.name === 'portcullis') ? await measureExampleIdle() : null;

    for (const report of reports.values()) summarise(report);
    const ratios = computeRatios([...reports.values()]);
    printTable([...reports.values()], ratios);
    const policies = ratios['portcullis+policies/portcullis']?.reqPerSec;
    if (policies != null) {
      console.log(`\nportcullis+policies / portcullis (plain GET) req/s = ${fmt(policies, 2)}`);
    }
    const goals: Array<[string, string, string, number]> = [
      ['portcullis+policies', 'portcullis-bearer', 'issue-3', POLICIES_GOAL],
      ['portcullis+waf', 'portcullis-post', 'issue-5', WAF_GOAL],
      ['portcullis+telemetry', 'portcullis', 'issue-4', TELEMETRY_GOAL],
    ];
    for (const [a, b, issue, goal] of goals) {
      const r = ratios[`${a}/${b}`]?.reqPerSec;
      if (r == null) continue;
      const paired = pairedRatios(reports.get(a), reports.get(b));
      const perRound =
        paired.length > 1
          ? `; per round ${paired.map((x) => fmt(x, 2)).join(' ')}, median ${fmt(median(paired), 2)}`
          : '';
      console.log(
        `${a} / ${b} req/s = ${fmt(r, 2)}${perRound} (${issue} goal >= ${goal}: ${r >= goal ? 'met' : 'NOT met'})`,
      );
    }
    printLeanGoals(reports, ratios, exampleIdle);
    const failed = printProblems([...reports.values()]);
    await writeReport({
      options,
      pinning,
      pinningNote: reason,
      clkTck,
      reports: [...reports.values()],
      ratios,
      exampleIdleRss: exampleIdle,
    });
    console.log(`\nWritten: ${RESULT_FILE}`);
    return failed ? 1 : 0;
  } finally {
    await Promise.all([...running.values()].map((t) => t.stop()));
    await cleanUp();
  }
}

/** One request before measuring, so a target that answers wrongly is visible at once. */
async function preflight(target: Target, running: RunningTarget): Promise<void> {
  const res = await fetch(running.url, {
    method: running.request?.method ?? 'GET',
    headers: {
      ...(running.request?.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...running.request?.headers,
    },
    body: running.request?.body,
    signal: AbortSignal.timeout(5000),
  });
  const body = await res.text();
  if (res.status < 200 || res.status >= 300) {
    console.error(
      `\n*** ${target.name}: GET ${running.url} answered ${res.status} before the run: ${body.slice(0, 300)}\n`,
    );
  }
}

async function measure(
  target: RunningTarget,
  upstream: Child,
  options: Options,
  warmup: number,
  loadCpu: number | null,
  proxyCpu: number | null,
) {
  const args = [
    join(BENCH_DIR, 'load.ts'),
    '--url',
    target.url,
    '--connections',
    String(options.connections),
    '--warmup',
    String(warmup),
    '--duration',
    String(options.duration),
    ...(target.request?.method ? ['--method', target.request.method] : []),
    ...(target.request?.body === undefined ? [] : ['--body', target.request.body]),
    ...Object.entries(target.request?.headers ?? {}).flatMap(([name, value]) => [
      '--header',
      `${name}: ${value}`,
    ]),
    ...[...target.proxies.map((c) => c.pid), ...(target.cpuPids ?? []), upstream.pid].flatMap((pid) => [
      '--cpu-pid',
      String(pid),
    ]),
    ...(proxyCpu === null || target.proxies.length === 0 ? [] : ['--core', String(proxyCpu)]),
  ];
  const load = startNode('load', args, loadCpu);
  try {
    return await readJsonLine<LoadResult>(load, (warmup + options.duration) * 1000 + LOAD_SLACK_MS);
  } finally {
    await stopChild(load);
  }
}

function toRoundResult(
  round: number,
  result: LoadResult,
  target: RunningTarget,
  upstream: Child,
  clkTck: number,
): RoundResult {
  const ticksOf = (pids: number[]): number | null => {
    if (pids.length === 0) return null;
    let ticks = 0;
    for (const pid of pids) {
      const t = result.cpuTicks[String(pid)];
      if (t == null) return null;
      ticks += t;
    }
    return ticks;
  };
  const usPerReq = (pids: number[]): number | null => {
    const ticks = ticksOf(pids);
    return ticks === null || result.requests === 0 ? null : ((ticks / clkTck) * 1e6) / result.requests;
  };
  const proxyPids = [...target.proxies.map((c) => c.pid), ...(target.cpuPids ?? [])];
  const proxyTicks = ticksOf(proxyPids);
  const core = result.core;
  return {
    round,
    reqPerSec: result.durationSec > 0 ? result.requests / result.durationSec : 0,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    cpuUsPerReq: usPerReq(proxyPids),
    upstreamCpuUsPerReq: usPerReq([upstream.pid]),
    proxyCpuPct:
      proxyTicks === null || result.durationSec === 0
        ? null
        : (100 * proxyTicks) / (result.durationSec * clkTck),
    otherLoadPct:
      proxyTicks === null || core === null || core.total === 0
        ? null
        : Math.max(0, (100 * (core.busy - proxyTicks)) / core.total),
    bytesPerResp: result.requests === 0 ? null : result.bytes / result.requests,
    requests: result.requests,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: result.statusCodes,
    errorCodes: result.errorCodes,
  };
}

function summarise(report: TargetReport): void {
  if (report.rounds.length === 0) return;
  const pick = (f: (r: RoundResult) => number | null) => median(report.rounds.map(f));
  report.median = {
    reqPerSec: pick((r) => r.reqPerSec)!,
    p50Ms: pick((r) => r.p50Ms)!,
    p99Ms: pick((r) => r.p99Ms)!,
    cpuUsPerReq: pick((r) => r.cpuUsPerReq),
    upstreamCpuUsPerReq: pick((r) => r.upstreamCpuUsPerReq),
    bytesPerResp: pick((r) => r.bytesPerResp),
  };
  const sum = (f: (r: RoundResult) => number) => report.rounds.reduce((acc, r) => acc + f(r), 0);
  report.totals = {
    requests: sum((r) => r.requests),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
  };
}

/** Median of the values, null when any is null (a metric is either measured every round or not at all). */
function median(values: Array<number | null>): number | null {
  if (values.length === 0 || values.some((v) => v === null)) return null;
  const sorted = (values as number[]).toSorted((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

type Ratios = Record<
  string,
  { reqPerSec: number | null; p50Ms: number | null; p99Ms: number | null; cpuUsPerReq: number | null }
>;

/** Ratios between medians; a target with any error or non-2xx takes part in none (its figures are not comparable). */
function computeRatios(reports: TargetReport[]): Ratios {
  const clean = reports.filter((r) => r.median && r.totals && r.totals.errors + r.totals.non2xx === 0);
  const byName = new Map(clean.map((r) => [r.name, r.median!]));
  const ratios: Ratios = {};
  for (const [a, b] of RATIOS) {
    const x = byName.get(a);
    const y = byName.get(b);
    if (!x || !y) continue;
    const div = (p: number | null, q: number | null) => (p === null || q === null || q === 0 ? null : p / q);
    ratios[`${a}/${b}`] = {
      reqPerSec: div(x.reqPerSec, y.reqPerSec),
      p50Ms: div(x.p50Ms, y.p50Ms),
      p99Ms: div(x.p99Ms, y.p99Ms),
      cpuUsPerReq: div(x.cpuUsPerReq, y.cpuUsPerReq),
    };
  }
  return ratios;
}

/**
 * req/s of `a` over `b` round by round: each round runs both back to back, so these ratios are
 * free of the drift between rounds that the ratio of medians still carries.
 */
function pairedRatios(
  a: TargetReport | undefined,
  b: TargetReport | undefined,
  metric: (r: RoundResult) => number | null = (r) => r.reqPerSec,
): number[] {
  if (!a || !b) return [];
  const out: number[] = [];
  for (const ra of a.rounds) {
    const rb = b.rounds.find((r) => r.round === ra.round);
    if (!rb || ra.errors + ra.non2xx + rb.errors + rb.non2xx !== 0) continue;
    const x = metric(ra);
    const y = metric(rb);
    if (x !== null && y !== null && y > 0) out.push(x / y);
  }
  return out;
}

/** Sum of the proxy processes' VmRSS or VmHWM, bytes; null for `direct` or when unreadable. */
function sumMemory(target: RunningTarget, field: 'rss' | 'peak'): number | null {
  if (target.proxies.length === 0) return null;
  let sum = 0;
  for (const child of target.proxies) {
    const memory = readMemory(child.pid);
    if (memory === null) return null;
    sum += memory[field];
  }
  return sum;
}

const MB = 1024 * 1024;

/**
 * Issue 14's acceptance lines: each ratio of medians with, where both targets ran every round,
 * the per-round paired ratios and their median (the figure to trust on a noisy machine).
 */
function printLeanGoals(
  reports: Map<string, TargetReport>,
  ratios: Ratios,
  exampleIdle: number | null,
): void {
  const lines: string[] = [];
  const paired = (a: string, b: string, metric: (r: RoundResult) => number | null) => {
    const values = pairedRatios(reports.get(a), reports.get(b), metric);
    return values.length > 1
      ? `; per round ${values.map((x) => fmt(x, 2)).join(' ')}, median ${fmt(median(values), 2)}`
      : '';
  };
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const cpu = (r: RoundResult) => r.cpuUsPerReq;
  const p99 = (r: RoundResult) => r.p99Ms;
  const ratioLine = (
    a: string,
    b: string,
    label: string,
    key: 'cpuUsPerReq' | 'p99Ms' | 'reqPerSec',
    metric: (r: RoundResult) => number | null,
    goal: number,
    atMost: boolean,
  ) => {
    const r = ratios[`${a}/${b}`]?.[key];
    if (r == null) return;
    const ok = atMost ? r <= goal : r >= goal;
    lines.push(
      `${a} / ${b} ${label} = ${fmt(r, 2)}${paired(a, b, metric)} (goal ${atMost ? '<=' : '>='} ${goal}: ${verdict(ok)})`,
    );
  };
  ratioLine('portcullis', 'plain-undici', 'CPU/req', 'cpuUsPerReq', cpu, DEFAULTS_CPU_GOAL, true);
  ratioLine('portcullis', 'portcullis-nolog', 'CPU/req', 'cpuUsPerReq', cpu, ACCESS_LOG_CPU_GOAL, true);
  ratioLine('portcullis', 'plain-undici', 'p99', 'p99Ms', p99, 1, true);
  // Added latency at one connection: each proxy's p50 minus the upstream's own (direct), paired per round.
  const added = (name: string) => {
    const proxy = reports.get(`${name}@1conn`);
    const direct = reports.get('direct@1conn');
    if (!proxy?.median || !direct?.median) return null;
    return proxy.median.p50Ms - direct.median.p50Ms;
  };
  const ours = added('portcullis');
  const floor = added('plain-undici');
  if (ours !== null && floor !== null) {
    const perRound: number[] = [];
    for (const r of reports.get('portcullis@1conn')!.rounds) {
      const d = reports.get('direct@1conn')!.rounds.find((x) => x.round === r.round);
      const u = reports.get('plain-undici@1conn')!.rounds.find((x) => x.round === r.round);
      if (d && u && u.p50Ms - d.p50Ms > 0) perRound.push((r.p50Ms - d.p50Ms) / (u.p50Ms - d.p50Ms));
    }
    const nginx = added('nginx');
    lines.push(
      `added p50 at 1 connection: portcullis ${fmt(ours * 1000, 0)} µs, plain-undici ${fmt(floor * 1000, 0)} µs${nginx === null ? '' : `, nginx ${fmt(nginx * 1000, 0)} µs`}; ratio ${fmt(ours / floor, 2)}${perRound.length > 1 ? `; per round ${perRound.map((x) => fmt(x, 2)).join(' ')}, median ${fmt(median(perRound), 2)}` : ''} (goal <= 1: ${verdict(ours <= floor)})`,
    );
  }
  const memory = reports.get('portcullis')?.memory;
  if (exampleIdle !== null)
    lines.push(
      `idle RSS, example configuration (./openapi, ./policies): ${fmt(exampleIdle / MB, 0)} MB (goal <= ${IDLE_RSS_GOAL / MB}: ${verdict(exampleIdle <= IDLE_RSS_GOAL)})`,
    );
  if (memory)
    lines.push(
      `portcullis RSS idle ${fmt(memory.idle / MB, 0)} MB, peak under load ${fmt(memory.peak / MB, 0)} MB (goal peak <= ${PEAK_RSS_GOAL / MB}: ${verdict(memory.peak <= PEAK_RSS_GOAL)})`,
    );
  ratioLine(
    'portcullis+policies',
    'portcullis-bearer',
    'req/s (full chain vs bare)',
    'reqPerSec',
    (r) => r.reqPerSec,
    FULL_CHAIN_GOAL,
    false,
  );
  // The same goal from CPU per request (bare / full chain: the share of its throughput the full
  // chain keeps once the proxy's CPU is the limit); less disturbed by other load than req/s.
  const chainCpu = ratios['portcullis-bearer/portcullis+policies']?.cpuUsPerReq;
  if (chainCpu != null) {
    const perRound = paired('portcullis-bearer', 'portcullis+policies', cpu);
    lines.push(
      `portcullis-bearer / portcullis+policies CPU/req (full chain's share of bare throughput, CPU-bound) = ${fmt(chainCpu, 2)}${perRound} (goal >= ${FULL_CHAIN_GOAL}: ${verdict(chainCpu >= FULL_CHAIN_GOAL)})`,
    );
  }
  if (lines.length === 0) return;
  console.log('\nIssue 14 (lean and fast with the defaults on):');
  for (const line of lines) console.log(`  ${line}`);
}

function formatRound(r: RoundResult): string {
  const problems = r.non2xx + r.errors > 0 ? `  !! ${r.non2xx} non-2xx, ${r.errors} errors` : '';
  const cpu =
    r.cpuUsPerReq === null ? '' : `  cpu ${fmt(r.cpuUsPerReq, 1)} µs/req (${fmt(r.proxyCpuPct, 0)}% busy)`;
  const other =
    r.otherLoadPct !== null && r.otherLoadPct > OTHER_LOAD_WARN_PCT
      ? `  ! other processes took ${fmt(r.otherLoadPct, 0)}% of the proxy's CPU`
      : '';
  return `${fmt(r.reqPerSec, 0).padStart(8)} req/s  p50 ${fmt(r.p50Ms, 2)} ms  p99 ${fmt(r.p99Ms, 2)} ms${cpu}${other}${problems}`;
}

function fmt(n: number | null | undefined, digits: number): string {
  return n === null || n === undefined ? '-' : n.toFixed(digits);
}

function printTable(reports: TargetReport[], ratios: Ratios): void {
  const header = [
    'target',
    'req/s',
    'p50 ms',
    'p99 ms',
    'CPU µs/req',
    'upstream µs/req',
    'bytes/resp',
    'RSS idle→peak MB',
    'errors',
  ];
  const rows = reports.map((r) => {
    if (!r.median || !r.totals) return [r.name, 'SKIPPED', '', '', '', '', '', '', ''];
    const problems = r.totals.non2xx + r.totals.errors;
    return [
      r.name,
      fmt(r.median.reqPerSec, 0),
      fmt(r.median.p50Ms, 3),
      fmt(r.median.p99Ms, 2),
      fmt(r.median.cpuUsPerReq, 1),
      fmt(r.median.upstreamCpuUsPerReq, 1),
      fmt(r.median.bytesPerResp, 0),
      r.memory ? `${fmt(r.memory.idle / MB, 0)}→${fmt(r.memory.peak / MB, 0)}` : '',
      problems === 0 ? '0' : `${r.totals.non2xx} non-2xx, ${r.totals.errors} err !!`,
    ];
  });
  console.log(`\nMedian over rounds (errors: total over rounds)\n`);
  printColumns([header, ...rows]);
  const ratioRows = Object.entries(ratios).map(([name, r]) => [
    name,
    fmt(r.reqPerSec, 2),
    fmt(r.p50Ms, 2),
    fmt(r.p99Ms, 2),
    fmt(r.cpuUsPerReq, 2),
  ]);
  if (ratioRows.length > 0) {
    console.log(
      '\nRatios of medians, targets with errors left out (req/s: higher is better for the first; latency, CPU: lower)\n',
    );
    printColumns([['ratio', 'req/s', 'p50', 'p99', 'CPU/req'], ...ratioRows]);
  }
}

function printColumns(rows: string[][]): void {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? '').length)));
  for (const row of rows) {
    console.log(
      row
        .map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!)))
        .join('  '),
    );
  }
}

/** Prints every run with non-2xx responses or errors, and skipped targets; true when there were any errors. */
function printProblems(reports: TargetReport[]): boolean {
  const lines: string[] = [];
  for (const report of reports) {
    if (report.died) lines.push(`${report.name}: ${report.died} (output above)`);
    if (report.skipped && !report.optional)
      lines.push(`${report.name}: SKIPPED — ${report.skipped.split('\n')[0]} (output above)`);
    for (const r of report.rounds) {
      if (r.non2xx + r.errors === 0) continue;
      lines.push(
        `${report.name} round ${r.round}: ${r.non2xx} non-2xx, ${r.errors} errors (${r.timeouts} timeouts); status codes ${JSON.stringify(r.statusCodes)}, errors ${JSON.stringify(r.errorCodes)}`,
      );
    }
  }
  const disturbed = reports.flatMap((report) =>
    report.rounds
      .filter((r) => r.otherLoadPct !== null && r.otherLoadPct > OTHER_LOAD_WARN_PCT)
      .map((r) => `${report.name} round ${r.round} (${fmt(r.otherLoadPct, 0)}%)`),
  );
  if (disturbed.length > 0) {
    console.error(
      `\n! Other processes used more than ${OTHER_LOAD_WARN_PCT}% of the proxy's CPU during: ${disturbed.join(', ')}.\n! Those req/s and latency figures understate the proxy; CPU µs/req is the least affected figure.`,
    );
  }
  if (lines.length === 0) return false;
  console.error(
    `\n${'!'.repeat(72)}\n!! PROBLEMS — the figures above are not a clean measurement\n${'!'.repeat(72)}`,
  );
  for (const line of lines) console.error(`!! ${line}`);
  return reports.some((r) => r.rounds.some((x) => x.non2xx + x.errors > 0));
}

async function writeReport(report: {
  options: Options;
  pinning: Pinning | null;
  pinningNote: string;
  clkTck: number;
  reports: TargetReport[];
  ratios: Ratios;
  exampleIdleRss: number | null;
}): Promise<void> {
  await mkdir(join(RESULT_FILE, '..'), { recursive: true });
  const json = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    request: `GET ${BASE_PATH}/hello`,
    options: report.options,
    pinning: report.pinning,
    ...(report.pinning ? {} : { pinningNote: report.pinningNote }),
    clkTck: report.clkTck,
    targets: report.reports,
    ratios: report.ratios,
    exampleIdleRss: report.exampleIdleRss,
  };
  await writeFile(RESULT_FILE, `${JSON.stringify(json, null, 2)}\n`);
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping every child process…`);
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

try {
  process.exitCode = await main();
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n${USAGE}`);
    process.exitCode = 2;
  } else if (!interrupted) {
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
  await cleanUp();
}
