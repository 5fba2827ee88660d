import type { Balancer, BalancerTarget } from './types.ts';

/** Each target's index in the group, so a pick over a subset can find its place in the rotation. */
export function positionsOf<T>(all: readonly T[]): Map<T, number> {
  const positions = new Map<T, number>();
  for (let i = 0; i < all.length; i++) positions.set(all[i]!, i);
  return positions;
}

/**
 * Index in `eligible` of the first target that comes after group position `last`, wrapping to 0.
 * Rotating by group position (not by index in `eligible`) is what keeps the turn order fair when
 * the eligible set changes: a target leaving or returning never gives another one two turns.
 * When every target is eligible, `eligible` is the group itself and the answer is O(1).
 */
export function rotationStart<T>(
  eligible: readonly T[],
  positions: ReadonlyMap<T, number>,
  groupSize: number,
  last: number,
): number {
  const n = eligible.length;
  if (n === groupSize) return last + 1 < n ? last + 1 : 0;
  for (let i = 0; i < n; i++) {
    if ((positions.get(eligible[i]!) ?? -1) > last) return i;
  }
  return 0;
}

/**
 * Round-robin: every eligible target in turn, in group order. Over any window in which the
 * eligible set is stable, each target gets exactly the same number of picks. Weights are ignored
 * (use `weighted` for that). `exclude` skips to the next target in the rotation.
 */
export function createRoundRobin<T extends BalancerTarget>(all: readonly T[]): Balancer<T> {
  const positions = positionsOf(all);
  const groupSize = all.length;
  // Group position of the last pick: the rotation resumes after it.
  let last = -1;
  return {
    pick: function pickRoundRobin(eligible, _ctx, exclude) {
      const n = eligible.length;
      let i = rotationStart(eligible, positions, groupSize, last);
      if (eligible[i] === exclude && n > 1) i = i + 1 === n ? 0 : i + 1;
      const target = eligible[i]!;
      last = n === groupSize ? i : (positions.get(target) ?? -1);
      return target;
    },
  };
}
