/**
 * The one state interface: rate-limit counters and sticky-session maps. Two implementations:
 * memory (default, one process) and Redis (shared by every gateway instance; each decision one
 * atomic Lua script, so N instances enforce one global limit exactly).
 */

/** The outcome of one rate-limit decision. */
export interface RateDecision {
  allowed: boolean;
  /** The limit (requests per window). */
  limit: number;
  /** Requests still allowed right now, after this one (0 when denied). */
  remaining: number;
  /** Milliseconds until the window has fully replenished (`RateLimit` reset). */
  resetMs: number;
  /** When denied: milliseconds until a request would be allowed (`Retry-After`). */
  retryAfterMs: number;
}

export interface RateLimitSpec {
  /** Requests per window. */
  limit: number;
  windowMs: number;
  /** Weight of this request (default 1). */
  cost?: number;
}

export interface StoreStatus {
  kind: 'memory' | 'redis';
  /** False while the backing service is unreachable. */
  ok: boolean;
  /** Last error, when not ok. */
  error?: string;
}

export interface Store {
  readonly kind: 'memory' | 'redis';
  /** Count a request against `key` and decide, atomically. Rejects when the store is unreachable. */
  hit(key: string, spec: RateLimitSpec): Promise<RateDecision>;
  /** Sticky map: the upstream id a session is bound to, or null. */
  getSticky(key: string): Promise<string | null>;
  /** Bind a session to an upstream id for `ttlMs` (refreshing the TTL). */
  setSticky(key: string, upstreamId: string, ttlMs: number): Promise<void>;
  status(): StoreStatus;
  close(): Promise<void>;
}
