import { describe, expect, it } from 'vitest';
import type { LoadBalancing } from '../../registry/types.ts';
import {
  BALANCERS,
  type Balancer,
  type BalancerTarget,
  createIpHash,
  createLeastConnections,
  createRandomTwo,
  createRoundRobin,
  createWeighted,
} from './index.ts';

const CTX = { clientIp: '203.0.113.7' };
const ALGORITHMS = Object.keys(BALANCERS) as LoadBalancing[];

/** Targets with the given weights and in-flight counts, ids `u0`, `u1`, … */
function targets(weights: number[], inFlight: number[] = []): BalancerTarget[] {
  return weights.map((weight, i) => ({ id: `u${i}`, weight, inFlight: inFlight[i] ?? 0 }));
}

/** mulberry32: a seeded PRNG so every "random" test sees the same sequence on every run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Half IPv4, half IPv6 client addresses, in Node's canonical text form. */
function clientIps(count: number, random: () => number): string[] {
  const byte = () => Math.floor(random() * 256);
  const group = () => Math.floor(random() * 0x10000).toString(16);
  const ips: string[] = [];
  for (let i = 0; i < count; i++) {
    ips.push(
      i % 2 === 0
        ? `${byte()}.${byte()}.${byte()}.${byte()}`
        : `2001:db8:${group()}:${group()}:${group()}:${group()}:${group()}:${group()}`,
    );
  }
  return ips;
}

/** How many of `picks` went to each target id. */
function tally(balancer: Balancer, eligible: BalancerTarget[], picks: number, ips?: string[]) {
  const counts: Record<string, number> = Object.fromEntries(eligible.map((t) => [t.id, 0]));
  for (let i = 0; i < picks; i++) {
    const id = balancer.pick(eligible, ips ? { clientIp: ips[i]! } : CTX).id;
    counts[id] = (counts[id] ?? 0) + 1;
  }
  return counts;
}

/** Which target id each client IP lands on. */
function mapping(balancer: Balancer, eligible: BalancerTarget[], ips: string[]): string[] {
  return ips.map((clientIp) => balancer.pick(eligible, { clientIp }).id);
}

describe('distribution over three targets matches the algorithm', () => {
  const ips = clientIps(30_000, seeded(1));
  const cases: {
    name: string;
    create: (all: BalancerTarget[]) => Balancer;
    weights: number[];
    picks: number;
    /** Expected share of each target, in order. */
    shares: number[];
    /** Allowed absolute deviation of each share; 0 = exact. */
    tolerance: number;
    byIp?: boolean;
  }[] = [
    {
      name: 'round-robin: exactly even, ignoring weights',
      create: createRoundRobin,
      weights: [3, 1, 1],
      picks: 300,
      shares: [1 / 3, 1 / 3, 1 / 3],
      tolerance: 0,
    },
    {
      name: 'weighted 3:1:1: exactly 60/20/20',
      create: createWeighted,
      weights: [3, 1, 1],
      picks: 500,
      shares: [0.6, 0.2, 0.2],
      tolerance: 0,
    },
    {
      name: 'weighted 5:3:2: exactly 50/30/20',
      create: createWeighted,
      weights: [5, 3, 2],
      picks: 1000,
      shares: [0.5, 0.3, 0.2],
      tolerance: 0,
    },
    {
      name: 'least-connections, all idle: round-robin between the ties',
      create: createLeastConnections,
      weights: [1, 1, 1],
      picks: 300,
      shares: [1 / 3, 1 / 3, 1 / 3],
      tolerance: 0,
    },
    {
      name: 'random-two, equal load: even within a few %',
      create: (all) => createRandomTwo(all, { random: seeded(2) }),
      weights: [1, 1, 1],
      picks: 30_000,
      shares: [1 / 3, 1 / 3, 1 / 3],
      tolerance: 0.03,
    },
    {
      name: 'ip-hash, equal weights: even within a few % over random clients',
      create: createIpHash,
      weights: [1, 1, 1],
      picks: 30_000,
      shares: [1 / 3, 1 / 3, 1 / 3],
      tolerance: 0.05,
      byIp: true,
    },
    {
      name: 'ip-hash 2:1:1: weights honoured within a few %',
      create: createIpHash,
      weights: [2, 1, 1],
      picks: 30_000,
      shares: [0.5, 0.25, 0.25],
      tolerance: 0.05,
      byIp: true,
    },
  ];

  it.each(cases)('$name', ({ create, weights, picks, shares, tolerance, byIp }) => {
    const all = targets(weights);
    const counts = tally(create(all), all, picks, byIp ? ips : undefined);
    all.forEach((t, i) => {
      const share = counts[t.id]! / picks;
      if (tolerance === 0) expect(counts[t.id], t.id).toBe(shares[i]! * picks);
      else expect(Math.abs(share - shares[i]!), `${t.id} got ${share}`).toBeLessThanOrEqual(tolerance);
    });
  });
});

