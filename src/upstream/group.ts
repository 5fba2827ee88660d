import { buildConnector, Client, type Dispatcher, Pool } from 'undici';
import type { Logger } from '../logger.ts';
import type { RetryBudgetConfig, ServiceSettings } from '../registry/types.ts';
import { BALANCERS } from './balancers/index.ts';
import type { Balancer, BalancerTarget, PickContext } from './balancers/types.ts';

/** Idle upstream keep-alive sockets are closed after this long (below common server defaults of 5 s). */
const UPSTREAM_KEEPALIVE_MS = 4_000;

/** How long closing a pool waits for its in-flight requests before destroying it. */
const CLOSE_GRACE_MS = 10_000;

/** Extra TLS options for https upstreams, resolved once per group (see config/tls.ts). */
export type UpstreamConnectOptions = object;

/** Errors of sockets that had already read a response when they failed (see {@link failedOnReusedSocket}). */
const REUSED_SOCKET_ERRORS = new WeakSet<Error>();

/**
 * True when `err` came from an upstream socket that had carried an earlier response: a reused
 * keep-alive connection, typically closed by the upstream as it went idle (undici's
 * `UND_ERR_SOCKET` 'other side closed', ECONNRESET, EPIPE).
 */
export function failedOnReusedSocket(err: Error): boolean {
  return REUSED_SOCKET_ERRORS.has(err);
}

/**
 * undici's connector, marking the errors of sockets that had read bytes past their handshake.
 * undici gives a request handler no socket, but the socket's 'error' event carries the very error
 * object the request then fails with, and this listener runs before undici's (added first).
 */
function trackReuse(connect: buildConnector.connector): buildConnector.connector {
  return function connectTrackingReuse(options, callback) {
    connect(options, (err, socket) => {
      if (socket) {
        const handshake = socket.bytesRead;
        socket.on('error', (e: Error) => {
          if (socket.bytesRead > handshake) REUSED_SOCKET_ERRORS.add(e);
        });
        callback(null, socket);
      } else callback(err as Error, null);
    });
  };
}

/** What /readyz reports of a group. */
export interface GroupStatus {
  upstreams: number;
  /** Passively ejected now. */
  ejected: number;
  /** Taken out by active health checks. */
  unhealthy: number;
  /** Ejections ignored: balancing over every upstream active checks have not taken out. */
  panic: boolean;
}

/** One upstream server of a service, with its connection pool and health state. */
export interface Upstream extends BalancerTarget {
  readonly url: string;
  /** `http://host:port`, what undici dials. */
  readonly origin: string;
  /** Path prefix from the upstream URL, without trailing slash ('' for none). */
  readonly pathPrefix: string;
  /** `host[:port]` as sent in the Host header. */
  readonly host: string;
  readonly pool: Pool;
  /** Active health state; true until active checks say otherwise. */
  healthy: boolean;
  /** Consecutive proxied-request failures (passive health). */
  failures: number;
  /** Epoch ms until which the upstream is ejected by passive health; 0 = not ejected. */
  ejectedUntil: number;
  probeFails: number;
  probeOks: number;
}

export interface UpstreamGroupDeps {
  logger: Logger;
  /** Injectable clock for tests. Default Date.now. */
  now?: () => number;
  connect?: UpstreamConnectOptions;
}

/**
 * The upstreams of one service: pools, balancer, active and passive health. Created per distinct
 * upstream config and kept across reloads while that config is unchanged (so connections,
 * balancer position and health state survive a reload).
 */
export class UpstreamGroup {
  readonly service: string;
  readonly targets: readonly Upstream[];
  private readonly settings: ServiceSettings;
  private readonly balancer: Balancer<Upstream>;
  private readonly logger: Logger;
  private readonly now: () => number;
  /** Cached eligible list, recomputed when health changes or an ejection expires. */
  private eligibleCache: Upstream[];
  private nextExpiry = Number.POSITIVE_INFINITY;
  /** Upstreams with a probe in flight: a slow or hung one gets no second probe on top of it. */
  private readonly probing = new Set<Upstream>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Panic mode (see `passiveHealth.panicThreshold`), as of the last recompute. */
  private panic = false;
  private readonly panicThreshold: number;
  /** Unspent retries of the service's retry budget (a token bucket; see `retryBudget`). */
  private retryTokens: number;
  /** How undici dials this group's upstreams (connect timeout, TLS, reuse tracking). */
  private readonly connector: buildConnector.connector;

