import { describe, expect, it } from 'vitest';
import type { GroupView, UpstreamView } from '../upstream/group.ts';
import { mergeGroupViews, mergeUpstreams } from './primary.ts';
import type { WorkerStatus } from './protocol.ts';

const upstream = (url: string, over: Partial<UpstreamView> = {}): UpstreamView => ({
  url,
  zone: null,
  weight: 1,
  health: 'healthy',
  ejectedUntil: null,
  receivingTraffic: true,
  consecutiveFailures: 0,
  ejections: 0,
  inFlight: 0,
  pending: 0,
  ...over,
});

const group = (upstreams: UpstreamView[], over: Partial<GroupView> = {}): GroupView => ({
  loadBalancing: 'round-robin',
  preferZone: false,
  panic: false,
  inZone: null,
  circuitBreaker: { maxRequests: 1024, maxPending: 1024 },
  passiveHealth: { failures: 3, statuses: [502], ejectMs: 10_000, maxEjectMs: 300_000 },
  upstreams,
  ...over,
});

const worker = (
  groups: Record<string, GroupView>,
  upstreams: WorkerStatus['upstreams'] = {},
): WorkerStatus => ({
  version: 'v1',
  upstreams,
  groups,
});

describe("the instance's view over its workers (/upstreams, /readyz)", () => {
  it('sums in-flight and pending requests, keeps the worst health with the latest ejection end and the most failures', () => {
    const a = 'http://127.0.0.1:4001';
    const b = 'http://127.0.0.1:4002';
    const merged = mergeGroupViews([
      worker({
        svc: group([
          upstream(a, { inFlight: 2, pending: 1 }),
          upstream(b, {
            health: 'ejected',
            ejectedUntil: '2026-01-01T00:00:10.000Z',
            ejections: 1,
            receivingTraffic: false,
          }),
        ]),
      }),
      worker({
        svc: group(
          [
            upstream(a, { inFlight: 3, consecutiveFailures: 2 }),
            upstream(b, {
              health: 'ejected',
              ejectedUntil: '2026-01-01T00:00:20.000Z',
              ejections: 2,
              receivingTraffic: false,
            }),
          ],
          { panic: true },
        ),
      }),
    ]);
    expect(merged.svc?.panic).toBe(true);
    expect(merged.svc?.upstreams).toEqual([
      upstream(a, { inFlight: 5, pending: 1, consecutiveFailures: 2 }),
      upstream(b, {
        health: 'ejected',
        ejectedUntil: '2026-01-01T00:00:20.000Z',
        ejections: 2,
        receivingTraffic: false,
      }),
    ]);
  });

  it('an upstream out in one worker only is shown out, still receiving traffic from the other', () => {
    const a = 'http://127.0.0.1:4001';
    const merged = mergeGroupViews([
      worker({ svc: group([upstream(a, { health: 'unhealthy', receivingTraffic: false })]) }),
      worker({ svc: group([upstream(a)]) }),
    ]);
    expect(merged.svc?.upstreams[0]).toMatchObject({ health: 'unhealthy', receivingTraffic: true });
  });

  it('readiness counts: the most ejected and unhealthy any worker sees, panic if any is', () => {
    expect(
      mergeUpstreams([
        worker({}, { svc: { upstreams: 3, ejected: 1, unhealthy: 0, panic: false } }),
        worker({}, { svc: { upstreams: 3, ejected: 0, unhealthy: 2, panic: true } }),
      ]),
    ).toEqual({ svc: { upstreams: 3, ejected: 1, unhealthy: 2, panic: true } });
  });
});
