import { describe, expect, it } from 'vitest';
import { clientNetwork } from './client-network.ts';

describe('clientNetwork (what a rate limit keyed by ip counts)', () => {
  const cases: Array<{ name: string; ip: string; prefix?: number; expected: string }> = [
    { name: 'IPv4 is its own /32', ip: '203.0.113.7', expected: '203.0.113.7' },
    {
      name: 'IPv6 counts per /64 by default',
      ip: '2001:db8:1:2:aaaa:bbbb:cccc:dddd',
      expected: '2001:db8:1:2::/64',
    },
    { name: 'another address of the same /64', ip: '2001:db8:1:2::1', expected: '2001:db8:1:2::/64' },
    { name: 'the neighbouring /64 is another key', ip: '2001:db8:1:3::1', expected: '2001:db8:1:3::/64' },
    {
      name: 'spelling does not matter',
      ip: '2001:0DB8:0001:0002:0000:0000:0000:0001',
      expected: '2001:db8:1:2::/64',
    },
    {
      name: 'a prefix off a 16-bit boundary',
      ip: '2001:db8:1:2ff::1',
      prefix: 56,
      expected: '2001:db8:1:200::/56',
    },
    { name: '/128 keeps the address', ip: '2001:db8::0001', prefix: 128, expected: '2001:db8::1' },
    { name: 'IPv4-mapped IPv6 is IPv4', ip: '::ffff:192.0.2.1', expected: '192.0.2.1' },
    { name: 'a zone id is dropped', ip: 'fe80::1:2%eth0', expected: 'fe80::/64' },
    { name: 'loopback', ip: '::1', expected: '::/64' },
    { name: 'garbage is kept as is', ip: 'not:an:address', expected: 'not:an:address' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(clientNetwork(c.ip, c.prefix)).toBe(c.expected);
    });
  }
});
