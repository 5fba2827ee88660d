/**
 * The Redis Store: shared by every gateway instance. Rate-limit decisions are atomic Lua scripts
 * (GCRA, the same arithmetic as gcra.ts) run with Redis's own clock, so N instances with skewed
 * clocks enforce one global limit exactly; the decisions of one event-loop turn (and under load
 * those asked for while a script is in flight) share one script and one round trip (see decisionSender). The script body goes once per connection, then
 * EVALSHA, with a fallback on NOSCRIPT (e.g. after a SCRIPT FLUSH or a failover to a replica that
 * never saw it).
 *
 * Failure is fast by design: no offline queue and a short command timeout, so a down Redis costs
 * a request milliseconds, and the rate-limit policy applies its `onStoreError` choice. ioredis
 * reconnects forever in the background; status() follows the connection events.
 */
import { createHash } from 'node:crypto';
import { Cluster, Command, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../logger.ts';
import type { RateDecision, RateLimitSpec, Store, StoreStatus } from './store.ts';

/**
 * Prefix of every key the gateway writes. The version changes whenever the stored format (the
 * GCRA TAT in ms, the sticky value) changes, so old and new gateways never misread each other.
 */
export const KEY_PREFIX = 'pc:v1:';
/** Default command timeout in ms: past it a decision fails and `onStoreError` applies. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 250;
/** Default connect timeout in ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 2_000;
/** Longest pause between reconnect attempts, in ms. */
const MAX_RECONNECT_DELAY_MS = 2_000;

/**
 * GCRA in Lua, the arithmetic of gcra.ts in whole µs (exact below 2^53), for any number of
 * counters: KEYS[i] with ARGV[3i-2..3i] = limit, windowMs, cost. Returns 4 integers per key, in
 * order: allowed 0|1, remaining, resetMs, retryAfterMs. The keys are decided one after the other
 * at one Redis instant, so a key named twice counts twice, exactly as two scripts would.
 */
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 3
  local o = (i - 1) * 4
  local limit = tonumber(ARGV[a + 1])
  local cost = tonumber(ARGV[a + 3])
  local interval = math.max(1, math.floor(tonumber(ARGV[a + 2]) * 1000 / limit + 0.5))
  local burst = limit * interval
  local base = now
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat and tat > now then base = tat end
  local nxt = base + cost * interval
  if nxt - now > burst then
    out[o + 1] = 0
    out[o + 2] = 0
    out[o + 3] = math.ceil((base - now) / 1000)
    out[o + 4] = math.ceil((nxt - burst - now) / 1000)
  else
    redis.call('SET', KEYS[i], string.format('%.0f', nxt), 'PX', math.max(1, math.ceil((nxt - now) / 1000)))
    out[o + 1] = 1
    out[o + 2] = math.floor((burst - (nxt - now)) / interval)
    out[o + 3] = math.ceil((nxt - now) / 1000)
    out[o + 4] = 0
  end
end
return out
`;

/** SHA1 of GCRA_LUA: what EVALSHA names it by. */
const GCRA_SHA = createHash('sha1').update(GCRA_LUA).digest('hex');

/** The script's reply: per key allowed 0|1, remaining, resetMs, retryAfterMs. */
type GcraReply = number[];
/**
 * Most counters one script decides: a batch past it is split into several scripts (each still
 * atomic), so one script never holds Redis for long.
 */
const MAX_KEYS_PER_SCRIPT = 128;
/**
 * Default of RedisStoreOptions.batchHoldMs: how long new decisions may wait for the batch in
 * flight to be answered before they go anyway (see decisionSender). Above a healthy round trip
 * under load, far below the command timeout.
 */
export const DEFAULT_BATCH_HOLD_MS = 2;

/**
 * The EVALSHA of a batch of decisions. Its deadline is kept by the store's one sweep (see
 * decisionSender), not by a timer per command: ioredis arms (and clears) a setTimeout for every
 * command when `commandTimeout` is set, which cost more CPU per decision than the round trip.
 */
class DecisionCommand extends Command {
  override setTimeout(): void {}
}

/**
 * Decisions of one event-loop turn: their keys and arguments go to Redis as one script (or a few,
 * see MAX_KEYS_PER_SCRIPT) in one socket write, and each request's promise settles from its slice
 * of the reply. Once the last script settled, its arrays are emptied and `cmds` dropped: a finished
 * batch holds nothing (see settle).
 */
interface DecisionBatch {
  keys: string[];
  /** limit, windowMs, cost per key. */
  args: number[];
  limits: number[];
  resolves: Array<(decision: RateDecision) => void>;
  rejects: Array<(err: unknown) => void>;
  /** When its decisions fail: commandTimeout after the first of them was asked for. */
  deadline: number;
  cmds: DecisionCommand[] | null;
  open: number;
}

/** A store operation failed because Redis is unreachable or too slow; `cause` has the client's error. */
export class StoreUnavailableError extends Error {
  readonly code = 'PC_STORE_UNAVAILABLE' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export interface RedisStoreOptions {
  /**
   * Single node: `redis://[user:password@]host:port[/db]` or `rediss://` for TLS. Ignored when
   * `sentinel` or `cluster` is given (their passwords may still come from here).
   */
  url?: string;
  /** Sentinel: the master group `name` and sentinel addresses `host:port`. Default: not used. */
  sentinel?: { name: string; sentinels: string[]; sentinelPassword?: string };
  /** Cluster: seed node addresses `host:port` (one is enough). Default: not used. */
  cluster?: { nodes: string[] };
  /** Command timeout in ms. Default 250. */
  commandTimeoutMs?: number;
  /** Connect timeout in ms. Default 2000. */
  connectTimeoutMs?: number;
  /**
   * Longest wait, in ms, of a decision batch while the previous one is in flight (see
   * decisionSender); 0 sends every batch at once. Default DEFAULT_BATCH_HOLD_MS. Not configurable
   * in gateway.yaml: tests set it.
   */
  batchHoldMs?: number;
}

