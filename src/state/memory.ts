/**
 * The in-memory Store: the default when no Redis is configured, and the per-instance fallback of
 * the Redis store (`onStoreError: local`). One process only: two gateway instances with memory
 * stores each enforce their own limit.
 */
import { gcraStep } from './gcra.ts';
import type { RateDecision, RateLimitSpec, Store, StoreStatus } from './store.ts';

/**
 * Default bound on keys per map (rate-limit counters, sticky sessions): 100000 each, about 20 MB
 * for both maps full. `state.memory.maxKeys` (StoreConfig.memory) overrides it.
 */
export const DEFAULT_MAX_KEYS = 100_000;
/** Default interval between passes over the map reclaiming expired keys, in ms. */
export const DEFAULT_SWEEP_INTERVAL_MS = 10_000;
/** Entries a sweep pass examines per store operation: a pass is spread over many operations. */
const SWEEP_BATCH = 32;

export interface MemoryStoreOptions {
  /** Time source in ms since the epoch. Default `Date.now` (tests inject a fake clock). */
  now?: () => number;
  /**
   * Most keys kept per map. When full, the least recently used key is dropped, in O(1) (for a
   * counter: that client starts afresh, the lenient side). Default DEFAULT_MAX_KEYS (100000).
   */
  maxKeys?: number;
  /**
   * A pass reclaiming expired keys starts at most this often (on access, no timer) and advances
   * SWEEP_BATCH entries per operation until it has seen every key. Default 10000 ms.
   */
  sweepIntervalMs?: number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

/**
 * A Map whose entries expire, bounded to `maxKeys`. Map order is recency: a write or a touch
 * re-inserts the key at the end, so when full the first key is the least recently used one and
 * dropping it is O(1) (no scan per insert). Expired keys are reclaimed when read, and by a sweep
 * pass that starts every `sweepIntervalMs` and examines SWEEP_BATCH entries per operation, so no
 * single operation pays for a pass over the whole map.
 */
class ExpiringMap<V> {
  readonly #entries = new Map<string, Entry<V>>();
  readonly #maxKeys: number;
  readonly #sweepIntervalMs: number;
  #lastPass = Number.NEGATIVE_INFINITY;
  /** The sweep pass in progress (a live Map iterator: it sees deletions and re-insertions). */
  #cursor: MapIterator<[string, Entry<V>]> | undefined;

  constructor(maxKeys: number, sweepIntervalMs: number) {
    this.#maxKeys = maxKeys;
    this.#sweepIntervalMs = sweepIntervalMs;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string, now: number): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  /** Mark `key` as just used (a denied client stays the most recent, not the next to drop). */
  touch(key: string): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
  }

  set(key: string, value: V, expiresAt: number): void {
    if (!this.#entries.delete(key) && this.#entries.size >= this.#maxKeys) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expiresAt });
  }

  /** Advance the sweep pass by SWEEP_BATCH entries; start one when the interval has passed. */
  maybeSweep(now: number): void {
    if (this.#cursor === undefined) {
      if (now - this.#lastPass < this.#sweepIntervalMs) return;
      this.#lastPass = now;
      this.#cursor = this.#entries.entries();
    }
    for (let n = 0; n < SWEEP_BATCH; n++) {
      const next = this.#cursor.next();
      if (next.done) {
        this.#cursor = undefined;
        return;
      }
      if (next.value[1].expiresAt <= now) this.#entries.delete(next.value[0]);
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#cursor = undefined;
  }
}

/** The in-memory Store, with its map sizes exposed for tests and metrics. */
export interface MemoryStore extends Store {
  readonly kind: 'memory';
  /** Keys currently held: rate-limit counters and sticky sessions. */
  size(): { counters: number; sticky: number };
}

/** Create an in-memory Store (see MemoryStoreOptions for the defaults). */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  const now = options.now ?? Date.now;
  const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  const sweepIntervalMs = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
  // A counter's value is its GCRA TAT (µs), which is also when it expires: past it, the key is fresh.
  const counters = new ExpiringMap<number>(maxKeys, sweepIntervalMs);
  const sticky = new ExpiringMap<string>(maxKeys, sweepIntervalMs);
  const status: StoreStatus = { kind: 'memory', ok: true };

  return {
    kind: 'memory',
    hit(key: string, spec: RateLimitSpec): Promise<RateDecision> {
      const t = now();
      counters.maybeSweep(t);
      const step = gcraStep(counters.get(key, t), Math.round(t * 1000), spec);
      if (step.tatUs !== undefined) counters.set(key, step.tatUs, step.tatUs / 1000);
      else counters.touch(key);
      return Promise.resolve(step.decision);
    },
    getSticky(key: string): Promise<string | null> {
      const upstreamId = sticky.get(key, now());
      if (upstreamId !== undefined) sticky.touch(key);
      return Promise.resolve(upstreamId ?? null);
    },
    setSticky(key: string, upstreamId: string, ttlMs: number): Promise<void> {
      const t = now();
      sticky.maybeSweep(t);
      sticky.set(key, upstreamId, t + ttlMs);
      return Promise.resolve();
    },
    status: () => status,
    size: () => ({ counters: counters.size, sticky: sticky.size }),
    close(): Promise<void> {
      counters.clear();
      sticky.clear();
      return Promise.resolve();
    },
  };
}
