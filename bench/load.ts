/**
 * The load generator: runs autocannon against one URL (a warm-up, then the measured run) and
 * prints one JSON line, a LoadResult. Run by run.ts in its own process, pinned to the load CPU,
 * so the generator never competes with the proxy under test.
 *
 * Usage: node bench/load.ts --url <url> [--connections 50] [--warmup 1] [--duration 5]
 *                           [--method GET] [--body <text>] [--header 'name: value']...
 *                           [--cpu-pid <pid>]... [--core <cpu>]
 *
 * The CPU time of every --cpu-pid, and the busy time of CPU --core, are read right before and
 * right after the measured run, from here rather than from the orchestrator, so the window is
 * exactly the measured one.
 */
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { type CoreTicks, readCoreTicks, readCpuTicks } from './processes.ts';

/** What one measured run produced; printed as a single JSON line. */
export interface LoadResult {
  /** Completed requests in the measured window (any status). */
  requests: number;
  /** Length of the measured window, seconds (autocannon's, rounded to 10 ms). */
  durationSec: number;
  /** Latency percentiles over every response, ms, with µs resolution. */
  p50Ms: number;
  p99Ms: number;
  /** Bytes received in the measured window (status line, headers and body, as on the wire). */
  bytes: number;
  /** Responses whose status was not 2xx. */
  non2xx: number;
  /** Connection errors and timeouts (timeouts are also counted here). */
  errors: number;
  timeouts: number;
  /** Count per status code, e.g. `{ "200": 51234 }`. */
  statusCodes: Record<string, number>;
  /** Count per error code or message, e.g. `{ "ECONNREFUSED": 12 }`. */
  errorCodes: Record<string, number>;
  /** CPU ticks used during the measured window per --cpu-pid; null when it could not be read. */
  cpuTicks: Record<string, number | null>;
  /** Busy and total ticks of CPU --core during the measured window; null without --core. */
  core: CoreTicks | null;
}

const INITIAL_SAMPLES = 1 << 18;

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '1' },
    duration: { type: 'string', default: '5' },
    method: { type: 'string', default: 'GET' },
    body: { type: 'string' },
    header: { type: 'string', multiple: true, default: [] },
    'cpu-pid': { type: 'string', multiple: true, default: [] },
    core: { type: 'string' },
  },
});
if (!values.url) {
  console.error('load.ts: --url is required');
  process.exit(2);
}

const headers: Record<string, string> = {};
if (values.body !== undefined) headers['content-type'] = 'application/json';
for (const line of values.header) {
  const colon = line.indexOf(':');
  if (colon <= 0) {
    console.error(`load.ts: --header must be 'name: value', got ${JSON.stringify(line)}`);
    process.exit(2);
  }
  headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
}
const request: autocannon.Options = {
  url: values.url,
  connections: Number(values.connections),
  method: values.method,
  headers,
  ...(values.body === undefined ? {} : { body: values.body }),
};

const warmupSec = Number(values.warmup);
if (warmupSec > 0) await autocannon({ ...request, duration: warmupSec });

// autocannon's own latency histogram has 1 ms resolution and only counts 2xx responses; a
// proxy's overhead is well below 1 ms, so the response times are kept here at full resolution.
let samples = new Float64Array(INITIAL_SAMPLES);
let sampleCount = 0;
let bytes = 0;
const pids = values['cpu-pid'];
const core = values.core === undefined ? null : Number(values.core);
const coreBefore = core === null ? null : readCoreTicks(core);
const cpuBefore = pids.map((pid) => readCpuTicks(Number(pid)));
const run = autocannon({ ...request, duration: Number(values.duration) });
run.on('response', (_client: unknown, _status: number, resBytes: number, responseTimeMs: number) => {
  bytes += resBytes;
  if (sampleCount === samples.length) {
    const grown = new Float64Array(samples.length * 2);
    grown.set(samples);
    samples = grown;
  }
  samples[sampleCount++] = responseTimeMs;
});
const errorCodes: Record<string, number> = {};
run.on('reqError', (err: Error & { code?: string }) => {
  const key = err.code ?? err.message;
  errorCodes[key] = (errorCodes[key] ?? 0) + 1;
});
const result = await run;
const cpuAfter = pids.map((pid) => readCpuTicks(Number(pid)));
const coreAfter = core === null ? null : readCoreTicks(core);

const sorted = samples.subarray(0, sampleCount).sort();
const percentile = (p: number) =>
  sampleCount === 0 ? 0 : sorted[Math.min(sampleCount - 1, Math.ceil((p / 100) * sampleCount) - 1)]!;

const statusCodes: Record<string, number> = {};
for (const [code, { count }] of Object.entries(result.statusCodeStats)) statusCodes[code] = count;
const cpuTicks: Record<string, number | null> = {};
pids.forEach((pid, i) => {
  const before = cpuBefore[i];
  const after = cpuAfter[i];
  cpuTicks[pid] = before == null || after == null ? null : after - before;
});

const output: LoadResult = {
  requests: sampleCount,
  durationSec: result.duration,
  p50Ms: percentile(50),
  p99Ms: percentile(99),
  bytes,
  non2xx: result.non2xx,
  errors: result.errors,
  timeouts: result.timeouts,
  statusCodes,
  errorCodes,
  cpuTicks,
  core:
    coreBefore && coreAfter
      ? { busy: coreAfter.busy - coreBefore.busy, total: coreAfter.total - coreBefore.total }
      : null,
};
process.stdout.write(`${JSON.stringify(output)}\n`);
