/**
 * The access log: one JSON line per request, the same line pino would write for
 * `logger.info({...}, 'request')`, built as one string (no intermediate object, no redaction
 * pass: it never holds headers) and handed to the logger's destination, so it costs a few
 * string concatenations. Parts that only change with the config (route, service, operationId)
 * are serialised once per route.
 *
 * The line is an audit trail: every denial and dry-run would-deny is listed under `policies`
 * with the policy kind, the rule that applied it (`file#index`, as `portcullis routes` prints),
 * the reason code and, for the WAF, the rule ids and score; `subject` is the authenticated
 * caller when auth accepted one.
 */
import { pino } from 'pino';
import type { Logger } from '../logger.ts';
import type { RouteChain } from '../pipeline/chain.ts';
import type { Decision } from '../pipeline/types.ts';
import type { Route } from '../registry/types.ts';
import type { RequestRecord } from './record.ts';

/** pino's numeric level of `info`: the access log's level. */
const INFO = 30;

export interface AccessLogOptions {
  /**
   * Share of successful requests logged (0..1): a request answered below 400, with no problem
   * and no denial or would-deny, is logged with this probability. Everything else always is.
   * Default 1.
   */
  sample?: number;
  /** The trace id of a request's span, when tracing is on. */
  traceId?: (rec: RequestRecord) => string | undefined;
}

/**
 * Writes one access-log line for a finished request (or skips it: level above info, sampling).
 * `aborted`: the response was not complete (the client went away).
 */
export type AccessLog = (
  rec: RequestRecord,
  status: number,
  bytes: number,
  durationMs: number,
  aborted: boolean,
) => void;

/** The logger's own pieces the line is built from (pino internals, read per line: a child logger or a level change applies). */
interface PinoInternals {
  levelVal: number;
}

const chindingsSym = pino.symbols.chindingsSym as unknown as string;
const streamSym = pino.symbols.streamSym as unknown as string;

export function createAccessLog(logger: Logger, options: AccessLogOptions = {}): AccessLog {
  const sample = options.sample ?? 1;
  const traceIdOf = options.traceId;
  const bag = logger as unknown as Record<string, unknown> & PinoInternals;
  // Fragments that repeat from line to line (the millisecond, the client, the upstream), kept
  // from the last line: a line took 660 ns to build, 265 ns with these (micro-benchmark, one core).
  let lastTime = -1;
  /** The monotonic clock's millisecond of the last line: Date.now() is read again only when it moves. */
  let lastTick = -1;
  let now = 0;
  let lastBindings = '';
  let timeFragment = '';
  const client = new LastFragment();
  const path = new LastFragment();
  const upstream = new LastFragment();
  return function accessLog(rec, status, bytes, durationMs, aborted) {
    if (bag.levelVal > INFO) return;
    const policies = rec.ctx ? notableDecisions(rec.ctx.decisions, rec.chain) : undefined;
    const problem = rec.problem;
    if (sample < 1 && status < 400 && problem === undefined && policies === undefined) {
      if (Math.random() >= sample) return;
    }
    // `time` and the bindings (`name`, a worker's `worker`) exactly as pino writes them. Date.now()
    // is a V8 runtime call (~0.5 µs under load, measured with perf); the request's end on the
    // monotonic clock is known, so the wall clock is read once per millisecond of it: `time` is
    // then at most 1 ms early, never late.
    const tick = Math.floor(rec.start + durationMs);
    if (tick !== lastTick) {
      lastTick = tick;
      now = Date.now();
    }
    const bindings = bag[chindingsSym] as string;
    if (now !== lastTime || bindings !== lastBindings) {
      lastTime = now;
      lastBindings = bindings;
      timeFragment = `{"level":30,"time":${now}${bindings},"reqId":"`;
    }
    let line = `${timeFragment}${rec.id}"`;
    const traceId = traceIdOf?.(rec);
    if (traceId !== undefined) line += `,"traceId":"${traceId}"`;
    line += `,"clientIp":${client.of(rec.clientIp)},"method":${methodFragment(rec.method)},"path":${path.of(rec.path)}`;
    const route = rec.route;
    if (route !== undefined) line += routeFields(route, rec.template);
    else if (rec.passThrough !== undefined) line += `,"service":${JSON.stringify(rec.passThrough)}`;
    line += `,"status":${status},"bytes":${bytes},"durationMs":${milliseconds(durationMs)}`;
    if (rec.attempts > 0) {
      line += `,"upstreamMs":${milliseconds(rec.upstreamMs)}`;
      if (rec.upstream !== undefined) line += `,"upstream":${upstream.of(rec.upstream)}`;
      if (rec.attempts > 1) line += `,"retries":${rec.attempts - 1}`;
    }
    if (problem !== undefined) line += `,"code":"${problem.code}"`;
    const subject = rec.ctx?.identity?.subject;
    if (subject !== undefined) line += `,"subject":${JSON.stringify(subject)}`;
    if (policies !== undefined) line += `,"policies":${JSON.stringify(policies)}`;
    if (aborted) line += ',"aborted":true';
    if (rec.websocket !== 'no') line += ',"websocket":true';
    line += ',"msg":"request"}\n';
    // The stdout writer lets access-log lines wait a little for a fuller batch (log-sink.ts).
    const out = bag[streamSym] as pino.DestinationStream & { writeDeferred?: (line: string) => boolean };
    if (out.writeDeferred !== undefined) out.writeDeferred(line);
    else out.write(line);
  };
}

