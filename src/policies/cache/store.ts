/**
 * Where the `cache` policy keeps responses. Two implementations: memory (one process, bounded in
 * bytes, least recently used out first) and Redis (shared by every gateway instance). Entries are
 * grouped by URL (the canonical path and query): one URL holds the variants its Vary selects,
 * purging a URL drops them all.
 */
import type { StoredResponse } from './semantics.ts';

export interface CacheStore {
  readonly kind: 'memory' | 'redis';
  /**
   * The stored variant of `url` that `select` picks: it gets the field names the URL's responses
   * vary on and returns the variant id for the request at hand.
   */
  get(url: string, select: (vary: readonly string[]) => string): Promise<StoredResponse | undefined>;
  /**
   * Store a variant of `url` for `ttlMs`; `vary` is the field list it was selected by. A new `vary`
   * replaces the URL's other variants (they were selected by another list).
   */
  put(
    url: string,
    vary: readonly string[],
    variant: string,
    entry: StoredResponse,
    ttlMs: number,
  ): Promise<void>;
  /** Drop every variant of `url`; resolves to how many URLs were dropped (0 or 1). */
  purge(url: string): Promise<number>;
  /** Drop every URL starting with `prefix`; resolves to how many. */
  purgePrefix(prefix: string): Promise<number>;
  close(): Promise<void>;
}

/** Serialised form for byte stores: u32 length of the JSON metadata, the metadata, the body. */
export function encodeEntry(e: StoredResponse): Buffer {
  const meta = Buffer.from(
    JSON.stringify({
      s: e.status,
      h: e.headers,
      q: e.requestTime,
      r: e.responseTime,
      a: Number.isFinite(e.initialAge) ? e.initialAge : -1,
    }),
  );
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(meta.length, 0);
  return Buffer.concat([head, meta, e.body]);
}

/** The inverse of encodeEntry; undefined for bytes it did not write. */
export function decodeEntry(b: Buffer): StoredResponse | undefined {
  if (b.length < 4) return undefined;
  const n = b.readUInt32BE(0);
  if (4 + n > b.length) return undefined;
  try {
    const m = JSON.parse(b.subarray(4, 4 + n).toString()) as {
      s: number;
      h: Record<string, string | string[]>;
      q: number;
      r: number;
      a: number;
    };
    return {
      status: m.s,
      headers: m.h,
      requestTime: m.q,
      responseTime: m.r,
      initialAge: m.a < 0 ? Number.POSITIVE_INFINITY : m.a,
      body: b.subarray(4 + n),
    };
  } catch {
    return undefined;
  }
}

/** Approximate bytes an entry holds (body plus headers), for the memory store's bound. */
export function entrySize(e: StoredResponse): number {
  let n = e.body.length + 200;
  for (const k in e.headers) {
    const v = e.headers[k];
    n += k.length + (Array.isArray(v) ? v.reduce((a, s) => a + s.length + 4, 0) : (v as string).length);
  }
  return n;
}
