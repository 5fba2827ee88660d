/**
 * The in-process cache store: bounded in bytes (bodies and headers), least recently used variant
 * out first, expired entries dropped when met. One per gateway (every cached route shares the
 * bound); a second gateway instance has its own.
 */
import type { StoredResponse } from './semantics.ts';
import { type CacheStore, entrySize } from './store.ts';

/** Default bound of the memory cache: 64 MiB. */
export const DEFAULT_MEMORY_CACHE_BYTES = 64 * 1024 * 1024;

export interface MemoryCacheOptions {
  /** Most bytes held (bodies + headers). Default DEFAULT_MEMORY_CACHE_BYTES. */
  maxBytes?: number;
  /** Time source, ms since the epoch. Default Date.now. */
  now?: () => number;
}

interface Slot {
  url: string;
  variant: string;
  entry: StoredResponse;
  size: number;
  expiresAt: number;
}

interface UrlIndex {
  vary: readonly string[];
  variants: Set<string>;
}

export interface MemoryCacheStore extends CacheStore {
  readonly kind: 'memory';
  /** Bytes held now. */
  bytes(): number;
}

export function createMemoryCacheStore(opts: MemoryCacheOptions = {}): MemoryCacheStore {
  const maxBytes = opts.maxBytes ?? DEFAULT_MEMORY_CACHE_BYTES;
  const now = opts.now ?? Date.now;
  // Map order is recency: a read moves the slot to the end, eviction takes from the front.
  const slots = new Map<string, Slot>();
  const urls = new Map<string, UrlIndex>();
  let held = 0;

  const slotKey = (url: string, variant: string) => `${url}\u0000${variant}`;
  const drop = (key: string, s: Slot) => {
    slots.delete(key);
    held -= s.size;
    const idx = urls.get(s.url);
    if (idx) {
      idx.variants.delete(s.variant);
      if (idx.variants.size === 0) urls.delete(s.url);
    }
  };
  const dropUrl = (url: string): number => {
    const idx = urls.get(url);
    if (!idx) return 0;
    for (const v of [...idx.variants]) {
      const key = slotKey(url, v);
      const s = slots.get(key);
      if (s) drop(key, s);
    }
    urls.delete(url);
    return 1;
  };

  return {
    kind: 'memory',
    bytes: () => held,
    async get(url, select) {
      const idx = urls.get(url);
      if (!idx) return undefined;
      const key = slotKey(url, select(idx.vary));
      const s = slots.get(key);
      if (!s) return undefined;
      if (s.expiresAt <= now()) {
        drop(key, s);
        return undefined;
      }
      slots.delete(key);
      slots.set(key, s);
      return s.entry;
    },
    async put(url, vary, variant, entry, ttlMs) {
      const size = entrySize(entry);
      if (size > maxBytes) return;
      let idx = urls.get(url);
      if (idx && idx.vary.join(',') !== vary.join(',')) {
        dropUrl(url);
        idx = undefined;
      }
      const key = slotKey(url, variant);
      const old = slots.get(key);
      if (old) drop(key, old);
      while (held + size > maxBytes) {
        const first = slots.entries().next().value;
        if (!first) break;
        drop(first[0], first[1]);
      }
      // Dropping the last variant (the old copy, or by eviction) removed the URL's index.
      idx = urls.get(url);
      if (!idx) {
        idx = { vary, variants: new Set() };
        urls.set(url, idx);
      }
      idx.variants.add(variant);
      slots.set(key, { url, variant, entry, size, expiresAt: now() + ttlMs });
      held += size;
    },
    async purge(url) {
      return dropUrl(url);
    },
    async purgePrefix(prefix) {
      let n = 0;
      for (const url of [...urls.keys()]) if (url.startsWith(prefix)) n += dropUrl(url);
      return n;
    },
    async close() {
      slots.clear();
      urls.clear();
      held = 0;
    },
  };
}
