import { describe, expect, test } from 'vitest';
import { compileCidrs } from './cidr.ts';

describe('compileCidrs', () => {
  test('ranges and bare addresses, IPv4-mapped peers, invalid input', () => {
    const trusted = compileCidrs(['10.0.0.0/8', '2001:db8::/32', '192.0.2.7']);
    expect(trusted('10.1.2.3')).toBe(true);
    expect(trusted('::ffff:10.1.2.3')).toBe(true);
    expect(trusted('2001:db8::1')).toBe(true);
    expect(trusted('192.0.2.7')).toBe(true);
    expect(trusted('192.0.2.8')).toBe(false);
    expect(trusted('11.0.0.1')).toBe(false);
    expect(trusted('not-an-ip')).toBe(false);
    expect(trusted(undefined)).toBe(false);
    expect(trusted('')).toBe(false);
    expect(compileCidrs([])('10.0.0.1')).toBe(false);
  });

  test('the remembered last answer never leaks to another address', () => {
    const trusted = compileCidrs(['127.0.0.1/32']);
    const asked = [
      '127.0.0.1',
      '127.0.0.1',
      '127.0.0.2',
      '127.0.0.2',
      '127.0.0.1',
      'x',
      '127.0.0.1',
      undefined,
    ];
    expect(asked.map((ip) => trusted(ip))).toEqual([true, true, false, false, true, false, true, false]);
  });
});
