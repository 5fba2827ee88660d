/**
 * The in-memory Store: the default when no Redis is configured, and the per-instance fallback of
 * the Redis store (`onStoreError: local`). One process only: two gateway instances with memory
 * stores each enforce their own limit.
 */
import { gcraStep } from './gcra.ts';
import type { RateDecision, RateLimitSpec, Store, StoreStatus } from './store.ts';

/** Default bound on keys per map (rate-limit counters, sticky sessions). */
export const DEFAULT_MAX_KEYS = 100_000;
/** Default interval between sweeps of expired keys, in ms. */
export const DEFAULT_SWEEP_INTERVAL_MS = 10_000;

export interface MemoryStoreOptions {
  /** Time source in ms since the epoch. Default `Date.now` (tests inject a fake clock). */
  now?: () => number;
  /**
   * Most keys kept per map. When full and nothing has expired, the least recently written key is
   * dropped (for a counter: that client starts afresh, the lenient side). Default 100000.
   */
  maxKeys?: number;
  /** Expired keys are swept at most this often (on access, no timer). Default 10000 ms. */
  sweepIntervalMs?: number;
}

/**
 * A Map whose entries expire. Insertion order doubles as write order (every write re-inserts),
 * so eviction under pressure drops the least recently written entry. Expired entries are swept
 * on access, at most every `sweepIntervalMs`, and whenever the map is full.
 */
class ExpiringMap<V> {
  readonly #entries = new Map<string, { value: V; expiresAt: number }>();
  readonly #maxKeys: number;
  readonly #sweepIntervalMs: number;
  #lastSweep = Number.NEGATIVE_INFINITY;

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

  set(key: string, value: V, expiresAt: number, now: number): void {
    this.#entries.delete(key);
    if (this.#entries.size >= this.#maxKeys) this.sweep(now);
    if (this.#entries.size >= this.#maxKeys) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expiresAt });
  }

  /** Sweep when the interval has passed since the last sweep. */
  maybeSweep(now: number): void {
    if (now - this.#lastSweep >= this.#sweepIntervalMs) this.sweep(now);
  }

  sweep(now: number): void {
    this.#lastSweep = now;
    for (const [key, entry] of this.#entries) if (entry.expiresAt <= now) this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
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
      if (step.tatUs !== undefined) counters.set(key, step.tatUs, step.tatUs / 1000, t);
      return Promise.resolve(step.decision);
    },
    getSticky(key: string): Promise<string | null> {
      return Promise.resolve(sticky.get(key, now()) ?? null);
    },
    setSticky(key: string, upstreamId: string, ttlMs: number): Promise<void> {
      const t = now();
      sticky.maybeSweep(t);
      sticky.set(key, upstreamId, t + ttlMs, t);
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
