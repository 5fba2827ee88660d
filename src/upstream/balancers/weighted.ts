import { positionsOf } from './round-robin.ts';
import type { Balancer, BalancerTarget } from './types.ts';

/**
 * Smooth weighted round-robin (nginx's algorithm): on each pick every eligible target's running
 * score grows by its weight, the highest score wins and gives back the eligible total. Over one
 * cycle (the sum of the weights) each target is picked exactly `weight` times, interleaved
 * rather than in bursts (3:1:1 gives a b a c a). Only eligible targets take part; an excluded
 * target sits the pick out, as nginx does for a peer already tried.
 */
export function createWeighted<T extends BalancerTarget>(all: readonly T[]): Balancer<T> {
  const positions = positionsOf(all);
  const groupSize = all.length;
  // Running scores by group position; an ineligible target keeps its score until it returns.
  const current = new Float64Array(groupSize);
  return {
    pick: function pickWeighted(eligible, _ctx, exclude) {
      const n = eligible.length;
      if (n === 1) return eligible[0]!;
      const whole = n === groupSize;
      let total = 0;
      let best = -1;
      let bestPosition = 0;
      let bestScore = Number.NEGATIVE_INFINITY;
      for (let i = 0; i < n; i++) {
        const target = eligible[i]!;
        if (target === exclude) continue;
        const position = whole ? i : positions.get(target);
        if (position === undefined) continue;
        const score = current[position]! + target.weight;
        current[position] = score;
        total += target.weight;
        if (score > bestScore) {
          bestScore = score;
          best = i;
          bestPosition = position;
        }
      }
      // Only reachable if `eligible` breaks the contract (targets not in the group).
      if (best === -1) return eligible[0]!;
      current[bestPosition] = bestScore - total;
      return eligible[best]!;
    },
  };
}
