/**
 * The Redis Store: shared by every gateway instance. Each rate-limit decision is one atomic Lua
 * script (GCRA, the same arithmetic as gcra.ts) run with Redis's own clock, so N instances with
 * skewed clocks enforce one global limit exactly. One round trip per decision: ioredis sends the
 * script body once per connection, then EVALSHA, and falls back on NOSCRIPT (e.g. after a
 * SCRIPT FLUSH or a failover to a replica that never saw it).
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
 * GCRA in Lua, the arithmetic of gcra.ts in whole µs (exact below 2^53). KEYS[1]: counter;
 * ARGV: limit, windowMs, cost. Returns {allowed 0|1, remaining, resetMs, retryAfterMs}.
 */
const GCRA_LUA = `
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local interval = math.max(1, math.floor(tonumber(ARGV[2]) * 1000 / limit + 0.5))
local burst = limit * interval
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local base = now
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat > now then base = tat end
local nxt = base + cost * interval
if nxt - now > burst then
  return {0, 0, math.ceil((base - now) / 1000), math.ceil((nxt - burst - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.max(1, math.ceil((nxt - now) / 1000)))
return {1, math.floor((burst - (nxt - now)) / interval), math.ceil((nxt - now) / 1000), 0}
`;

/** SHA1 of GCRA_LUA: what EVALSHA names it by. */
const GCRA_SHA = createHash('sha1').update(GCRA_LUA).digest('hex');

/** The script's reply: allowed 0|1, remaining, resetMs, retryAfterMs. */
type GcraReply = [number, number, number, number];

/**
 * A decision's EVALSHA. Its deadline is kept by the store's one sweep (see DecisionBatches), not
 * by a timer per command: ioredis arms (and clears) a setTimeout for every command when
 * `commandTimeout` is set, which cost more CPU per decision than the script's round trip.
 */
class DecisionCommand extends Command {
  override setTimeout(): void {}
}

/**
 * Decisions written to Redis together: one socket write per event-loop turn, one shared deadline.
 * `cmds` is dropped as soon as the last command settles, so a finished batch holds nothing while
 * it waits in the deadline queue.
 */
interface DecisionBatch {
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

  const hitCluster = async (key: string, spec: RateLimitSpec): Promise<GcraReply> =>
    commands.pcGcra(key, spec.limit, spec.windowMs, spec.cost ?? 1);
  const send = client instanceof Redis ? decisionSender(client, commandTimeout) : hitCluster;

  return {
    kind: 'redis',
    async hit(key: string, spec: RateLimitSpec): Promise<RateDecision> {
      let reply: GcraReply;
      try {
        reply = await send(KEY_PREFIX + RL_INFIX + key, spec);
      } catch (err) {
        return fail('rate-limit', err);
      }
      return {
        allowed: reply[0] === 1,
        limit: spec.limit,
        remaining: reply[1],
        resetMs: reply[2],
        retryAfterMs: reply[3],
      };
    },
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

/**
 * Decisions on a single node (or the master found through Sentinel), sent without ioredis's
 * auto-pipelining and command timers, which cost more CPU than the rest of the round trip: the
 * EVALSHAs of one event-loop turn are queued and written in one socket write from a setImmediate
 * (so decisions started by every I/O event of the turn share it), and one timer sweeps the
 * deadlines of the batches in flight, failing each command `commandTimeout` ms after its write
 * exactly as ioredis's own timer would. Each EVALSHA is still its own atomic script run.
 *
 * The script body goes with the first decision on each new connection (EVAL), EVALSHA after
 * that; a NOSCRIPT (SCRIPT FLUSH, failover to a replica that never saw it) re-sends that
 * decision as EVAL. Cluster keeps ioredis's defined command: it routes each key to its node.
 */
function decisionSender(
  client: Redis,
  commandTimeout: number,
): (key: string, spec: RateLimitSpec) => Promise<GcraReply> {
  let filling: DecisionBatch = { deadline: 0, cmds: [], open: 0 };
  let flushScheduled = false;
  /** Batches written and not yet past their deadline, oldest first. */
  const inflight: DecisionBatch[] = [];
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

  const flush = () => {
    flushScheduled = false;
    const batch = filling;
    filling = { deadline: 0, cmds: [], open: 0 };
    const cmds = batch.cmds as DecisionCommand[];
    const stream = client.stream as unknown;
    if (stream !== scriptSocket && client.status === 'ready') {
      scriptSocket = stream;
      const first = cmds[0] as DecisionCommand;
      first.name = 'eval';
      first.args[0] = GCRA_LUA;
    }
    // One write for the batch: a socket write per command costs a syscall each.
    const socket = client.stream;
    const cork = client.status === 'ready' && socket?.writable === true;
    if (cork) socket.cork();
    for (const cmd of cmds) void client.sendCommand(cmd);
    if (cork) socket.uncork();
    batch.deadline = Date.now() + commandTimeout;
    inflight.push(batch);
    if (sweepTimer === undefined) arm(commandTimeout);
  };

  const settled = (batch: DecisionBatch) => {
    if (--batch.open === 0) batch.cmds = null;
  };

  return async (key, spec) => {
    const cmd = new DecisionCommand('evalsha', [GCRA_SHA, 1, key, spec.limit, spec.windowMs, spec.cost ?? 1]);
    const batch = filling;
    (batch.cmds as DecisionCommand[]).push(cmd);
    batch.open++;
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
    try {
      const reply = (await cmd.promise) as GcraReply;
      settled(batch);
      return reply;
    } catch (err) {
      settled(batch);
      if (!(err instanceof Error) || !err.message.includes('NOSCRIPT')) throw err;
      const retry = new Command('eval', [GCRA_LUA, 1, key, spec.limit, spec.windowMs, spec.cost ?? 1]);
      return (await client.sendCommand(retry)) as GcraReply;
    }
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
