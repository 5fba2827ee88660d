import type { LoadBalancing } from '../../registry/types.ts';
import { createIpHash } from './ip-hash.ts';
import { createLeastConnections } from './least-connections.ts';
import { createRandomTwo } from './random-two.ts';
import { createRoundRobin } from './round-robin.ts';
import type { BalancerFactory } from './types.ts';
import { createWeighted } from './weighted.ts';

/** THE list of algorithms, keyed by the `loadBalancing` value of `x-portcullis` (default `round-robin`). */
export const BALANCERS: Readonly<Record<LoadBalancing, BalancerFactory>> = {
  'round-robin': createRoundRobin,
  weighted: createWeighted,
  'least-connections': createLeastConnections,
  'ip-hash': createIpHash,
  'random-two': createRandomTwo,
};

export { createIpHash, POINTS_PER_WEIGHT } from './ip-hash.ts';
export { createLeastConnections } from './least-connections.ts';
export { createRandomTwo, type RandomTwoOptions } from './random-two.ts';
export { createRoundRobin } from './round-robin.ts';
export type { Balancer, BalancerFactory, BalancerTarget, PickContext } from './types.ts';
export { createWeighted } from './weighted.ts';