/** The Redis Store; `ready()` resolves once the first connection attempt settled (either way). */
export interface RedisStore extends Store {
  readonly kind: 'redis';
  ready(): Promise<void>;
}

interface GcraCommands {
  pcGcra(key: string, limit: number, windowMs: number, cost: number): Promise<GcraReply>;
}

/** Store keys of rate-limit counters: `pc:v1:rl:<key>`. */
const RL_INFIX = 'rl:';

/**
 * Create a Redis Store and start connecting. Never throws for an unreachable Redis: status() says
 * not ok and every operation rejects with StoreUnavailableError until the connection is back.
 */
export function createRedisStore(options: RedisStoreOptions, logger: Logger): RedisStore {
  const commandTimeout = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const connectTimeout = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const retryStrategy = (times: number) => Math.min(times * 100, MAX_RECONNECT_DELAY_MS);
  const common: RedisOptions = {
    commandTimeout,
    connectTimeout,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Never re-send a decision after a reconnect: the request it was for has been answered.
    autoResendUnfulfilledCommands: false,
    lazyConnect: false,
    // Decisions issued in the same tick share one write (each script still runs atomically on its
    // own): under load this halves the CPU the Redis client costs per request.
    enableAutoPipelining: true,
  };
  const auth = options.url ? credentialsOf(options.url) : {};

  let client: Redis | Cluster;
  let where: string;
  if (options.cluster) {
    where = `cluster ${options.cluster.nodes.join(',')}`;
    client = new Cluster(options.cluster.nodes.map(hostPort), {
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      clusterRetryStrategy: retryStrategy,
      scaleReads: 'master',
      redisOptions: { ...common, ...auth },
    });
  } else if (options.sentinel) {
    where = `sentinel ${options.sentinel.name}@${options.sentinel.sentinels.join(',')}`;
    client = new Redis({
      ...common,
      ...auth,
      retryStrategy,
      name: options.sentinel.name,
      sentinels: options.sentinel.sentinels.map(hostPort),
      sentinelPassword: options.sentinel.sentinelPassword,
    });
  } else {
    const url = options.url ?? 'redis://127.0.0.1:6379';
    where = redactUrl(url);
    client = new Redis(url, { ...common, retryStrategy });
  }
  client.defineCommand('pcGcra', { numberOfKeys: 1, lua: GCRA_LUA });
  const commands = client as unknown as GcraCommands;

  let status: StoreStatus = { kind: 'redis', ok: false, error: 'connecting' };
  let closing = false;
  let settle: () => void = () => undefined;
  const firstAttempt = new Promise<void>((resolve) => {
    settle = resolve;
  });
  // ioredis emits an error for every failed reconnect: record each, log only the transitions.
  const markDown = (error: string) => {
    if (closing) return;
    if (status.ok || status.error === 'connecting')
      logger.warn({ store: where, err: error }, 'redis store unavailable');
    status = { kind: 'redis', ok: false, error };
    settle();
  };
  client.on('ready', () => {
    if (status.error === 'connecting') logger.info({ store: where }, 'redis store connected');
    else logger.info({ store: where }, 'redis store recovered');
    status = { kind: 'redis', ok: true };
    settle();
  });
  client.on('error', (err: Error) => markDown(err.message));
  client.on('close', () => {
    if (status.ok) markDown('connection closed');
  });
  const timer = setTimeout(() => settle(), connectTimeout);
  timer.unref();

  const fail = (op: string, err: unknown): never => {
    throw new StoreUnavailableError(`redis ${op} failed: ${(err as Error).message}`, { cause: err });
  };

  const unavailable = (err: unknown) =>
    new StoreUnavailableError(`redis rate-limit failed: ${(err as Error).message}`, { cause: err });
  // Cluster keeps ioredis's defined command (one key per script): it routes each key to its node.
  const hitCluster = (key: string, spec: RateLimitSpec): Promise<RateDecision> =>
    commands.pcGcra(key, spec.limit, spec.windowMs, spec.cost ?? 1).then(
      (reply) => decisionAt(reply, 0, spec.limit),
      (err: unknown) => {
        throw unavailable(err);
      },
    );
  const hit =
    client instanceof Redis
      ? decisionSender(client, commandTimeout, options.batchHoldMs ?? DEFAULT_BATCH_HOLD_MS, unavailable)
      : hitCluster;

  return {
    kind: 'redis',
    hit: (key: string, spec: RateLimitSpec): Promise<RateDecision> => hit(KEY_PREFIX + RL_INFIX + key, spec),
    async getSticky(key: string): Promise<string | null> {
      try {
        return await client.get(`${KEY_PREFIX}sticky:${key}`);
      } catch (err) {
        return fail('sticky get', err);
      }
    },
    async setSticky(key: string, upstreamId: string, ttlMs: number): Promise<void> {
      try {
        await client.set(`${KEY_PREFIX}sticky:${key}`, upstreamId, 'PX', Math.max(1, Math.ceil(ttlMs)));
      } catch (err) {
        fail('sticky set', err);
      }
    },
    status: () => status,
    ready: () => firstAttempt,
    async close(): Promise<void> {
      closing = true;
      clearTimeout(timer);
      settle();
      try {
        await client.quit();
      } catch {
        client.disconnect();
      }
    },
  };
}

