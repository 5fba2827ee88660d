import { positionsOf } from './round-robin.ts';
import type { Balancer, BalancerTarget } from './types.ts';

/**
 * Ring points per unit of weight. ~160 keeps each target's share of the ring within a few
 * percent of its weight (ketama uses the same figure) while the ring stays small enough for a
 * binary search of ~10 steps on a typical group.
 */
export const POINTS_PER_WEIGHT = 160;

/** IPv4-mapped IPv6 prefix: `::ffff:1.2.3.4` is the same client as `1.2.3.4` on a dual-stack socket. */
const MAPPED_V4_PREFIX = '::ffff:';

/**
 * 32-bit FNV-1a of `text` from `start`, finished with murmur3's fmix32 so that keys differing
 * only in their last characters (`…#1`, `…#2`, neighbouring IPs) still land far apart.
 * Hand-written: it runs once per request, and a library or node:crypto digest would allocate.
 */
function hash32(text: string, start: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hashClientIp(ip: string): number {
  const start =
    ip.startsWith(MAPPED_V4_PREFIX) && ip.includes('.', MAPPED_V4_PREFIX.length)
      ? MAPPED_V4_PREFIX.length
      : 0;
  return hash32(ip, start);
}

/**
 * Consistent hashing on the client IP. Each target owns `POINTS_PER_WEIGHT × weight` points on a
 * ring (at least one), placed by hashing its id, so the ring depends only on the ids and weights,
 * not on their order. A client hashes to a ring position and takes the first eligible,
 * non-excluded target clockwise. Hence: a client keeps its target while that target is healthy,
 * and losing one of N targets (ineligible, or gone from the group) moves only the ~1/N of
 * clients that were on it; everyone else stays put.
 */
export function createIpHash<T extends BalancerTarget>(all: readonly T[]): Balancer<T> {
  const positions = positionsOf(all);
  const groupSize = all.length;
  const points: { hash: number; owner: number; id: string; index: number }[] = [];
  for (let owner = 0; owner < groupSize; owner++) {
    const { id, weight } = all[owner]!;
    const count = Math.max(1, Math.round(POINTS_PER_WEIGHT * weight));
    for (let index = 0; index < count; index++) {
      points.push({ hash: hash32(`${id}#${index}`, 0), owner, id, index });
    }
  }
  // Hash collisions are ordered by id, so the ring never depends on the order of `all`.
  points.sort((x, y) => x.hash - y.hash || (x.id < y.id ? -1 : x.id > y.id ? 1 : x.index - y.index));
  const size = points.length;
  const ringHash = Uint32Array.from(points, (p) => p.hash);
  const ringOwner = Uint32Array.from(points, (p) => p.owner);
  // Membership of the current pick's eligible set, stamped with a per-pick epoch (no clearing).
  const stamp = new Uint32Array(groupSize);
  let epoch = 0;

  return {
    pick: function pickIpHash(eligible, ctx, exclude) {
      const n = eligible.length;
      if (n === 1 || size === 0) return eligible[0]!;
      const h = hashClientIp(ctx.clientIp);
      let lo = 0;
      let hi = size;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (ringHash[mid]! < h) lo = mid + 1;
        else hi = mid;
      }
      const whole = n === groupSize;
      if (!whole) {
        epoch = (epoch + 1) >>> 0;
        if (epoch === 0) {
          stamp.fill(0);
          epoch = 1;
        }
        for (let i = 0; i < n; i++) {
          const position = positions.get(eligible[i]!);
          if (position !== undefined) stamp[position] = epoch;
        }
      }
      for (let k = 0, i = lo === size ? 0 : lo; k < size; k++, i = i + 1 === size ? 0 : i + 1) {
        const owner = ringOwner[i]!;
        if (!whole && stamp[owner] !== epoch) continue;
        // When all are eligible, `eligible` is the group itself: same index, same object.
        const target = whole ? eligible[owner]! : all[owner]!;
        if (target !== exclude) return target;
      }
      // Only reachable if `eligible` breaks the contract (targets not in the group).
      return eligible[0] === exclude ? eligible[1]! : eligible[0]!;
    },
  };
}
