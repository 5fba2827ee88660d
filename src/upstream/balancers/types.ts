/**
 * The balancer contract: one `pick()` shape for every algorithm. A balancer is created once
 * per upstream group (and kept across reloads while the group's config is unchanged); the
 * group passes the currently eligible (healthy, not ejected) upstreams on every pick.
 */

/** What a balancer needs to know about an upstream. Owned and mutated by the upstream group. */
export interface BalancerTarget {
  /** Stable id within the group (its URL). */
  readonly id: string;
  readonly weight: number;
  /** Requests currently in flight to this upstream (maintained by the forwarder). */
  inFlight: number;
}

/** Per-request input; only ip-hash reads the client address. */
export interface PickContext {
  clientIp: string;
}

export interface Balancer<T extends BalancerTarget = BalancerTarget> {
  /**
   * Choose one of `eligible` (never empty; a subset of the group's targets, in group order).
   * `exclude` (may be undefined) is a target to avoid if any other is eligible: used by retries.
   */
  pick(eligible: readonly T[], ctx: PickContext, exclude?: T): T;
}

export type BalancerFactory = <T extends BalancerTarget>(all: readonly T[]) => Balancer<T>;