describe('round-robin', () => {
  it('keeps its turn order when a target leaves: nobody gets two turns before another gets one', () => {
    const all = targets([1, 1, 1, 1]);
    const [, b, c, d] = all as [BalancerTarget, BalancerTarget, BalancerTarget, BalancerTarget];
    const rr = createRoundRobin(all);
    const seen = [all, all, all].map((eligible) => rr.pick(eligible, CTX).id);
    // u0 u1 u2 served; u0 goes down: the rotation continues at u3, not back at the start.
    const withoutA = [b, c, d];
    for (let i = 0; i < 6; i++) seen.push(rr.pick(withoutA, CTX).id);
    // u0 comes back right after u2 was served: it is next in line after u3.
    for (let i = 0; i < 4; i++) seen.push(rr.pick(all, CTX).id);
    expect(seen).toEqual(['u0', 'u1', 'u2', 'u3', 'u1', 'u2', 'u3', 'u1', 'u2', 'u3', 'u0', 'u1', 'u2']);
  });
});

describe('weighted', () => {
  it('interleaves picks instead of bursting (nginx smooth order for 3:1:1)', () => {
    const all = targets([3, 1, 1]);
    const w = createWeighted(all);
    const order = Array.from({ length: 10 }, () => w.pick(all, CTX).id);
    expect(order).toEqual(['u0', 'u1', 'u0', 'u2', 'u0', 'u0', 'u1', 'u0', 'u2', 'u0']);
  });

  it('shares only among eligible targets: the heavy one down leaves the others 50/50 exactly', () => {
    const all = targets([3, 1, 1]);
    const w = createWeighted(all);
    const counts = tally(w, all.slice(1), 100);
    expect(counts).toEqual({ u1: 50, u2: 50 });
  });

  it('honours weights exactly again once a target returns', () => {
    const all = targets([3, 1, 1]);
    const w = createWeighted(all);
    tally(w, [all[0]!, all[2]!], 7);
    // Scores drift by at most one cycle while a target is away; over whole cycles they even out.
    const counts = tally(w, all, 5000);
    expect(Math.abs(counts.u0! - 3000)).toBeLessThanOrEqual(3);
    expect(Math.abs(counts.u1! - 1000)).toBeLessThanOrEqual(3);
    expect(Math.abs(counts.u2! - 1000)).toBeLessThanOrEqual(3);
  });
});

