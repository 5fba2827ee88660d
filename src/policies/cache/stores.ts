/**
 * The cache stores of one gateway, shared by every cached route and kept across reloads: the
 * memory store (one per gateway, bounded in bytes) and, when gateway.yaml `state` names Redis, the
 * Redis store (one connection per gateway). Looked up by the gateway's Store (one per gateway), so
 * the admin app reaches the same stores to purge, and `closeCacheStores` ends them with the gateway.
 */
import type { GatewayConfig } from '../../config/schema.ts';
import type { Logger } from '../../logger.ts';
import type { Store } from '../../state/store.ts';
import { createMemoryCacheStore } from './memory-store.ts';
import type { createRedisCacheStore as CreateRedisCacheStore } from './redis-store.ts';
import type { CacheStore } from './store.ts';

export interface CacheStores {
  memory(): CacheStore;
  /** The store `state` chooses: Redis when configured, else memory. */
  state(): CacheStore;
  /** In-flight fetches per URL of `store` (request coalescing), shared by its routes. */
  inflight(store: CacheStore): Map<string, Promise<void>>;
  /** The stores created so far (purges go to each). */
  all(): CacheStore[];
  close(): Promise<void>;
}

const byGateway = new WeakMap<Store, CacheStores>();

/** The Redis cache store's factory, once loadRedisCacheStore() ran. */
let createRedisCacheStore: typeof CreateRedisCacheStore | undefined;

/**
 * Load the Redis cache store (and ioredis) before a route whose `state` names Redis creates its
 * stores: a gateway without Redis never loads it.
 */
export async function loadRedisCacheStore(): Promise<void> {
  createRedisCacheStore ??= (await import('./redis-store.ts')).createRedisCacheStore;
}

/** The cache stores of the gateway that owns `gatewayStore` (created on first use). */
export function cacheStoresFor(gatewayStore: Store, config: GatewayConfig, logger: Logger): CacheStores {
  let s = byGateway.get(gatewayStore);
  if (s) return s;
  let memory: CacheStore | undefined;
  let redis: CacheStore | undefined;
  const flights = new Map<CacheStore, Map<string, Promise<void>>>();
  const state = config.state;
  const hasRedis = Boolean(state.redis || state.sentinel || state.cluster);
  s = {
    memory() {
      memory ??= createMemoryCacheStore({ maxBytes: state.cacheMemoryBytes });
      return memory;
    },
    state() {
      if (!hasRedis) return this.memory();
      if (!createRedisCacheStore)
        throw new Error('loadRedisCacheStore() must run before the Redis cache store is used');
      redis ??= createRedisCacheStore(state, logger);
      return redis;
    },
    inflight(store) {
      let m = flights.get(store);
      if (!m) {
        m = new Map();
        flights.set(store, m);
      }
      return m;
    },
    all: () => [memory, redis].filter((x): x is CacheStore => x !== undefined),
    async close() {
      await Promise.all([memory?.close(), redis?.close()]);
      memory = undefined;
      redis = undefined;
      byGateway.delete(gatewayStore);
    },
  };
  byGateway.set(gatewayStore, s);
  return s;
}

/** The cache stores of a gateway, if any cached route created them. */
export function existingCacheStores(gatewayStore: Store): CacheStores | undefined {
  return byGateway.get(gatewayStore);
}

/** End the cache stores of a gateway (its close()). */
export async function closeCacheStores(gatewayStore: Store): Promise<void> {
  await byGateway.get(gatewayStore)?.close();
}