  constructor(service: string, settings: ServiceSettings, deps: UpstreamGroupDeps) {
    this.service = service;
    this.settings = settings;
    this.logger = deps.logger;
    this.now = deps.now ?? Date.now;
    this.panicThreshold = settings.passiveHealth.panicThreshold;
    this.retryTokens = settings.retryBudget.burst;
    this.connector = trackReuse(buildConnector({ timeout: settings.connectTimeoutMs, ...deps.connect }));
    this.targets = settings.upstreams.map((u) => {
      const parsed = new URL(u.url);
      const pool = new Pool(parsed.origin, {
        keepAliveTimeout: UPSTREAM_KEEPALIVE_MS,
        headersTimeout: settings.timeoutMs,
        bodyTimeout: settings.timeoutMs,
        connect: this.connector,
      });
      return {
        id: u.url,
        url: u.url,
        weight: u.weight,
        origin: parsed.origin,
        pathPrefix: parsed.pathname.replace(/\/+$/, ''),
        host: parsed.host,
        pool,
        inFlight: 0,
        healthy: true,
        failures: 0,
        ejectedUntil: 0,
        probeFails: 0,
        probeOks: 0,
      };
    });
    this.balancer = BALANCERS[settings.loadBalancing](this.targets);
    this.eligibleCache = [...this.targets];
  }

  /** Start active health checks, if configured. */
  start(): void {
    const hc = this.settings.healthCheck;
    if (!hc || this.timer) return;
    const probeAll = () => {
      for (const t of this.targets) void this.probe(t);
    };
    probeAll();
    this.timer = setInterval(probeAll, hc.intervalMs);
    this.timer.unref();
  }

  /**
   * Upstreams that may take traffic now: actively healthy and not passively ejected; in panic
   * mode, every actively healthy one.
   */
  eligible(): readonly Upstream[] {
    if (this.now() >= this.nextExpiry) this.recompute();
    return this.eligibleCache;
  }

  /**
   * Choose an upstream; on a retry, one not in `tried` while there is one (else not the last
   * tried, when another is eligible). Null when none is eligible.
   */
  pick(ctx: PickContext, tried?: readonly Upstream[]): Upstream | null {
    const eligible = this.eligible();
    if (eligible.length === 0) return null;
    if (tried === undefined || tried.length === 0) return this.balancer.pick(eligible, ctx);
    const untried = eligible.filter((t) => !tried.includes(t));
    if (untried.length > 0) return this.balancer.pick(untried, ctx);
    return this.balancer.pick(eligible, ctx, tried[tried.length - 1]);
  }

  /**
   * Send one request to `t` on a new connection of its own, closed after the response: the resend
   * of a request whose reused keep-alive connection failed under it (a pooled one may be stale too).
   */
  dispatchFresh(t: Upstream, opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const client = new Client(t.origin, {
      headersTimeout: this.settings.timeoutMs,
      bodyTimeout: this.settings.timeoutMs,
      connect: this.connector,
    });
    client.dispatch({ ...opts, reset: true }, handler);
    // close() lets the queued request finish first.
    client.close().catch(() => undefined);
  }

  /** A request was forwarded: the retry budget earns `percent`/100 of a retry, up to `burst`. */
  earnRetry(budget: RetryBudgetConfig): void {
    const tokens = this.retryTokens + budget.percent / 100;
    this.retryTokens = tokens < budget.burst ? tokens : budget.burst;
  }

  /** Spend one retry of the budget; false (nothing spent) when less than one is left. */
  spendRetry(): boolean {
    if (this.retryTokens < 1) return false;
    this.retryTokens -= 1;
    return true;
  }

  /** Health and panic state, for /readyz. */
  status(): GroupStatus {
    this.eligible();
    const now = this.now();
    let ejected = 0;
    let unhealthy = 0;
    for (const t of this.targets) {
      if (t.ejectedUntil > now) ejected++;
      if (!t.healthy) unhealthy++;
    }
    return { upstreams: this.targets.length, ejected, unhealthy, panic: this.panic };
  }

  /** A proxied request to `t` got a response: the passive failure streak ends. */
  reportSuccess(t: Upstream): void {
    if (t.failures !== 0) t.failures = 0;
  }

