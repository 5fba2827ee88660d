/**
 * The client a per-client count (rate limits, basic auth's checks in flight) is kept for: one IPv4 address (/32), or the IPv6 network of
 * `ipv6Prefix` bits (default /64: one customer's subnet, which a client can roam through freely,
 * so per-address IPv6 keys would let one client take 2^64 buckets). IPv4-mapped IPv6
 * (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4 peers) counts as the IPv4 address.
 */
import ipaddr from 'ipaddr.js';

/** Default `ipv6Prefix` of rateLimit: IPv6 clients are counted per /64. */
export const DEFAULT_IPV6_PREFIX = 64;

/**
 * `ip` as counted: IPv4 unchanged, IPv4-mapped IPv6 as IPv4, other IPv6 as `<network>/<prefix>`
 * (the address itself, canonical, at /128). Anything unparsable is returned as is.
 */
export function clientNetwork(ip: string, ipv6Prefix: number = DEFAULT_IPV6_PREFIX): string {
  if (!ip.includes(':')) return ip;
  const bare = ip.split('%', 1)[0] as string;
  if (!ipaddr.IPv6.isValid(bare)) return ip;
  const addr = ipaddr.IPv6.parse(bare);
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  if (ipv6Prefix >= 128) return addr.toString();
  const parts = addr.parts.map((part, i) => {
    const bits = Math.min(16, Math.max(0, ipv6Prefix - i * 16));
    return bits === 0 ? 0 : part & (0xffff << (16 - bits)) & 0xffff;
  });
  return `${new ipaddr.IPv6(parts).toString()}/${ipv6Prefix}`;
}