describe('least-connections', () => {
  const cases: { name: string; weights: number[]; inFlight: number[]; expected: string[] }[] = [
    {
      name: 'the only idle target wins every time',
      weights: [1, 1, 1],
      inFlight: [5, 0, 3],
      expected: ['u1'],
    },
    {
      name: 'load is relative to weight (3 of 4 beats 1 of 1)',
      weights: [4, 1],
      inFlight: [3, 1],
      expected: ['u0'],
    },
    { name: 'two idle targets alternate', weights: [1, 1, 1], inFlight: [2, 0, 0], expected: ['u1', 'u2'] },
  ];

  it.each(cases)('$name', ({ weights, inFlight, expected }) => {
    const all = targets(weights, inFlight);
    const counts = tally(createLeastConnections(all), all, 100);
    for (const t of all) {
      expect(counts[t.id], t.id).toBe(expected.includes(t.id) ? 100 / expected.length : 0);
    }
  });

  it('keeps held requests proportional to weight when nothing completes (3:1:1)', () => {
    const all = targets([3, 1, 1]);
    const lc = createLeastConnections(all);
    for (let i = 0; i < 500; i++) lc.pick(all, CTX).inFlight++;
    expect(all.map((t) => t.inFlight)).toEqual([300, 100, 100]);
  });
});

describe('random-two', () => {
  it('always takes the less loaded of the two it draws (two targets: both are drawn)', () => {
    const all = targets([1, 1], [4, 1]);
    expect(tally(createRandomTwo(all, { random: seeded(3) }), all, 1000)).toEqual({ u0: 0, u1: 1000 });
  });

  it('compares load relative to weight', () => {
    const all = targets([1, 4], [1, 2]);
    expect(tally(createRandomTwo(all, { random: seeded(4) }), all, 1000)).toEqual({ u0: 0, u1: 1000 });
  });

  it('starves the most loaded of three and favours the idle one (~2/3, 1/3, 0)', () => {
    const all = targets([1, 1, 1], [10, 5, 0]);
    const counts = tally(createRandomTwo(all, { random: seeded(5) }), all, 30_000);
    expect(counts.u0).toBe(0);
    expect(Math.abs(counts.u1! / 30_000 - 1 / 3)).toBeLessThan(0.03);
    expect(Math.abs(counts.u2! / 30_000 - 2 / 3)).toBeLessThan(0.03);
  });

  it('draws two distinct targets even at the ends of the random range', () => {
    const all = targets([1, 1, 1], [0, 0, 9]);
    for (const r of [0, 0.999_999]) {
      // Two equal draws of the same slot would be u2 versus itself; distinct draws never pick u2.
      const picked = createRandomTwo(all, { random: () => r }).pick(all, CTX);
      expect(picked.id).not.toBe('u2');
    }
  });
});

