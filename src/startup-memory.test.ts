import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { releaseStartupMemory } from './startup-memory.ts';

describe('releaseStartupMemory', () => {
  it('collects garbage left by loading and returns the pages: the heap shrinks', () => {
    let garbage: string[][] | undefined = Array.from({ length: 200 }, (_, i) =>
      Array.from({ length: 1000 }, (_, j) => `loading leftover ${i}:${j}`),
    );
    const before = process.memoryUsage();
    expect(garbage.length).toBe(200);
    garbage = undefined;
    releaseStartupMemory();
    const after = process.memoryUsage();
    expect(before.heapUsed - after.heapUsed).toBeGreaterThan(8 * 1024 * 1024);
    expect(after.heapTotal).toBeLessThan(before.heapTotal);
  });

  it('leaves no gc() exposed to code that runs later', () => {
    releaseStartupMemory();
    expect(runInNewContext('typeof gc')).toBe('undefined');
  });
});
