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
import { Cluster, Redis, type RedisOptions } from 'ioredis';
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
  pcGcra(
    key: string,
    limit: number,
    windowMs: number,
    cost: number,
  ): Promise<[number, number, number, number]>;
}

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

  return {
    kind: 'redis',
    async hit(key: string, spec: RateLimitSpec): Promise<RateDecision> {
      let reply: [number, number, number, number];
      try {
        reply = await commands.pcGcra(`${KEY_PREFIX}rl:${key}`, spec.limit, spec.windowMs, spec.cost ?? 1);
      } catch (err) {
        return fail('rate-limit', err);
      }
      const [allowed, remaining, resetMs, retryAfterMs] = reply;
      return { allowed: allowed === 1, limit: spec.limit, remaining, resetMs, retryAfterMs };
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
