/**
 * Pick the Store for a gateway: Redis when `state.redis` (or a sentinel/cluster setting) is
 * configured, memory otherwise.
 */
import type { GatewayConfig } from '../config/schema.ts';
import type { Logger } from '../logger.ts';
import { createMemoryStore, type MemoryStoreOptions } from './memory.ts';
import type { RedisStoreOptions } from './redis.ts';
import type { Store } from './store.ts';

/**
 * `state` of gateway.yaml plus the Redis topology and timeouts (until the config schema carries
 * them: see RedisStoreOptions for each field and its default) and memory-store bounds.
 */
export type StoreConfig = GatewayConfig['state'] &
  Omit<RedisStoreOptions, 'url'> & {
    /** Bounds of the memory store (default store, no Redis). Defaults as in MemoryStoreOptions. */
    memory?: MemoryStoreOptions;
  };

/**
 * Create the gateway's Store. With Redis it waits for the first connection attempt to settle (at
 * most the connect timeout, default 2 s) so the first requests are not refused needlessly, but an
 * unreachable Redis never fails startup: status() reports it and the store keeps reconnecting.
 */
export async function createStore(config: StoreConfig, logger: Logger): Promise<Store> {
  if (!config.redis && !config.sentinel && !config.cluster) return createMemoryStore(config.memory);
  // ioredis (and its Lua scripts) load only when a config uses Redis: about 8 MB of resident memory.
  const { createRedisStore } = await import('./redis.ts');
  const store = createRedisStore(
    {
      url: config.redis,
      sentinel: config.sentinel,
      cluster: config.cluster,
      commandTimeoutMs: config.commandTimeoutMs,
      connectTimeoutMs: config.connectTimeoutMs,
    },
    logger,
  );
  await store.ready();
  return store;
}
