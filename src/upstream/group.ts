import type { buildConnector as BuildConnector, Dispatcher } from 'undici';
import type { Logger } from '../logger.ts';
import type {
  CircuitBreakerConfig,
  RetryBudgetConfig,
  ServiceSettings,
  UpstreamConfig,
} from '../registry/types.ts';
import { BALANCERS } from './balancers/index.ts';
import type { Balancer, BalancerTarget, PickContext } from './balancers/types.ts';
import { buildConnector, Client, Pool } from './undici.ts';

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
function trackReuse(connect: BuildConnector.connector): BuildConnector.connector {
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

/** A request waiting for a circuit-breaker slot of an upstream (see UpstreamGroup.admit). */
export interface Waiting {
  /** The client went away: leave the queue (no-op once started or expired). */
  cancel(): void;
}

interface Waiter extends Waiting {
  start(): void;
  timer: NodeJS.Timeout | undefined;
  /** Started, expired or cancelled. */
  over: boolean;
}

/**
 * Health and load of one upstream URL of a service. Kept across reloads while the service lists
 * the URL (a changed weight, zone, timeout or balancer builds a new group and Upstream, which take
 * over this state), so health, ejections, in-flight counts and waiting requests survive them.
 */
export interface UpstreamState {
  /** Active health state; true until active checks say otherwise. */
  healthy: boolean;
  /** Consecutive proxied-request failures (passive health). */
  failures: number;
  /** Epoch ms until which the upstream is ejected by passive health; 0 = not ejected. */
  ejectedUntil: number;
  /** Ejections in a row: the multiplier of ejectMs. Starts over after maxEjectMs back in service. */
  ejections: number;
  /** Epoch ms the last ejection ended (or will end). */
  backAt: number;
  probeFails: number;
  probeOks: number;
  /** Requests in flight (admitted by the circuit breaker), from every group sharing this state. */
  inFlight: number;
  /** Requests waiting for a circuit-breaker slot, oldest first. */
  waiting: Waiter[];
}

function freshState(): UpstreamState {
  return {
    healthy: true,
    failures: 0,
    ejectedUntil: 0,
    ejections: 0,
    backAt: 0,
    probeFails: 0,
    probeOks: 0,
    inFlight: 0,
    waiting: [],
  };
}

/** One upstream server of a service: its address, connection pool and (shared) health state. */
export class Upstream implements BalancerTarget {
  readonly id: string;
  readonly url: string;
  readonly weight: number;
  /** Locality, for preferZone; undefined when the upstream names none. */
  readonly zone: string | undefined;
  /** `http://host:port`, what undici dials. */
  readonly origin: string;
  /** Path prefix from the upstream URL, without trailing slash ('' for none). */
  readonly pathPrefix: string;
  /** `host[:port]` as sent in the Host header. */
  readonly host: string;
  readonly pool: Pool;
  readonly state: UpstreamState;

  constructor(config: UpstreamConfig, pool: Pool, state: UpstreamState) {
    const parsed = new URL(config.url);
    this.id = config.url;
    this.url = config.url;
    this.weight = config.weight;
    this.zone = config.zone;
    this.origin = parsed.origin;
    this.pathPrefix = parsed.pathname.replace(/\/+$/, '');
    this.host = parsed.host;
    this.pool = pool;
    this.state = state;
  }

  /** Requests in flight (read by least-connections and random-two). */
  get inFlight(): number {
    return this.state.inFlight;
  }
  set inFlight(n: number) {
    this.state.inFlight = n;
  }
  /** Active health state; true until active checks say otherwise. */
  get healthy(): boolean {
    return this.state.healthy;
  }
  /** Epoch ms until which the upstream is passively ejected; 0 = not ejected. */
  get ejectedUntil(): number {
    return this.state.ejectedUntil;
  }
}

/** What happens to upstreams that metrics count (one sink per gateway; see Runtime.upstreamEvents). */
export interface UpstreamEventSink {
  /** Passive health ejected `upstream` of `service`. */
  ejected?(service: string, upstream: string): void;
  /** The circuit breaker answered 503: the waiting queue was full, or a request waited timeoutMs. */
  breakerRejected?(service: string, upstream: string, reason: BreakerRejection): void;
}

/** Why the circuit breaker refused a request. */
export type BreakerRejection = 'max-pending' | 'pending-timeout';

/** Fans upstream events out to the sinks subscribed (metrics). */
export class UpstreamEvents implements UpstreamEventSink {
  private readonly sinks: UpstreamEventSink[] = [];
  subscribe(sink: UpstreamEventSink): void {
    this.sinks.push(sink);
  }
  ejected(service: string, upstream: string): void {
    for (const s of this.sinks) s.ejected?.(service, upstream);
  }
  breakerRejected(service: string, upstream: string, reason: BreakerRejection): void {
    for (const s of this.sinks) s.breakerRejected?.(service, upstream, reason);
  }
}

/** One upstream as GET /upstreams shows it. */
export interface UpstreamView {
  url: string;
  zone: string | null;
  weight: number;
  /** `unhealthy`: taken out by active checks; `ejected`: by passive health; else `healthy`. */
  health: 'healthy' | 'ejected' | 'unhealthy';
  /** ISO time the ejection ends; null when not ejected or when good probes end it. */
  ejectedUntil: string | null;
  /** Whether the balancer picks it now (true for an ejected one in panic; false out of zone). */
  receivingTraffic: boolean;
  consecutiveFailures: number;
  /** Ejections in a row (the ejection time is ejectMs times this, capped at maxEjectMs). */
  ejections: number;
  inFlight: number;
  /** Requests waiting for a circuit-breaker slot. */
  pending: number;
}

/** One upstream group as GET /upstreams shows it. */
export interface GroupView {
  loadBalancing: string;
  preferZone: boolean;
  /** Panic mode: ejections ignored (see passiveHealth.panicThreshold). */
  panic: boolean;
  /** With preferZone: whether traffic stays in the gateway's zone (false: failed over). */
  inZone: boolean | null;
  circuitBreaker: CircuitBreakerConfig;
  passiveHealth: { failures: number; statuses: number[]; ejectMs: number; maxEjectMs: number };
  upstreams: UpstreamView[];
}

export interface UpstreamGroupDeps {
  logger: Logger;
  /** Injectable clock for tests. Default Date.now. */
  now?: () => number;
  connect?: UpstreamConnectOptions;
  /** The gateway's own zone (gateway.yaml `zone`), for preferZone. Default: none. */
  zone?: string;
  /** Where ejections and breaker rejections are reported. Default: nowhere. */
  events?: UpstreamEventSink;
  /**
   * The group this one replaces (the same service before a reload changed its upstream block):
   * upstreams with the same URL take over its health state, and the retry budget carries on.
   */
  previous?: UpstreamGroup;
}

/**
 * The upstreams of one service: pools, balancer, active and passive health, circuit breakers.
 * Created per distinct upstream config and kept across reloads while that config is unchanged (so
 * connections, balancer position and health state survive a reload); a changed config builds a
 * new group whose upstreams take over the state of the previous group's same URLs.
 */
export class UpstreamGroup {
  readonly service: string;
  readonly targets: readonly Upstream[];
  private readonly settings: ServiceSettings;
  private readonly balancer: Balancer<Upstream>;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly events: UpstreamEventSink | undefined;
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
  /** Answer statuses that count as passive-health failures, indexed by status. */
  private readonly failureStatuses: Uint8Array;
  /** The gateway's zone when the service prefers it; undefined otherwise. */
  private readonly localZone: string | undefined;
  /** With a localZone: whether the last recompute kept traffic in it. */
  private inZone = true;
  private readonly maxRequests: number;
  private readonly maxPending: number;
  /** Unspent retries of the service's retry budget (a token bucket; see `retryBudget`). */
  private retryTokens: number;
  /** How undici dials this group's upstreams (connect timeout, TLS, reuse tracking). */
  private readonly connector: BuildConnector.connector;
  /** The group built to replace this one by a reload (it shares this group's upstream states). */
  private successor: UpstreamGroup | undefined;

  constructor(service: string, settings: ServiceSettings, deps: UpstreamGroupDeps) {
    this.service = service;
    this.settings = settings;
    this.logger = deps.logger;
    this.now = deps.now ?? Date.now;
    this.events = deps.events;
    this.panicThreshold = settings.passiveHealth.panicThreshold;
    this.failureStatuses = new Uint8Array(600);
    for (const status of settings.passiveHealth.statuses) this.failureStatuses[status] = 1;
    this.maxRequests = settings.circuitBreaker.maxRequests;
    this.maxPending = settings.circuitBreaker.maxPending;
    this.retryTokens = Math.min(
      deps.previous?.retryTokens ?? settings.retryBudget.burst,
      settings.retryBudget.burst,
    );
    this.connector = trackReuse(buildConnector({ timeout: settings.connectTimeoutMs, ...deps.connect }));
    const kept = new Map(deps.previous?.targets.map((t) => [t.url, t.state]));
    if (deps.previous) deps.previous.successor = this;
    if (!settings.healthCheck) for (const state of kept.values()) this.dropProbeVerdicts(state);
    this.targets = settings.upstreams.map(
      (u) =>
        new Upstream(
          u,
          new Pool(new URL(u.url).origin, {
            keepAliveTimeout: UPSTREAM_KEEPALIVE_MS,
            headersTimeout: settings.timeoutMs,
            bodyTimeout: settings.timeoutMs,
            connect: this.connector,
          }),
          kept.get(u.url) ?? freshState(),
        ),
    );
    this.balancer = BALANCERS[settings.loadBalancing](this.targets);
    this.eligibleCache = [...this.targets];
    if (settings.preferZone) {
      if (deps.zone === undefined)
        this.logger.warn(
          { service },
          'preferZone is set but the gateway has no zone (gateway.yaml zone, PORTCULLIS_ZONE): every upstream is used alike',
        );
      else if (!this.targets.some((t) => t.zone === deps.zone))
        this.logger.warn(
          { service, zone: deps.zone },
          "preferZone is set but no upstream is in the gateway's zone: every upstream is used alike",
        );
      this.localZone = deps.zone;
      this.inZone = this.targets.some((t) => t.zone === deps.zone);
    }
    this.recompute();
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
    let eligible = this.eligible();
    if (eligible.length === 0) return null;
    // Circuit breakers: an upstream at maxRequests sits out while another has a free slot.
    if (eligible.some(this.isFull, this)) {
      const open = eligible.filter((t) => !this.isFull(t));
      if (open.length > 0) eligible = open;
    }
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

  /**
   * Take a slot of `t` if one is free now (the usual case), with nothing allocated; false when
   * the breaker's limit is reached (then `admit` queues or refuses). The slot is given back by
   * `release`.
   */
  tryAdmit(t: Upstream): boolean {
    const s = t.state;
    if (s.inFlight >= this.maxRequests) return false;
    s.inFlight++;
    return true;
  }

  /**
   * Take a slot of `t`'s circuit breaker for one request: below maxRequests `start` runs now and
   * true is returned; else the request waits (FIFO) for a slot, `start` running once one frees,
   * or `expired` after timeoutMs. Null, with nothing run, when maxPending already wait. Every
   * started request must give its slot back with {@link release}.
   */
  admit(t: Upstream, start: () => void, expired: () => void): true | Waiting | null {
    const s = t.state;
    if (this.tryAdmit(t)) {
      start();
      return true;
    }
    if (s.waiting.length >= this.maxPending) {
      this.events?.breakerRejected?.(this.service, t.url, 'max-pending');
      return null;
    }
    const waiter: Waiter = {
      start,
      timer: undefined,
      over: false,
      cancel() {
        if (waiter.over) return;
        waiter.over = true;
        clearTimeout(waiter.timer);
        const i = s.waiting.indexOf(waiter);
        if (i !== -1) s.waiting.splice(i, 1);
      },
    };
    waiter.timer = setTimeout(() => {
      waiter.cancel();
      this.events?.breakerRejected?.(this.service, t.url, 'pending-timeout');
      expired();
    }, this.settings.timeoutMs);
    s.waiting.push(waiter);
    return waiter;
  }

  /** A request admitted to `t` ended: its slot goes to the oldest waiting request, if any. */
  release(t: Upstream): void {
    const s = t.state;
    s.inFlight--;
    while (s.waiting.length > 0 && s.inFlight < this.maxRequests) {
      const waiter = s.waiting.shift() as Waiter;
      waiter.over = true;
      clearTimeout(waiter.timer);
      s.inFlight++;
      waiter.start();
    }
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

  /**
   * A proxied request to `t` got an answer: a status listed in passiveHealth.statuses is a failure,
   * any other ends the failure streak.
   */
  reportAnswer(t: Upstream, status: number): void {
    if (this.failureStatuses[status] === 1) this.reportFailure(t, `status ${status}`);
    else if (t.state.failures !== 0) t.state.failures = 0;
  }

  /** A proxied request to `t` failed (refused, reset, timed out, or a status counted as failure). */
  reportFailure(t: Upstream, reason: string): void {
    const s = t.state;
    const now = this.now();
    // Failures of requests still in flight when it was ejected do not count towards the next ejection.
    if (s.ejectedUntil > now) return;
    s.failures++;
    const { failures, ejectMs, maxEjectMs } = this.settings.passiveHealth;
    if (s.failures < failures) return;
    s.failures = 0;
    s.ejections = ejectionsAt(s, now, maxEjectMs) + 1;
    const ms = Math.min(ejectMs * s.ejections, maxEjectMs);
    // With active checks, an ejected upstream comes back only after healthyAfter good probes;
    // `healthy` stays the probes' verdict, which panic mode reads.
    if (this.settings.healthCheck) {
      s.ejectedUntil = Number.POSITIVE_INFINITY;
      s.probeOks = 0;
    } else {
      s.ejectedUntil = now + ms;
      s.backAt = s.ejectedUntil;
    }
    this.events?.ejected?.(this.service, t.url);
    this.logger.warn(
      {
        service: this.service,
        upstream: t.url,
        reason,
        ejections: s.ejections,
        ejectMs: this.settings.healthCheck ? undefined : ms,
      },
      'upstream ejected',
    );
    this.healthChanged();
  }

  /** Every upstream's health, load and limits, for GET /upstreams. */
  describe(): GroupView {
    this.eligible();
    const now = this.now();
    const serving = new Set(this.eligibleCache);
    const { failures, statuses, ejectMs, maxEjectMs } = this.settings.passiveHealth;
    return {
      loadBalancing: this.settings.loadBalancing,
      preferZone: this.settings.preferZone,
      panic: this.panic,
      inZone: this.localZone === undefined ? null : this.inZone,
      circuitBreaker: { ...this.settings.circuitBreaker },
      passiveHealth: { failures, statuses: [...statuses], ejectMs, maxEjectMs },
      upstreams: this.targets.map((t) => {
        const s = t.state;
        const ejected = s.ejectedUntil > now;
        return {
          url: t.url,
          zone: t.zone ?? null,
          weight: t.weight,
          health: !s.healthy ? 'unhealthy' : ejected ? 'ejected' : 'healthy',
          ejectedUntil:
            ejected && Number.isFinite(s.ejectedUntil) ? new Date(s.ejectedUntil).toISOString() : null,
          receivingTraffic: serving.has(t),
          consecutiveFailures: s.failures,
          ejections: ejectionsAt(s, now, maxEjectMs),
          inFlight: s.inFlight,
          pending: s.waiting.length,
        };
      }),
    };
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
  /** Replaced by a reload: stop active checks (the successor probes the upstreams it kept). */
  retire(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    this.closed = true;
    this.retire();
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

  /**
   * An upstream's health changed: recompute this group and the groups that replaced it, which
   * share its upstreams' state (a request of the old group may end, and eject, after a reload).
   */
  private healthChanged(): void {
    for (let g: UpstreamGroup | undefined = this; g; g = g.successor) g.recompute();
  }

  /**
   * Active checks were turned off by a reload: their verdicts no longer hold (nothing would ever
   * revise them). An upstream they had down is back; one ejected until good probes is ejected for
   * ejectMs instead.
   */
  private dropProbeVerdicts(s: UpstreamState): void {
    s.healthy = true;
    s.probeFails = 0;
    s.probeOks = 0;
    if (s.ejectedUntil === Number.POSITIVE_INFINITY) {
      s.ejectedUntil = this.now() + this.settings.passiveHealth.ejectMs;
      s.backAt = s.ejectedUntil;
    }
  }

  private isFull(t: Upstream): boolean {
    return t.state.inFlight >= this.maxRequests;
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
    let chosen = panic ? healthy : eligible;
    if (this.localZone !== undefined) {
      const local = chosen.filter((t) => t.zone === this.localZone);
      const inZone = local.length > 0;
      if (inZone) chosen = local;
      if (inZone !== this.inZone) {
        this.inZone = inZone;
        const fields = { service: this.service, zone: this.localZone };
        if (inZone) this.logger.info(fields, "upstream group back in the gateway's zone");
        else
          this.logger.warn(
            fields,
            "no eligible upstream in the gateway's zone: failing over to the other zones",
          );
      }
    }
    this.eligibleCache = chosen;
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
      t.state.probeFails = 0;
      t.state.probeOks++;
      if ((!t.healthy || t.ejectedUntil > this.now()) && t.state.probeOks >= hc.healthyAfter) {
        t.state.healthy = true;
        if (t.state.ejectedUntil > 0) t.state.backAt = this.now();
        t.state.ejectedUntil = 0;
        t.state.failures = 0;
        this.logger.info({ service: this.service, upstream: t.url }, 'upstream healthy');
        this.healthChanged();
      }
    } else {
      t.state.probeOks = 0;
      t.state.probeFails++;
      if (t.healthy && t.state.probeFails >= hc.unhealthyAfter) {
        t.state.healthy = false;
        this.logger.warn({ service: this.service, upstream: t.url }, 'upstream unhealthy (active check)');
        this.healthChanged();
      }
    }
  }
}

/** Ejections in a row of `s` as of `now`: they start over once it has been back for maxEjectMs. */
function ejectionsAt(s: UpstreamState, now: number, maxEjectMs: number): number {
  return s.ejections > 0 && s.ejectedUntil <= now && now - s.backAt >= maxEjectMs ? 0 : s.ejections;
}