/** The decision at `index` of a script reply. */
function decisionAt(reply: GcraReply, index: number, limit: number): RateDecision {
  const o = index * 4;
  return {
    allowed: reply[o] === 1,
    limit,
    remaining: reply[o + 1] as number,
    resetMs: reply[o + 2] as number,
    retryAfterMs: reply[o + 3] as number,
  };
}

/**
 * Decisions on a single node (or the master found through Sentinel), sent without ioredis's
 * auto-pipelining and command timers, which cost more CPU than the rest of the round trip: the
 * decisions of one event-loop turn are gathered from a setImmediate (so decisions started by
 * every I/O event of the turn share it) into one script call over all their keys, written in one
 * socket write; one timer sweeps the deadlines of the batches in flight. One script per batch
 * instead of one per decision: a decision costs an array slot instead of an ioredis Command, its
 * argument encoding and its reply (about 3 µs a decision in the bench).
 *
 * While a batch is in flight, new decisions gather in the next batch, written as soon as the one
 * in flight settles ("smart batching"), or `holdMs` after the last write if it has not settled
 * by then (a slow round trip, a busy or distant Redis: several batches are then in flight, as
 * without holding). An idle store writes a decision at once (the turn's setImmediate); a busy one
 * sends fewer, larger scripts, and each socket write (tens of µs of loopback TCP in the sending
 * process) serves more requests: about 20 decisions a script instead of 12 in the bench, 4 to 6 µs
 * of proxy CPU less per request. A decision waits at most `holdMs` longer, and fails
 * `commandTimeout` ms after it was asked for, waiting or written (one whose deadline passed while
 * it waited is failed without being sent). Exactness is unchanged: Redis decides every hit, in
 * order.
 *
 * The script body goes with the first batch on each new connection (EVAL), EVALSHA after that; a
 * NOSCRIPT (SCRIPT FLUSH, failover to a replica that never saw it) re-sends that batch as EVAL.
 */
