/**
 * Prometheus metrics (prom-client), served by the admin app at /metrics. One registry per
 * gateway (tests run several in one process).
 *
 * Label cardinality is bounded by configuration, never by traffic: `route` is a route template
 * (or `(unmatched)` / `(pass-through)`), `method` one of the routed methods, `status_class`
 * `1xx`..`5xx`, `upstream` a configured upstream URL, `reason` / `outcome` small fixed sets.
 * The per-request path looks up precomputed label children (per route and status class) and
 * does one counter increment and one histogram observation.
 *
 * One series per label set for the life of the process: children are owned by their label values
 * (service, route template, method...), never by the Route or Upstream objects a reload replaces,
 * so counters carry on across reloads and the scrape does not grow with them.
 */

import { METHODS } from 'node:http';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { droppedLogLines } from '../logger.ts';
import { clientNetwork } from '../net/client-network.ts';
import type { Decision } from '../pipeline/types.ts';
import { jwtCacheStats } from '../policies/auth/jwt.ts';
import type { Route } from '../registry/types.ts';
import type { Runtime } from '../runtime.ts';
import type { Upstream, UpstreamGroup } from '../upstream/group.ts';
import { HotCounter, HotHistogram } from './hot-metrics.ts';
import { CLIENT_CLOSED } from './observer.ts';
import type { RequestRecord, UpstreamObserver } from './record.ts';
import { TOP_CLIENTS_EXPORTED, TopClients } from './top-clients.ts';

/** Request latency buckets, seconds: a gateway hop is sub-millisecond, upstreams up to timeouts. */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** Route label of requests no route matched (404/405, answered by the gateway). */
export const UNMATCHED_ROUTE = '(unmatched)';
/** Route label of requests forwarded by a pass-through service (no operation matched). */
export const PASS_THROUGH_ROUTE = '(pass-through)';
/** Service label when no service is known. */
const NO_SERVICE = '(none)';
/** Method labels kept as sent: those Node's HTTP/1.1 parser knows. HTTP/2 carries any token. */
const LABELLED_METHODS: ReadonlySet<string> = new Set(METHODS);
/** Method label of any other token (OpenTelemetry's `_OTHER`): a client cannot grow the series. */
export const OTHER_METHOD = '_OTHER';

/** The gateway's metrics: what the request path feeds, and the registry /metrics renders. */
export interface Metrics extends UpstreamObserver {
  readonly registry: Registry;
  /** Count one finished request (status 499 = the client went away before the response). */
  requestDone(rec: RequestRecord, statusCode: number, seconds: number): void;
  /** An upgrade request was answered: 101, or refused (by the gateway or the upstream), or failed. */
  websocketUpgrade(rec: RequestRecord, statusCode: number): void;
  /** A WebSocket of `service` opened (+1) or closed (-1). */
  websocketOpen(service: string, delta: 1 | -1): void;
  /** The Prometheus text exposition of every metric. */
  render(): Promise<string>;
  /** Content-Type of `render()`'s output. */
  readonly contentType: string;
}

interface RequestChildren {
  count: Array<{ inc(): void } | undefined>;
  latency: Array<{ observe(v: number): void } | undefined>;
  /** Rate-limit decision counters of this route, by outcome. */
  rateLimit: Map<string, { inc(): void }>;
  /** Cache outcome counters of this route, by result (hit, stale, revalidated, miss, uncacheable, bypass). */
  cache: Map<string, { inc(): void }>;
  labels: { service: string; route: string; method: string };
}

interface UpstreamChildren {
  latency: { observe(v: number): void };
  errors: Map<string, { inc(): void }>;
}

