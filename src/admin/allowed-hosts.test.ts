import { describe, expect, test } from 'vitest';
import { adminAllowedHosts, hostKey, normaliseHostEntry } from './allowed-hosts.ts';

const NO_INTERFACES = () => [];

describe('hostKey: a Host header as admin.hosts entries are compared', () => {
  test.each([
    { description: 'a name with a port loses the port', header: 'localhost:9090', want: 'localhost' },
    { description: 'a name is lower-cased', header: 'Admin.Example.COM', want: 'admin.example.com' },
    { description: 'one trailing dot is dropped', header: 'localhost.:9090', want: 'localhost' },
    { description: 'an IPv4 address with a port', header: '127.0.0.1:80', want: '127.0.0.1' },
    { description: 'an IPv6 literal keeps its brackets', header: '[::1]:9090', want: '[::1]' },
    { description: 'an IPv6 literal is compressed', header: '[0:0:0:0:0:0:0:1]', want: '[::1]' },
    { description: 'an empty port is allowed (RFC 3986)', header: 'localhost:', want: 'localhost' },
    { description: 'a bare IPv6 address is not a Host: kept as sent', header: '::1', want: '::1' },
    { description: 'a non-numeric port: kept as sent', header: 'localhost:x@evil', want: 'localhost:x@evil' },
    { description: 'an unclosed bracket: kept as sent', header: '[::1', want: '[::1' },
    { description: 'junk after the bracket: kept as sent', header: '[::1]evil', want: '[::1]evil' },
    { description: 'a name in brackets: kept as sent', header: '[localhost]', want: '[localhost]' },
  ])('$description', ({ header, want }) => {
    expect(hostKey(header)).toBe(want);
  });
});

describe('normaliseHostEntry: an admin.hosts entry or bind address', () => {
  test.each([
    { entry: '::1', want: '[::1]' },
    { entry: '[::1]', want: '[::1]' },
    { entry: 'FD00::0001', want: '[fd00::1]' },
    { entry: 'Gateway', want: 'gateway' },
    { entry: 'gateway.', want: 'gateway' },
    { entry: '10.0.0.5', want: '10.0.0.5' },
  ])('$entry → $want', ({ entry, want }) => {
    expect(normaliseHostEntry(entry)).toBe(want);
  });
});

describe('adminAllowedHosts', () => {
  test.each([
    {
      description: 'loopback bind: the loopback names',
      config: { host: '127.0.0.1' },
      want: ['localhost', '127.0.0.1', '[::1]'],
    },
    {
      description: 'a specific bind address is added',
      config: { host: '10.1.2.3' },
      want: ['localhost', '127.0.0.1', '[::1]', '10.1.2.3'],
    },
    {
      description: 'a bind name is added (lower case)',
      config: { host: 'Admin.Internal' },
      want: ['localhost', '127.0.0.1', '[::1]', 'admin.internal'],
    },
    {
      description: 'an IPv6 bind address is added in brackets',
      config: { host: '::1' },
      want: ['localhost', '127.0.0.1', '[::1]'],
    },
    {
      description: 'a wildcard bind adds every local interface address, not 0.0.0.0',
      config: { host: '0.0.0.0' },
      interfaces: ['127.0.0.1', '172.18.0.5', '::1', 'fe80::42:acff:fe12:5'],
      want: ['localhost', '127.0.0.1', '[::1]', '172.18.0.5', '[fe80::42:acff:fe12:5]'],
    },
    {
      description: 'admin.hosts adds names to the defaults',
      config: { host: '0.0.0.0', hosts: ['gateway', 'Prometheus.Local'] },
      interfaces: ['172.18.0.5'],
      want: ['localhost', '127.0.0.1', '[::1]', '172.18.0.5', 'gateway', 'prometheus.local'],
    },
  ])('$description', ({ config, interfaces, want }) => {
    const allowed = adminAllowedHosts(config, interfaces ? () => interfaces : NO_INTERFACES);
    expect([...(allowed ?? [])].sort()).toEqual([...want].sort());
  });

  test('"*" anywhere in admin.hosts answers every Host (null: no check)', () => {
    expect(adminAllowedHosts({ host: '0.0.0.0', hosts: ['localhost', '*'] }, NO_INTERFACES)).toBeNull();
  });
});