function decisionSender(
  client: Redis,
  commandTimeout: number,
  holdMs: number,
  unavailable: (err: unknown) => StoreUnavailableError,
): (key: string, spec: RateLimitSpec) => Promise<RateDecision> {
  const newBatch = (): DecisionBatch => ({
    keys: [],
    args: [],
    limits: [],
    resolves: [],
    rejects: [],
    deadline: 0,
    cmds: null,
    open: 0,
  });
  let filling = newBatch();
  /** Batches written and not yet past their deadline, oldest first. */
  const inflight: DecisionBatch[] = [];
  /** Batches written and not settled yet. */
  let unsettled = 0;
  /** When the last batch was written (ms). */
  let lastWriteAt = 0;
  /** A flush is scheduled (setImmediate). */
  let scheduled = false;
  /** Flushes a held batch once holdMs passed without the batch in flight settling. */
  let holdTimer: NodeJS.Timeout | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;
  /** The socket the script body was last sent on. */
  let scriptSocket: unknown;

  const arm = (delayMs: number) => {
    sweepTimer = setTimeout(sweep, delayMs);
    sweepTimer.unref();
  };
  function sweep(): void {
    sweepTimer = undefined;
    const now = Date.now();
    let expired = 0;
    for (; expired < inflight.length; expired++) {
      const batch = inflight[expired] as DecisionBatch;
      if (batch.cmds === null) continue;
      if (batch.deadline > now) break;
      for (const cmd of batch.cmds) if (!cmd.isSettled) cmd.reject(new Error('Command timed out'));
    }
    inflight.splice(0, expired);
    while (inflight.length > 0 && (inflight[0] as DecisionBatch).cmds === null) inflight.shift();
    if (inflight.length > 0) arm(Math.max(1, (inflight[0] as DecisionBatch).deadline - now));
  }

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  };

  /** Settle decisions [from, to) of `batch` from the script's reply (or its failure). */
  const settle = (batch: DecisionBatch, from: number, to: number, reply: GcraReply | null, err: unknown) => {
    for (let i = from; i < to; i++) {
      if (reply)
        (batch.resolves[i] as (d: RateDecision) => void)(
          decisionAt(reply, i - from, batch.limits[i] as number),
        );
      else (batch.rejects[i] as (e: unknown) => void)(unavailable(err));
    }
    if (--batch.open === 0) {
      // Settled: it keeps nothing alive (its promises, closures and decisions would otherwise
      // outlive young-generation collections until the sweep, and be promoted), and leaves the
      // deadline queue when it is at its head (batches settle in order on one connection).
      batch.cmds = null;
      batch.keys.length = 0;
      batch.args.length = 0;
      batch.limits.length = 0;
      batch.resolves.length = 0;
      batch.rejects.length = 0;
      while (inflight.length > 0 && (inflight[0] as DecisionBatch).cmds === null) inflight.shift();
      unsettled--;
      // The decisions that gathered meanwhile go now (within this turn's I/O, with what it adds).
      if (filling.keys.length > 0) schedule();
    }
  };

  /** The script over decisions [from, to) of `batch`. */
  const script = (batch: DecisionBatch, from: number, to: number, withBody: boolean): DecisionCommand => {
    const args: Array<string | number> = [withBody ? GCRA_LUA : GCRA_SHA, to - from];
    for (let i = from; i < to; i++) args.push(batch.keys[i] as string);
    for (let i = from * 3; i < to * 3; i++) args.push(batch.args[i] as number);
    const cmd = new DecisionCommand(withBody ? 'eval' : 'evalsha', args);
    cmd.promise.then(
      (reply: unknown) => settle(batch, from, to, reply as GcraReply, null),
      (err: unknown) => {
        if (!(err instanceof Error) || !err.message.includes('NOSCRIPT'))
          return settle(batch, from, to, null, err);
        const retry = new Command('eval', [GCRA_LUA, ...args.slice(1)]);
        client.sendCommand(retry);
        retry.promise.then(
          (reply: unknown) => settle(batch, from, to, reply as GcraReply, null),
          (retryErr: unknown) => settle(batch, from, to, null, retryErr),
        );
      },
    );
    return cmd;
  };

  function flush(): void {
    scheduled = false;
    if (filling.keys.length === 0) return;
    const now = Date.now();
    if (unsettled > 0 && now - lastWriteAt < holdMs) {
      // Wait for the batch in flight (settle() schedules the next flush), holdMs at most.
      if (holdTimer === undefined) {
        holdTimer = setTimeout(
          () => {
            holdTimer = undefined;
            schedule();
          },
          holdMs - (now - lastWriteAt),
        );
        holdTimer.unref();
      }
      return;
    }
    const batch = filling;
    filling = newBatch();
    const count = batch.keys.length;
    if (now >= batch.deadline) {
      // It waited past its deadline behind a batch Redis did not answer: failed, never sent.
      const timedOut = new Error('Command timed out');
      for (let i = 0; i < count; i++) (batch.rejects[i] as (e: unknown) => void)(unavailable(timedOut));
      return;
    }
    const stream = client.stream as unknown;
    let withBody = false;
    if (stream !== scriptSocket && client.status === 'ready') {
      scriptSocket = stream;
      withBody = true;
    }
    const cmds: DecisionCommand[] = [];
    for (let from = 0; from < count; from += MAX_KEYS_PER_SCRIPT) {
      cmds.push(script(batch, from, Math.min(count, from + MAX_KEYS_PER_SCRIPT), withBody));
      withBody = false;
    }
    batch.cmds = cmds;
    batch.open = cmds.length;
    unsettled++;
    lastWriteAt = now;
    // One write for the batch: a socket write per command costs a syscall each.
    const socket = client.stream;
    const cork = client.status === 'ready' && socket?.writable === true;
    if (cork) socket.cork();
    for (const cmd of cmds) void client.sendCommand(cmd);
    if (cork) socket.uncork();
    inflight.push(batch);
    if (sweepTimer === undefined) arm(Math.max(1, batch.deadline - Date.now()));
  }

  return (key, spec) => {
    const batch = filling;
    if (batch.keys.length === 0) {
      batch.deadline = Date.now() + commandTimeout;
      schedule();
    }
    batch.keys.push(key);
    batch.args.push(spec.limit, spec.windowMs, spec.cost ?? 1);
    batch.limits.push(spec.limit);
    return new Promise<RateDecision>((resolve, reject) => {
      batch.resolves.push(resolve);
      batch.rejects.push(reject);
    });
  };
}

/** `host:port` (or a redis:// URL) → ioredis address. */
function hostPort(address: string): { host: string; port: number } {
  const url = new URL(address.includes('://') ? address : `redis://${address}`);
  return { host: url.hostname, port: url.port ? Number(url.port) : 6379 };
}

/** Credentials and TLS of a redis:// URL, for sentinel and cluster nodes. */
function credentialsOf(url: string): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  const u = new URL(url);
  return {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** A URL fit for logs: the password never is. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'redis';
  }
}