/** The JSON string of the last value asked for, kept: clients, paths and upstreams repeat. */
class LastFragment {
  private value = '';
  private json = '""';
  of(value: string): string {
    if (value !== this.value) {
      this.value = value;
      this.json = JSON.stringify(value);
    }
    return this.json;
  }
}

/** JSON strings of the usual methods. */
const METHOD_FRAGMENTS: Readonly<Record<string, string>> = Object.fromEntries(
  ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT'].map((m) => [m, `"${m}"`]),
);

function methodFragment(method: string): string {
  return METHOD_FRAGMENTS[method] ?? JSON.stringify(method);
}

/** What follows the whole ms for each µs remainder, as JSON writes it: '' for 0, `.5`, `.25`, `.125`, `.001`. */
const FRACTIONS: readonly string[] = Array.from({ length: 1000 }, (_, us) =>
  us === 0 ? '' : `.${String(us).padStart(3, '0').replace(/0+$/, '')}`,
);

/**
 * A duration in ms rounded to the µs, as JSON writes `Math.round(ms * 1000) / 1000`, without
 * formatting a fraction: small-integer arithmetic and a table (number-to-string of a fraction
 * cost 0.9 of the line's 7 µs under load, measured with perf).
 */
export function milliseconds(ms: number): string {
  const us = Math.round(ms * 1000);
  // Negative, NaN, or over 2^31 µs (about 36 minutes: a long WebSocket): the general way.
  if (!(us >= 0 && us < 2147483648)) return String(us / 1000);
  const whole = (us / 1000) | 0;
  return `${whole}${FRACTIONS[us - whole * 1000]}`;
}

const routeFragments = new WeakMap<Route, string>();

/** `,"route":…,"service":…,"operationId":…` of a route, serialised once. */
function routeFields(route: Route, template: string | undefined): string {
  let fragment = routeFragments.get(route);
  if (fragment === undefined) {
    fragment = '';
    if (template !== undefined) fragment += `,"route":${JSON.stringify(template)}`;
    fragment += `,"service":${JSON.stringify(route.service)}`;
    if (route.operationId !== undefined) fragment += `,"operationId":${JSON.stringify(route.operationId)}`;
    routeFragments.set(route, fragment);
  }
  return fragment;
}

/** One denial or would-deny as logged. */
interface LoggedDecision {
  policy: string;
  outcome: Decision['outcome'];
  /** `file#index` of the rule that applied the policy (basename of the policy file). */
  rule?: string;
  reason?: string;
  rules?: unknown;
  score?: unknown;
}

/**
 * The decisions worth a line in the access log: denials, errors and dry-run would-denials
 * (allows are the normal case), each with its rule and reason and, for the WAF, the rule ids and
 * score. Never payloads.
 */
export function notableDecisions(
  decisions: readonly Decision[],
  chain: RouteChain | undefined,
): LoggedDecision[] | undefined {
  let out: LoggedDecision[] | undefined;
  for (const d of decisions) {
    if (d.outcome === 'allow') continue;
    const applied = chain?.applied.find((a) => a.kind === d.policy);
    const entry: LoggedDecision = { policy: d.policy, outcome: d.outcome };
    if (applied) entry.rule = applied.label;
    entry.reason = d.reason;
    if (d.detail?.rules !== undefined) entry.rules = d.detail.rules;
    if (d.detail?.score !== undefined) entry.score = d.detail.score;
    if (out === undefined) out = [entry];
    else out.push(entry);
  }
  return out;
}
