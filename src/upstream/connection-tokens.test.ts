import { describe, expect, it } from 'vitest';
import { connectionTokens } from './forward.ts';

describe('connectionTokens', () => {
  it('lists no header for the plain values, in any case and spacing', () => {
    for (const v of ['keep-alive', 'close', 'Keep-Alive', 'CLOSE', ' keep-alive ', '\tclose'])
      expect(connectionTokens(v), v).toBeUndefined();
  });

  it('lists every token of a value that names other headers, lower-cased', () => {
    expect(connectionTokens('keep-alive, X-Secret')).toEqual(new Set(['keep-alive', 'x-secret']));
    expect(connectionTokens('close,x-a')).toEqual(new Set(['close', 'x-a']));
    expect(connectionTokens('x-only')).toEqual(new Set(['x-only']));
  });

  it('reads every line of a repeated header, even plain ones', () => {
    expect(connectionTokens(['keep-alive', 'X-Internal'])).toEqual(new Set(['keep-alive', 'x-internal']));
    expect(connectionTokens(['close'])).toEqual(new Set(['close']));
  });
});
