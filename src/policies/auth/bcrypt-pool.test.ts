import { monitorEventLoopDelay } from 'node:perf_hooks';
import bcrypt from 'bcryptjs';
import { afterAll, describe, expect, test } from 'vitest';
import { BcryptBusyError, BcryptPool } from './bcrypt-pool.ts';

describe('bcrypt pool', () => {
  const pools: BcryptPool[] = [];
  const poolOf = (size: number, maxQueued: number) => {
    const pool = new BcryptPool({ size, maxQueued });
    pools.push(pool);
    return pool;
  };
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  test('compares in a worker thread: a match, a mismatch, a malformed hash', async () => {
    const pool = poolOf(1, 4);
    const hash = bcrypt.hashSync('secret', 4);
    expect(await pool.compare('secret', hash)).toBe(true);
    expect(await pool.compare('guess', hash)).toBe(false);
    expect(await pool.compare('secret', 'not-a-hash')).toBe(false);
    expect(pool.stats()).toEqual({ workers: 1, busy: 0, queued: 0 });
  });

  test('past the bounded queue a comparison is refused at once, and the queued ones still finish', async () => {
    const pool = poolOf(1, 2);
    const hash = bcrypt.hashSync('secret', 6);
    const running = [pool.compare('a', hash), pool.compare('b', hash), pool.compare('secret', hash)];
    expect(pool.stats()).toMatchObject({ busy: 1, queued: 2 });
    await expect(pool.compare('c', hash)).rejects.toBeInstanceOf(BcryptBusyError);
    expect(await Promise.all(running)).toEqual([false, false, true]);
  });

  test('the event loop keeps turning while workers compare expensive hashes', async () => {
    const pool = poolOf(1, 8);
    const hash = bcrypt.hashSync('secret', 10);
    // Measured against itself, in the same run (a slow or busy machine slows both): one in-thread
    // comparison blocks the loop for its whole cost; four in the pool must never block it for half
    // of that.
    const inThread = monitorEventLoopDelay({ resolution: 5 });
    inThread.enable();
    await new Promise((r) => setTimeout(r, 20));
    bcrypt.compareSync('guess', hash);
    await new Promise((r) => setTimeout(r, 20));
    inThread.disable();
    const delay = monitorEventLoopDelay({ resolution: 5 });
    delay.enable();
    await Promise.all(Array.from({ length: 4 }, (_, i) => pool.compare(`guess-${i}`, hash)));
    delay.disable();
    expect(delay.max).toBeLessThan(inThread.max / 2);
  });
});
