/**
 * GCRA (generic cell rate algorithm), the one rate-limit algorithm of both stores. It keeps one
 * number per key, the theoretical arrival time (TAT): a limit of `limit` per `windowMs` admits a
 * burst of `limit` requests, then one more every `windowMs / limit`. It is exact (no
 * approximation at window edges, unlike fixed or two-bucket sliding windows) and O(1) in memory,
 * which is why the Redis script (redis.ts) implements the same arithmetic line for line.
 *
 * All arithmetic is in whole microseconds: epoch µs (~1.7e15) stay below 2^53, so sums are exact
 * and a burst admits exactly `limit` requests whatever `windowMs / limit` is (with fractional ms,
 * float rounding made the last request of a 7-per-second burst fail). The interval is rounded to
 * a whole µs (at least 1, so at most 1 000 000 requests per second per key) and the burst is
 * `limit` intervals, which differs from `windowMs` by under `limit / 2` µs.
 */
import type { RateDecision, RateLimitSpec } from './store.ts';

/** The result of one GCRA step: the decision and the TAT to store (undefined: leave it unchanged). */
export interface GcraStep {
  decision: RateDecision;
  /** New TAT in µs since the epoch when the request was admitted; the key may expire then. */
  tatUs?: number;
}

/** The emission interval in whole µs (at least 1). */
export function intervalUs(spec: RateLimitSpec): number {
  return Math.max(1, Math.round((spec.windowMs * 1000) / spec.limit));
}

/**
 * One GCRA decision. `tatUs` is the stored TAT (undefined: none, i.e. a fully replenished key),
 * `nowUs` the current time; both in whole µs. Pure: the caller stores the returned TAT.
 */
export function gcraStep(tatUs: number | undefined, nowUs: number, spec: RateLimitSpec): GcraStep {
  const interval = intervalUs(spec);
  const burst = spec.limit * interval;
  const base = tatUs === undefined || tatUs < nowUs ? nowUs : tatUs;
  const next = base + (spec.cost ?? 1) * interval;
  if (next - nowUs > burst) {
    return {
      decision: {
        allowed: false,
        limit: spec.limit,
        remaining: 0,
        resetMs: Math.ceil((base - nowUs) / 1000),
        retryAfterMs: Math.ceil((next - burst - nowUs) / 1000),
      },
    };
  }
  return {
    decision: {
      allowed: true,
      limit: spec.limit,
      remaining: Math.floor((burst - (next - nowUs)) / interval),
      resetMs: Math.ceil((next - nowUs) / 1000),
      retryAfterMs: 0,
    },
    tatUs: next,
  };
}
