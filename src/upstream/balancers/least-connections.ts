import { positionsOf, rotationStart } from './round-robin.ts';
import type { Balancer, BalancerTarget } from './types.ts';

/**
 * Least connections: the eligible target with the fewest requests in flight relative to its
 * weight (inFlight / weight, compared by cross-multiplying so nothing divides). Ties go
 * round-robin, starting after the last pick, so idle targets share the load evenly.
 */
export function createLeastConnections<T extends BalancerTarget>(all: readonly T[]): Balancer<T> {
  const positions = positionsOf(all);
  const groupSize = all.length;
  let last = -1;
  return {
    pick: function pickLeastConnections(eligible, _ctx, exclude) {
      const n = eligible.length;
      if (n === 1) return eligible[0]!;
      let i = rotationStart(eligible, positions, groupSize, last);
      let best: T | undefined;
      let bestIndex = 0;
      for (let k = 0; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
        const target = eligible[i]!;
        if (target === exclude) continue;
        if (best === undefined || target.inFlight * best.weight < best.inFlight * target.weight) {
          best = target;
          bestIndex = i;
        }
      }
      // `best` is unset only if every eligible entry is `exclude` (duplicates: a broken contract).
      if (best === undefined) return eligible[0]!;
      last = n === groupSize ? bestIndex : (positions.get(best) ?? -1);
      return best;
    },
  };
}
