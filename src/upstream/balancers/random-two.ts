import type { Balancer, BalancerTarget } from './types.ts';

/** Options of {@link createRandomTwo}. */
export interface RandomTwoOptions {
  /** Uniform source in [0, 1); tests inject a seeded one. Default `Math.random`. */
  random?: () => number;
}

/**
 * Power of two choices: draw two distinct eligible targets at random and send the request to
 * the one with fewer requests in flight relative to its weight (the first drawn on a tie).
 * Nearly as even as least-connections, without scanning every target or herding on one.
 * `exclude` is never drawn while another target is eligible.
 */
export function createRandomTwo<T extends BalancerTarget>(
  _all: readonly T[],
  options: RandomTwoOptions = {},
): Balancer<T> {
  const random = options.random ?? Math.random;
  return {
    pick: function pickRandomTwo(eligible, _ctx, exclude) {
      const n = eligible.length;
      if (n === 1) return eligible[0]!;
      const skip = exclude === undefined ? -1 : eligible.indexOf(exclude);
      const choices = skip === -1 ? n : n - 1;
      if (choices === 1) return eligible[skip === 0 ? 1 : 0]!;
      // Draw two distinct slots among `choices`, then step over the excluded index.
      let a = Math.floor(random() * choices);
      let b = Math.floor(random() * (choices - 1));
      if (b >= a) b++;
      if (skip !== -1) {
        if (a >= skip) a++;
        if (b >= skip) b++;
      }
      const first = eligible[a]!;
      const second = eligible[b]!;
      return second.inFlight * first.weight < first.inFlight * second.weight ? second : first;
    },
  };
}
