import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ServiceSettings } from '../registry/types.ts';
import { type Upstream, UpstreamGroup } from './group.ts';

const logger = pino({ level: 'silent' });
const open: UpstreamGroup[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((g) => g.close(0)));
});

/** Settings for a group over `urls` (nothing is dialled: these tests only report outcomes). */
function settings(urls: string[], extra: Partial<ServiceSettings> = {}): ServiceSettings {
  return {
    basePath: '/svc',
    upstreams: urls.map((url) => ({ url, weight: 1 })),
    loadBalancing: 'round-robin',
    passiveHealth: {
      failures: 1,
      ejectMs: 10_000,
      panicThreshold: 0,
      statuses: [502, 503, 504],
      maxEjectMs: 35_000,
    },
    circuitBreaker: { maxRequests: 1024, maxPending: 1024 },
    preferZone: false,
    timeoutMs: 10_000,
    connectTimeoutMs: 1_000,
    retries: 0,
    retryOn: ['connect-failure'],
    retryBudget: { percent: 20, burst: 10 },
    mock: false,
    passThrough: false,
    tls: { rejectUnauthorized: true },
    websocket: false,
    ...extra,
  };
}

/** A group on a clock the test moves. */
function groupOf(s: ServiceSettings, deps: { previous?: UpstreamGroup; zone?: string } = {}) {
  const clock = { now: 1_000_000 };
  const group = new UpstreamGroup('svc', s, { logger, now: () => clock.now, ...deps });
  open.push(group);
  return { group, clock };
}

const A = 'http://127.0.0.1:4001';
const B = 'http://127.0.0.1:4002';
const C = 'http://127.0.0.1:4003';

function byUrl(group: UpstreamGroup, url: string): Upstream {
  return group.targets.find((t) => t.url === url) as Upstream;
}

describe('passive health: answers and ejection time', () => {
  it('counts listed statuses in a row; any other answer ends the streak', () => {
    const { group } = groupOf(
      settings([A, B], { passiveHealth: { ...settings([]).passiveHealth, failures: 3 } }),
    );
    const a = byUrl(group, A);
    group.reportAnswer(a, 503);
    group.reportAnswer(a, 502);
    group.reportAnswer(a, 500); // not listed: a success as far as ejection goes
    group.reportAnswer(a, 504);
    group.reportAnswer(a, 503);
    expect(group.describe().upstreams[0]).toMatchObject({ health: 'healthy', consecutiveFailures: 2 });
    group.reportAnswer(a, 503);
    expect(group.describe().upstreams[0]).toMatchObject({
      health: 'ejected',
      ejections: 1,
      consecutiveFailures: 0,
    });
  });

  it('ejects for ejectMs × ejections in a row, capped at maxEjectMs, and forgets after maxEjectMs back in service', () => {
    const { group, clock } = groupOf(settings([A, B]));
    const a = byUrl(group, A);
    const ejectedFor = () => Date.parse(group.describe().upstreams[0]?.ejectedUntil ?? '') - clock.now;
    const cases = [
      { ejections: 1, ms: 10_000 },
      { ejections: 2, ms: 20_000 },
      { ejections: 3, ms: 30_000 },
      { ejections: 4, ms: 35_000 }, // the ceiling
      { ejections: 5, ms: 35_000 },
    ];
    for (const c of cases) {
      group.reportFailure(a, 'ECONNREFUSED');
      expect(group.describe().upstreams[0]).toMatchObject({ health: 'ejected', ejections: c.ejections });
      expect(ejectedFor()).toBe(c.ms);
      expect(group.eligible().map((t) => t.url)).toEqual([B]);
      clock.now += c.ms; // the ejection ends: back in rotation, with the count kept
      expect(group.eligible().map((t) => t.url)).toEqual([A, B]);
    }
    // Back in service for less than maxEjectMs: the next ejection is longer still (capped).
    clock.now += 34_999;
    expect(group.describe().upstreams[0]?.ejections).toBe(5);
    group.reportFailure(a, 'ECONNREFUSED');
    expect(ejectedFor()).toBe(35_000);
    // Back in service for maxEjectMs: forgiven, the next ejection is ejectMs again.
    clock.now += 35_000 + 35_000;
    expect(group.describe().upstreams[0]?.ejections).toBe(0);
    group.reportFailure(a, 'ECONNREFUSED');
    expect(group.describe().upstreams[0]?.ejections).toBe(1);
    expect(ejectedFor()).toBe(10_000);
  });

  it('never ejects the last upstream: with every one ejected, all stay in rotation (panic)', () => {
    const { group } = groupOf(settings([A, B]));
    group.reportFailure(byUrl(group, A), 'ECONNREFUSED');
    group.reportFailure(byUrl(group, B), 'ECONNREFUSED');
    expect(group.eligible().map((t) => t.url)).toEqual([A, B]);
    expect(group.describe()).toMatchObject({ panic: true });
    expect(group.describe().upstreams.map((u) => [u.health, u.receivingTraffic])).toEqual([
      ['ejected', true],
      ['ejected', true],
    ]);
  });
});

