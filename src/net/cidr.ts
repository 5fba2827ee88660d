import ipaddr from 'ipaddr.js';

/** A compiled address matcher: true when `ip` is inside any of the CIDRs it was built from. */
export type CidrMatcher = (ip: string | undefined) => boolean;

/** Parse `10.0.0.0/8`, `::1`, `203.0.113.7` (a bare address is a /32 or /128). Throws on bad input. */
export function parseCidr(entry: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  if (entry.includes('/')) return ipaddr.parseCIDR(entry);
  const addr = ipaddr.parse(entry);
  return [addr, addr.kind() === 'ipv4' ? 32 : 128];
}

/**
 * Compile a CIDR list once (at load). IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) match IPv4
 * ranges, as dual-stack sockets report them so. An empty list matches nothing.
 */
export function compileCidrs(entries: readonly string[]): CidrMatcher {
  if (entries.length === 0) return () => false;
  const ranges = entries.map(parseCidr);
  // The last answer: a keep-alive connection asks about the same peer for every request, and
  // parsing an address costs more than the rest of the check.
  let lastIp: string | undefined;
  let lastAnswer = false;
  return function matchCidr(ip) {
    if (ip === lastIp) return lastAnswer;
    lastAnswer = inRanges(ip);
    lastIp = ip;
    return lastAnswer;
  };
  function inRanges(ip: string | undefined): boolean {
    if (!ip || !ipaddr.isValid(ip)) return false;
    let addr = ipaddr.parse(ip);
    if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
      addr = (addr as ipaddr.IPv6).toIPv4Address();
    }
    for (const [range, bits] of ranges) {
      if (range.kind() === addr.kind() && addr.match(range, bits)) return true;
    }
    return false;
  }
}
