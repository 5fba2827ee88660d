import { describe, expect, it } from 'vitest';
import { PooledIdGenerator, PooledUuids } from './ids.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('PooledUuids', () => {
  it('gives version-4 UUIDs, all different, across several draws of random bytes', () => {
    const uuids = new PooledUuids();
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = uuids.take();
      expect(id).toMatch(UUID_V4);
      seen.add(id);
    }
    expect(seen.size).toBe(1000);
  });

  it('uses every hex digit in every free position (not a constant pattern)', () => {
    const uuids = new PooledUuids();
    const digits = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 2000; i++) {
      const id = uuids.take();
      for (let at = 0; at < id.length; at++) digits[at]?.add(id.charAt(at));
    }
    const free = digits.filter((_, at) => ![8, 13, 14, 18, 19, 23].includes(at));
    for (const d of free) expect(d.size).toBe(16);
    expect([...(digits[14] as Set<string>)]).toEqual(['4']);
    expect([...(digits[19] as Set<string>)].sort()).toEqual(['8', '9', 'a', 'b']);
  });
});

describe('PooledIdGenerator', () => {
  it('gives W3C trace and span ids: lower-case hex of 32 and 16 digits, never all zeros, unique over a few pool refills', () => {
    const ids = new PooledIdGenerator();
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const t = ids.generateTraceId();
      const s = ids.generateSpanId();
      expect(t).toMatch(/^[0-9a-f]{32}$/);
      expect(s).toMatch(/^[0-9a-f]{16}$/);
      expect(t).not.toBe('0'.repeat(32));
      seen.add(t);
      seen.add(s);
    }
    expect(seen.size).toBe(4000);
  });
});