describe('circuit breaker', () => {
  it('admits maxRequests, queues maxPending in order, refuses the rest, and hands freed slots on', () => {
    const { group } = groupOf(settings([A], { circuitBreaker: { maxRequests: 2, maxPending: 2 } }));
    const a = byUrl(group, A);
    const started: string[] = [];
    const expired: string[] = [];
    const admit = (name: string) =>
      group.admit(
        a,
        () => started.push(name),
        () => expired.push(name),
      );
    expect(admit('r1')).toBe(true);
    expect(admit('r2')).toBe(true);
    const w3 = admit('r3');
    const w4 = admit('r4');
    expect(typeof w3).toBe('object');
    expect(typeof w4).toBe('object');
    expect(admit('r5')).toBeNull();
    expect(started).toEqual(['r1', 'r2']);
    expect(group.describe().upstreams[0]).toMatchObject({ inFlight: 2, pending: 2 });
    // r3's client goes away: it leaves the queue, and r4 gets the first free slot.
    (w3 as { cancel(): void }).cancel();
    group.release(a);
    expect(started).toEqual(['r1', 'r2', 'r4']);
    expect(group.describe().upstreams[0]).toMatchObject({ inFlight: 2, pending: 0 });
    group.release(a);
    group.release(a);
    expect(group.describe().upstreams[0]).toMatchObject({ inFlight: 0, pending: 0 });
    expect(expired).toEqual([]);
  });

  it('picks an upstream with a free slot over a full one', () => {
    const { group } = groupOf(settings([A, B], { circuitBreaker: { maxRequests: 1, maxPending: 0 } }));
    expect(
      group.admit(
        byUrl(group, A),
        () => undefined,
        () => undefined,
      ),
    ).toBe(true);
    const picks = Array.from({ length: 4 }, () => group.pick({ clientIp: '127.0.0.1' })?.url);
    expect(picks).toEqual([B, B, B, B]);
  });
});

describe('locality', () => {
  it("keeps traffic in the gateway's zone while one of its upstreams is eligible, then fails over and back", () => {
    const s = settings([A, B, C], { preferZone: true });
    s.upstreams = [
      { url: A, weight: 1, zone: 'z1' },
      { url: B, weight: 1, zone: 'z2' },
      { url: C, weight: 1, zone: 'z2' },
    ];
    const { group, clock } = groupOf(s, { zone: 'z1' });
    expect(group.eligible().map((t) => t.url)).toEqual([A]);
    expect(group.describe().inZone).toBe(true);
    group.reportFailure(byUrl(group, A), 'ECONNREFUSED');
    expect(group.eligible().map((t) => t.url)).toEqual([B, C]);
    expect(group.describe().inZone).toBe(false);
    clock.now += 10_000;
    expect(group.eligible().map((t) => t.url)).toEqual([A]);
    expect(group.describe().inZone).toBe(true);
  });
});

describe('a group replacing another (reload)', () => {
  it('a reload that turns active checks off readmits what they had down, and times out a probe-bound ejection', () => {
    const hc = { path: '/health', intervalMs: 60_000, timeoutMs: 1_000, unhealthyAfter: 1, healthyAfter: 1 };
    const { group: before, clock } = groupOf(settings([A, B, C], { healthCheck: hc }));
    byUrl(before, A).state.healthy = false; // as a failed probe leaves it
    before.reportFailure(byUrl(before, B), 'ECONNREFUSED'); // ejected until good probes
    expect(before.describe().upstreams.map((u) => [u.health, u.ejectedUntil])).toEqual([
      ['unhealthy', null],
      ['ejected', null],
      ['healthy', null],
    ]);
    const after = new UpstreamGroup('svc', settings([A, B, C]), {
      logger,
      now: () => clock.now,
      previous: before,
    });
    open.push(after);
    expect(after.describe().upstreams.map((u) => u.health)).toEqual(['healthy', 'ejected', 'healthy']);
    clock.now += 10_000;
    expect(after.eligible().map((t) => t.url)).toEqual([A, B, C]);
  });

  it('takes over the state of the same URLs; new ones start healthy; the retry budget carries on', () => {
    const { group: before, clock } = groupOf(settings([A, B, C]));
    before.reportFailure(byUrl(before, A), 'ECONNREFUSED');
    expect(
      before.admit(
        byUrl(before, B),
        () => undefined,
        () => undefined,
      ),
    ).toBe(true);
    for (let i = 0; i < 10; i++) expect(before.spendRetry()).toBe(true);
    const s = settings([A, B, 'http://127.0.0.1:4004'], { timeoutMs: 5_000 });
    const after = new UpstreamGroup('svc', s, { logger, now: () => clock.now, previous: before });
    open.push(after);
    expect(
      after.describe().upstreams.map((u) => ({
        url: u.url,
        health: u.health,
        ejections: u.ejections,
        inFlight: u.inFlight,
      })),
    ).toEqual([
      { url: A, health: 'ejected', ejections: 1, inFlight: 0 },
      { url: B, health: 'healthy', ejections: 0, inFlight: 1 },
      { url: 'http://127.0.0.1:4004', health: 'healthy', ejections: 0, inFlight: 0 },
    ]);
    // The old group's request ends after the swap: the new group sees the slot freed.
    before.release(byUrl(before, B));
    expect(after.describe().upstreams[1]?.inFlight).toBe(0);
    expect(after.spendRetry()).toBe(false);
    // A request of the old group fails after the swap: the new group stops sending there at once.
    expect(after.eligible().map((t) => t.url)).toContain(B);
    before.reportFailure(byUrl(before, B), 'ECONNRESET');
    expect(after.eligible().map((t) => t.url)).toEqual(['http://127.0.0.1:4004']);
  });
});