  /** A proxied request to `t` failed before a response (refused, reset, timed out). */
  reportFailure(t: Upstream, reason: string): void {
    // Failures of requests still in flight when it was ejected do not count towards the next ejection.
    if (t.ejectedUntil > this.now()) return;
    t.failures++;
    const { failures, ejectMs } = this.settings.passiveHealth;
    if (t.failures < failures) return;
    t.failures = 0;
    // With active checks, an ejected upstream comes back only after healthyAfter good probes;
    // `healthy` stays the probes' verdict, which panic mode reads.
    if (this.settings.healthCheck) {
      t.ejectedUntil = Number.POSITIVE_INFINITY;
      t.probeOks = 0;
    } else t.ejectedUntil = this.now() + ejectMs;
    this.logger.warn({ service: this.service, upstream: t.url, reason, ejectMs }, 'upstream ejected');
    this.recompute();
  }

  /** The earliest time any upstream becomes eligible again (for Retry-After), in ms from now. */
  retryAfterMs(): number {
    const now = this.now();
    let soonest = this.settings.healthCheck?.intervalMs ?? this.settings.passiveHealth.ejectMs;
    for (const t of this.targets) if (t.ejectedUntil > now) soonest = Math.min(soonest, t.ejectedUntil - now);
    return soonest;
  }

  /**
   * Stop checks and close pools; in-flight requests finish first (undici close semantics), but
   * no longer than `graceMs` (a pool whose close never settles, e.g. after some TLS errors, is
   * destroyed).
   */
  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all(
      this.targets.map(async (t) => {
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<'expired'>((r) => {
          timer = setTimeout(() => r('expired'), graceMs);
        });
        const outcome = await Promise.race([t.pool.close().catch(() => undefined), expired]);
        clearTimeout(timer);
        if (outcome === 'expired') await t.pool.destroy().catch(() => undefined);
      }),
    );
  }

  private recompute(): void {
    const now = this.now();
    let next = Number.POSITIVE_INFINITY;
    const eligible: Upstream[] = [];
    const healthy: Upstream[] = [];
    for (const t of this.targets) {
      if (!t.healthy) continue;
      healthy.push(t);
      if (t.ejectedUntil > now) next = Math.min(next, t.ejectedUntil);
      else eligible.push(t);
    }
    // Panic: too few left (or none) after ejections; active checks' verdicts still hold.
    const panic =
      healthy.length > eligible.length &&
      (eligible.length === 0 || eligible.length * 100 < this.panicThreshold * this.targets.length);
    this.nextExpiry = next;
    this.eligibleCache = panic ? healthy : eligible;
    if (panic !== this.panic) {
      this.panic = panic;
      const fields = {
        service: this.service,
        upstreams: this.targets.length,
        ejected: healthy.length - eligible.length,
        panicThreshold: this.panicThreshold,
      };
      if (panic)
        this.logger.warn(
          fields,
          'upstream group in panic mode: ejections ignored, balancing over every upstream',
        );
      else this.logger.info(fields, 'upstream group out of panic mode');
    }
  }

  private async probe(t: Upstream): Promise<void> {
    const hc = this.settings.healthCheck;
    if (!hc || this.closed || this.probing.has(t)) return;
    this.probing.add(t);
    let ok = false;
    try {
      // The signal bounds the whole probe, connect included (headersTimeout starts only once sent).
      const res = await t.pool.request({
        method: 'GET',
        path: t.pathPrefix + hc.path,
        headers: { host: t.host, 'user-agent': 'portcullis-health' },
        headersTimeout: hc.timeoutMs,
        bodyTimeout: hc.timeoutMs,
        signal: AbortSignal.timeout(hc.timeoutMs),
      });
      await res.body.dump();
      ok = res.statusCode >= 200 && res.statusCode < 400;
    } catch {
      ok = false;
    } finally {
      this.probing.delete(t);
    }
    if (this.closed) return;
    if (ok) {
      t.probeFails = 0;
      t.probeOks++;
      if ((!t.healthy || t.ejectedUntil > this.now()) && t.probeOks >= hc.healthyAfter) {
        t.healthy = true;
        t.ejectedUntil = 0;
        t.failures = 0;
        this.logger.info({ service: this.service, upstream: t.url }, 'upstream healthy');
        this.recompute();
      }
    } else {
      t.probeOks = 0;
      t.probeFails++;
      if (t.healthy && t.probeFails >= hc.unhealthyAfter) {
        t.healthy = false;
        this.logger.warn({ service: this.service, upstream: t.url }, 'upstream unhealthy (active check)');
        this.recompute();
      }
    }
  }
}