/** Create the metrics of one gateway; config reloads, version and upstream health come from `runtime`. */
export function createMetrics(runtime: Runtime): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  // The three updated on every request are "hot": see hot-metrics.ts (same names, types, labels).
  const requests = new HotCounter(
    registry,
    'portcullis_http_requests_total',
    'Requests answered by the public listeners.',
  );
  const latency = new HotHistogram(
    registry,
    'portcullis_http_request_duration_seconds',
    'Time from request arrival to the end of the response, seconds.',
    REQUEST_BUCKETS,
  );
  const upstreamLatency = new HotHistogram(
    registry,
    'portcullis_upstream_request_duration_seconds',
    'Upstream attempts (each retry counts), from dispatch to the end of the response body, seconds.',
    REQUEST_BUCKETS,
  );
  const upstreamErrors = new Counter({
    name: 'portcullis_upstream_errors_total',
    help: 'Upstream attempts that got no response (refused, reset, timed out), by error code.',
    labelNames: ['service', 'upstream', 'reason'],
    registers,
  });
  // Hot too: a rate-limited route records a decision on every request.
  const rateLimit = new HotCounter(
    registry,
    'portcullis_rate_limit_decisions_total',
    'Rate-limit decisions: allow, deny, would-deny (dry-run), error (store down).',
  );
  // Hot too: every request of a cached route records its outcome.
  const cacheResults = new HotCounter(
    registry,
    'portcullis_cache_requests_total',
    'Requests of cached routes by result: hit, stale (served stale), revalidated (304 upstream), miss (stored), ' +
      'uncacheable (forwarded, not storable), bypass (other methods, dry-run).',
  );
  const authFailures = new Counter({
    name: 'portcullis_auth_failures_total',
    help: 'Requests auth rejected (outcome deny) or would have rejected (would-deny, dry-run), by reason.',
    labelNames: ['service', 'route', 'reason', 'outcome'],
    registers,
  });
  // Who is failing to authenticate: the top clients by rejected attempts lately (bounded; top-clients.ts).
  const failing = new TopClients();
  new Gauge({
    name: 'portcullis_auth_failures_top_clients',
    help: `Rejected authentication attempts of the ${TOP_CLIENTS_EXPORTED} clients (address; IPv6 per /64) with the most over the last 5 to 10 minutes.`,
    labelNames: ['client'],
    registers,
    collect() {
      this.reset();
      for (const [client, attempts] of failing.top()) this.set({ client }, attempts);
    },
  });
  const reloads = new Counter({
    name: 'portcullis_config_reloads_total',
    help: 'Configuration reloads (spec or policy change), by result: success or failure (last good kept).',
    labelNames: ['result'],
    registers,
    // workers: N all reload together: the instance's count, not N times it (a replacement has fewer).
    aggregator: 'max',
  });
  for (const result of ['success', 'failure']) reloads.inc({ result }, 0);
  runtime.onReload((r) => reloads.inc({ result: r.ok ? 'success' : 'failure' }));
  new Gauge({
    name: 'portcullis_config_info',
    help: 'The configuration being served: its version (a hash of specs and policies). Always 1.',
    labelNames: ['version'],
    registers,
    aggregator: 'max',
    collect() {
      this.reset();
      const version = runtime.snapshot?.version;
      if (version) this.set({ version }, 1);
    },
  });
  new Counter({
    name: 'portcullis_log_lines_dropped_total',
    help: 'Log lines (access log included) dropped because stdout did not keep up and the log buffer (logBufferBytes) was full.',
    registers,
    collect() {
      this.reset();
      this.inc(droppedLogLines());
    },
  });
  new Counter({
    name: 'portcullis_jwt_verifications_total',
    help: 'JWT bearer tokens checked, by result: cached (verified before, answered from the verified-token cache) or verified (signature checked, including tokens refused).',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      this.inc({ result: 'cached' }, jwtCacheStats.hits);
      this.inc({ result: 'verified' }, jwtCacheStats.misses);
    },
  });
  new Counter({
    name: 'portcullis_jwt_cache_drops_total',
    help: 'Entries dropped from the verified-token cache, by reason: expired (exp passed), key_changed (the refetched JWKS no longer holds the key under the kid), capacity (cacheSize / cacheMaxBytes).',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      this.inc({ reason: 'expired' }, jwtCacheStats.expired);
      this.inc({ reason: 'key_changed' }, jwtCacheStats.keyChanged);
      this.inc({ reason: 'capacity' }, jwtCacheStats.evicted);
    },
  });
  new Gauge({
    name: 'portcullis_config_loaded_timestamp_seconds',
    help: 'When the configuration being served was loaded, Unix seconds.',
    registers,
    aggregator: 'max',
    collect() {
      const at = runtime.snapshot?.loadedAt;
      if (at) this.set(at.getTime() / 1000);
    },
  });
  new Gauge({
    name: 'portcullis_upstream_healthy',
    help: 'Whether an upstream receives traffic: 1 healthy, 0 down (active check) or ejected (passive health).',
    labelNames: ['service', 'upstream'],
    registers,
    // workers: N each keep passive health: 0 when any worker has the upstream out.
    aggregator: 'min',
    collect() {
      this.reset();
      const now = Date.now();
      for (const group of currentGroups(runtime)) {
        for (const t of group.targets) {
          this.set({ service: group.service, upstream: t.url }, t.healthy && t.ejectedUntil <= now ? 1 : 0);
        }
      }
    },
  });
  // Per (service, upstream URL): series are created at 0 for every current upstream on scrape.
  const ejections = new Counter({
    name: 'portcullis_upstream_ejections_total',
    help: 'Passive-health ejections of an upstream (consecutive failures: connection errors or counted 5xx answers).',
    labelNames: ['service', 'upstream'],
    registers,
    collect() {
      for (const group of currentGroups(runtime))
        for (const t of group.targets) this.inc({ service: group.service, upstream: t.url }, 0);
    },
  });
  const breakerRejections = new Counter({
    name: 'portcullis_upstream_breaker_rejections_total',
    help: "Requests the upstream's circuit breaker answered 503: max-pending (too many waiting) or pending-timeout (waited timeoutMs).",
    labelNames: ['service', 'upstream', 'reason'],
    registers,
    collect() {
      for (const group of currentGroups(runtime))
        for (const t of group.targets)
          for (const reason of ['max-pending', 'pending-timeout'])
            this.inc({ service: group.service, upstream: t.url, reason }, 0);
    },
  });
  new Gauge({
    name: 'portcullis_upstream_requests_in_flight',
    help: 'Requests in flight to an upstream (admitted by its circuit breaker).',
    labelNames: ['service', 'upstream'],
    registers,
    collect() {
      this.reset();
      for (const group of currentGroups(runtime))
        for (const t of group.targets) this.set({ service: group.service, upstream: t.url }, t.inFlight);
    },
  });
  new Gauge({
    name: 'portcullis_upstream_requests_pending',
    help: "Requests waiting for a slot of an upstream's circuit breaker.",
    labelNames: ['service', 'upstream'],
    registers,
    collect() {
      this.reset();
      for (const group of currentGroups(runtime))
        for (const t of group.targets)
          this.set({ service: group.service, upstream: t.url }, t.state.waiting.length);
    },
  });
  runtime.upstreamEvents.subscribe({
    ejected: (service, upstream) => ejections.inc({ service, upstream }),
    breakerRejected: (service, upstream, reason) => breakerRejections.inc({ service, upstream, reason }),
  });

  const upgrades = new Counter({
    name: 'portcullis_websocket_upgrades_total',
    help: 'WebSocket upgrade requests by outcome: upgraded (101), refused (answered by the gateway: a policy, a refused or invalid handshake), upstream-refused (the upstream answered other than 101), failed (no upstream, upstream error or timeout, invalid upstream handshake), aborted (the client went away first).',
    labelNames: ['service', 'outcome'],
    registers,
  });
  const openSockets = new Gauge({
    name: 'portcullis_websocket_open_connections',
    help: 'WebSocket connections open now (upgraded and not yet closed).',
    labelNames: ['service'],
    registers,
  });

  // One RequestChildren per label set, for the life of the process: a reload builds new Route
  // objects for the same (service, route, method), and they must feed the same series.
  // Bound: configured routes ever served, plus services × the methods Node's HTTP parser accepts
  // (about 35) for unmatched and pass-through requests: clients cannot add keys.
  const bySeries = new Map<string, RequestChildren>();
  // A memo, not an identity: each Route object resolves its label key once, then a lookup is one
  // WeakMap get (routes of an old snapshot drop out with it).
  const byRoute = new WeakMap<Route, RequestChildren>();
  const byOther = new Map<string, RequestChildren>();
  const seriesOf = (service: string, route: string, method: string): RequestChildren => {
    const key = `${service}\0${route}\0${method}`;
    let c = bySeries.get(key);
    if (!c) {
      c = {
        count: [],
        latency: [],
        rateLimit: new Map(),
        cache: new Map(),
        labels: { service, route, method },
      };
      bySeries.set(key, c);
    }
    return c;
  };
  // Upstream series by (service, upstream URL): a reload that changes a service's upstream
  // settings builds new Upstream objects for the same URLs. byUpstream memoises as byRoute does.
  const byUpstreamSeries = new Map<string, UpstreamChildren>();
  const byUpstream = new WeakMap<Upstream, UpstreamChildren>();
  const upstreamSeriesOf = (service: string, upstream: Upstream): UpstreamChildren => {
    let c = byUpstream.get(upstream);
    if (c) return c;
    const key = `${service}\0${upstream.url}`;
    c = byUpstreamSeries.get(key);
    if (!c) {
      c = { latency: upstreamLatency.child({ service, upstream: upstream.url }), errors: new Map() };
      byUpstreamSeries.set(key, c);
    }
    byUpstream.set(upstream, c);
    return c;
  };

  const childrenOf = (rec: RequestRecord): RequestChildren => {
    const route = rec.route;
    if (route) {
      let c = byRoute.get(route);
      if (!c) {
        c = seriesOf(route.service, rec.template ?? route.publicPath, route.method);
        byRoute.set(route, c);
      }
      return c;
    }
    // Pass-through and unmatched requests: keyed by request method, which the route label does not imply.
    const service = rec.passThrough ?? NO_SERVICE;
    const method = LABELLED_METHODS.has(rec.method) ? rec.method : OTHER_METHOD;
    const key = `${service} ${method}`;
    let c = byOther.get(key);
    if (!c) {
      c = seriesOf(service, rec.passThrough ? PASS_THROUGH_ROUTE : UNMATCHED_ROUTE, method);
      byOther.set(key, c);
    }
    return c;
  };

  const recordDecisions = (rec: RequestRecord, c: RequestChildren) => {
    const { service, route } = c.labels;
    // The chain records a decision for every hook that rejects, auth included (runChain).
    const decisions = rec.ctx?.decisions ?? [];
    for (const d of decisions as Decision[]) {
      if (d.policy === 'rateLimit') {
        let counter = c.rateLimit.get(d.outcome);
        if (!counter) {
          counter = rateLimit.child({ service, route, outcome: d.outcome });
          c.rateLimit.set(d.outcome, counter);
        }
        counter.inc();
      } else if (d.policy === 'cache' && d.reason !== undefined) {
        let counter = c.cache.get(d.reason);
        if (!counter) {
          counter = cacheResults.child({ service, route, result: d.reason });
          c.cache.set(d.reason, counter);
        }
        counter.inc();
      } else if (d.policy === 'auth' && (d.outcome === 'deny' || d.outcome === 'would-deny')) {
        authFailures.inc({ service, route, reason: authReason(d), outcome: d.outcome });
        if (d.outcome === 'deny') failing.add(clientNetwork(rec.clientIp));
      }
    }
  };

  return {
    registry,
    contentType: registry.contentType,
    requestDone(rec, statusCode, seconds) {
      const c = childrenOf(rec);
      const cls = statusCode >= 100 && statusCode < 600 ? Math.floor(statusCode / 100) : 0;
      let count = c.count[cls];
      let hist = c.latency[cls];
      if (!count || !hist) {
        const labels = { ...c.labels, status_class: STATUS_CLASSES[cls] as string };
        count = requests.child(labels);
        hist = latency.child(labels);
        c.count[cls] = count;
        c.latency[cls] = hist;
      }
      count.inc();
      hist.observe(seconds);
      if (rec.ctx) recordDecisions(rec, c);
    },
    upstreamDone(service, upstream, seconds, errorCode) {
      const c = upstreamSeriesOf(service, upstream);
      c.latency.observe(seconds);
      if (errorCode !== undefined) {
        let e = c.errors.get(errorCode);
        if (!e) {
          e = upstreamErrors.labels({ service, upstream: upstream.url, reason: errorCode });
          c.errors.set(errorCode, e);
        }
        e.inc();
      }
    },
    websocketUpgrade(rec, statusCode) {
      const service = rec.route?.service ?? rec.passThrough ?? NO_SERVICE;
      upgrades.inc({ service, outcome: upgradeOutcome(rec, statusCode) });
    },
    websocketOpen(service, delta) {
      openSockets.inc({ service }, delta);
    },
    render: () => registry.metrics(),
  };
}

/** The `outcome` label of an answered upgrade request. */
function upgradeOutcome(rec: RequestRecord, statusCode: number): string {
  if (rec.websocket === 'upgraded') return 'upgraded';
  if (statusCode === CLIENT_CLOSED) return 'aborted';
  if (rec.problem) return rec.problem.status >= 500 ? 'failed' : 'refused';
  return rec.attempts > 0 ? 'upstream-refused' : 'refused';
}

function authReason(d: Decision): string {
  const fromDetail = d.detail?.reason;
  return typeof fromDetail === 'string' ? fromDetail : (d.reason ?? 'unknown');
}

/** The distinct upstream groups of the snapshot being served. */
function currentGroups(runtime: Runtime): Set<UpstreamGroup> {
  const groups = new Set<UpstreamGroup>();
  const snapshot = runtime.snapshot;
  if (!snapshot) return groups;
  for (const e of snapshot.entries.values()) if (e.target) groups.add(e.target.group);
  for (const t of snapshot.passThrough.values()) groups.add(t.group);
  return groups;
}
