/**
 * Which `Host` header values the admin app answers (`admin.hosts`). A web page that rebinds its
 * own DNS name to 127.0.0.1 (DNS rebinding) can make a browser call the admin port, but the
 * browser still sends the page's name as `Host`: answering only known names keeps such a page
 * from reading /routes or /metrics. Anything else gets 421 problem+json (PC_MISDIRECTED).
 */
import { networkInterfaces } from 'node:os';
import type { FastifyReply, FastifyRequest } from 'fastify';
import ipaddr from 'ipaddr.js';
import type { GatewayConfig } from '../config/schema.ts';
import { ProblemError } from '../errors.ts';
import { sendProblem } from '../problem.ts';

/** gateway.yaml `admin` as loaded. */
export type AdminConfig = NonNullable<GatewayConfig['admin']>;

/** The `admin.hosts` entry that answers every Host (the explicit opt-out). */
export const ANY_HOST = '*';

/** Always answered, whatever `admin.hosts` lists: the loopback names a local client uses. */
export const LOOPBACK_HOSTS: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];

/** Bind addresses that mean "every interface". */
const WILDCARD_BINDS = new Set(['', '0.0.0.0', '::', '[::]']);

/** The addresses of this machine's interfaces (an extension point for tests). */
export type LocalAddresses = () => string[];

/** Default LocalAddresses: every address `os.networkInterfaces()` lists. */
export const interfaceAddresses: LocalAddresses = function interfaceAddresses() {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
};

/**
 * The Host names the admin app answers, normalised (lower case, no port, IPv6 in brackets), or
 * `null` when every Host is answered (`*` in `admin.hosts`): LOOPBACK_HOSTS, the bind address
 * (`admin.host`) when it is a specific one or every local interface address when it is a wildcard
 * (0.0.0.0, ::) so probes calling the machine's or the pod's own address keep working, and the
 * names in `admin.hosts`. A DNS name other than localhost is answered only when listed there.
 */
export function adminAllowedHosts(
  config: Pick<AdminConfig, 'host' | 'hosts'>,
  localAddresses: LocalAddresses = interfaceAddresses,
): ReadonlySet<string> | null {
  const listed = config.hosts ?? [];
  if (listed.includes(ANY_HOST)) return null;
  const own = WILDCARD_BINDS.has(config.host) ? localAddresses() : [config.host];
  return new Set([...LOOPBACK_HOSTS, ...own, ...listed].map(normaliseHostEntry));
}

/** An `admin.hosts` entry (or bind address) in the form `hostKey` produces: `::1` → `[::1]`. */
export function normaliseHostEntry(entry: string): string {
  const bare = entry.startsWith('[') && entry.endsWith(']') ? entry.slice(1, -1) : entry;
  if (bare.includes(':') && ipaddr.IPv6.isValid(bare)) return `[${ipaddr.IPv6.parse(bare).toString()}]`;
  return withoutTrailingDot(entry.toLowerCase());
}

/**
 * The host of a `Host` header value, without its port, in the form `admin.hosts` entries are
 * compared in: lower case, one trailing dot dropped, IPv6 literals in brackets and compressed.
 * A value that is not a well-formed host[:port] comes back as given (and matches no entry).
 */
export function hostKey(header: string): string {
  if (header.startsWith('[')) {
    const end = header.indexOf(']');
    const rest = header.slice(end + 1);
    const inner = header.slice(1, end);
    if (end === -1 || !(rest === '' || /^:\d*$/.test(rest)) || !ipaddr.IPv6.isValid(inner)) return header;
    return `[${ipaddr.IPv6.parse(inner).toString()}]`;
  }
  const colon = header.indexOf(':');
  if (colon !== -1 && (header.indexOf(':', colon + 1) !== -1 || !/^\d*$/.test(header.slice(colon + 1))))
    return header;
  const name = colon === -1 ? header : header.slice(0, colon);
  return withoutTrailingDot(name.toLowerCase());
}

function withoutTrailingDot(name: string): string {
  return name.length > 1 && name.endsWith('.') ? name.slice(0, -1) : name;
}

/**
 * An onRequest hook answering 421 to a Host not in `allowed` (see adminAllowedHosts). A request
 * without Host (HTTP/1.0; Node refuses HTTP/1.1 without one) passes: browsers always send Host,
 * so it cannot come from a rebinding page, and some load-balancer probes send none.
 */
export function createAdminHostCheck(allowed: ReadonlySet<string>) {
  // The host is left out of the answer: it is whatever the client sent.
  const misdirected = new ProblemError(
    'PC_MISDIRECTED',
    'The admin port does not answer this Host; admin.hosts in gateway.yaml lists the ones it does.',
  );
  return function adminHostCheck(req: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const host = req.headers.host;
    if (host === undefined || allowed.has(hostKey(host))) done();
    else sendProblem(req, reply, misdirected);
  };
}
