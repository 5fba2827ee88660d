import { describe, expect, it } from 'vitest';
import { createMemo } from './memo.ts';

describe('createMemo', () => {
  it('computes a key once while it stays cached, falsy values included', () => {
    const calls: string[] = [];
    const memo = createMemo(4, (key) => {
      calls.push(key);
      return key === 'empty' ? '' : key.toUpperCase();
    });
    expect([memo('a'), memo('a'), memo('empty'), memo('empty')]).toEqual(['A', 'A', '', '']);
    expect(calls).toEqual(['a', 'empty']);
  });

  it('keeps at most two generations: a flood of distinct keys drops the oldest, recent hits survive', () => {
    const calls: string[] = [];
    const memo = createMemo(2, (key) => {
      calls.push(key);
      return key;
    });
    for (const key of ['a', 'b', 'c', 'a', 'd', 'e', 'f', 'a']) memo(key);
    // a, b fill generation 1; c starts generation 2 (a is moved back on its hit); d, e, f push a out.
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'a']);
  });
});