describe('ip-hash', () => {
  const ips = clientIps(10_000, seeded(6));

  it('sends the same client to the same target, across picks and across rebuilt balancers', () => {
    const all = targets([1, 1, 1, 1]);
    const first = mapping(createIpHash(all), all, ips);
    const hash = createIpHash(all);
    expect(mapping(hash, all, ips)).toEqual(first);
    expect(mapping(hash, all, ips)).toEqual(first);
  });

  it('does not depend on the order of the targets in the group', () => {
    const all = targets([1, 2, 1, 3]);
    const reversed = [...all].reverse();
    expect(mapping(createIpHash(reversed), reversed, ips)).toEqual(mapping(createIpHash(all), all, ips));
  });

  it('treats an IPv4-mapped IPv6 address as the IPv4 client', () => {
    const all = targets([1, 1, 1, 1]);
    const hash = createIpHash(all);
    const v4 = ips.filter((ip) => ip.includes('.')).slice(0, 200);
    expect(
      mapping(
        hash,
        all,
        v4.map((ip) => `::ffff:${ip}`),
      ),
    ).toEqual(mapping(hash, all, v4));
  });

  const removals: { name: string; after: (all: BalancerTarget[], removed: number) => string[] }[] = [
    {
      name: 'ineligible (down)',
      after: (all, removed) =>
        mapping(
          createIpHash(all),
          all.filter((_, i) => i !== removed),
          ips,
        ),
    },
    {
      name: 'removed from the group (balancer rebuilt with 3)',
      after: (all, removed) => {
        const rest = all.filter((_, i) => i !== removed);
        return mapping(createIpHash(rest), rest, ips);
      },
    },
  ];

  describe.each(removals)('losing 1 of 4 targets, $name', ({ after }) => {
    it.each([0, 1, 2, 3])('target u%i: remaps ~1/4 of clients, and only those that were on it', (removed) => {
      const all = targets([1, 1, 1, 1]);
      const before = mapping(createIpHash(all), all, ips);
      const now = after(all, removed);
      let moved = 0;
      for (let i = 0; i < ips.length; i++) {
        if (now[i] === before[i]) continue;
        moved++;
        expect(before[i], `${ips[i]} moved off a healthy target`).toBe(`u${removed}`);
      }
      expect(moved / ips.length).toBeGreaterThanOrEqual(0.15);
      expect(moved / ips.length).toBeLessThanOrEqual(0.35);
      expect(now).not.toContain(`u${removed}`);
    });
  });

  it('gives clients of a target that comes back their old target again', () => {
    const all = targets([1, 1, 1, 1]);
    const hash = createIpHash(all);
    const before = mapping(hash, all, ips);
    mapping(hash, all.slice(1), ips);
    expect(mapping(hash, all, ips)).toEqual(before);
  });

  it('on retry (exclude) moves only the excluded client to the next target on the ring', () => {
    const all = targets([1, 1, 1, 1]);
    const hash = createIpHash(all);
    const before = mapping(hash, all, ips);
    // Excluding u0 on every pick is what "u0 ineligible" does to u0's clients, and nothing else.
    const retried = ips.map((clientIp) => hash.pick(all, { clientIp }, all[0]).id);
    expect(retried).toEqual(mapping(createIpHash(all), all.slice(1), ips));
    expect(retried.filter((id, i) => id !== before[i]).length).toBe(
      before.filter((id) => id === 'u0').length,
    );
  });
});

/** Each algorithm, created with a seeded rng where it takes one. */
function create(algorithm: LoadBalancing, all: BalancerTarget[]): Balancer {
  return algorithm === 'random-two' ? createRandomTwo(all, { random: seeded(7) }) : BALANCERS[algorithm](all);
}

describe.each(ALGORITHMS)('%s: the contract', (algorithm) => {
  const ips = clientIps(300, seeded(8));

  it.each([0, 1, 2])('never returns the excluded target u%i while another is eligible', (excluded) => {
    // u1 is idle and heaviest, so load- and weight-aware algorithms would prefer it.
    const all = targets([1, 3, 1], [2, 0, 2]);
    const balancer = create(algorithm, all);
    const picked = new Set<string>();
    for (const clientIp of ips) picked.add(balancer.pick(all, { clientIp }, all[excluded]).id);
    expect(picked.has(`u${excluded}`)).toBe(false);
    expect(picked.size).toBeGreaterThan(0);
  });

  it('honours exclude on a subset of the group too', () => {
    const all = targets([1, 1, 1, 1]);
    const balancer = create(algorithm, all);
    const eligible = [all[1]!, all[3]!];
    for (const clientIp of ips) expect(balancer.pick(eligible, { clientIp }, all[1]).id).toBe('u3');
  });

  it('returns the single eligible target, even when it is excluded', () => {
    const all = targets([1, 1, 1], [0, 9, 0]);
    const balancer = create(algorithm, all);
    for (const clientIp of ips.slice(0, 20)) {
      expect(balancer.pick([all[1]!], { clientIp })).toBe(all[1]);
      expect(balancer.pick([all[1]!], { clientIp }, all[1])).toBe(all[1]);
    }
  });

  it('only ever returns an eligible target', () => {
    const all = targets([2, 1, 1, 1, 3]);
    const balancer = create(algorithm, all);
    const eligible = [all[0]!, all[2]!, all[4]!];
    for (const clientIp of ips) expect(eligible).toContain(balancer.pick(eligible, { clientIp }));
  });
});
