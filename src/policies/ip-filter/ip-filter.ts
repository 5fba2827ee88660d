import { type Static, Type as T } from '@sinclair/typebox';
import { ConfigError, type ConfigIssue, ProblemError } from '../../errors.ts';
import { compileCidrs, parseCidr } from '../../net/cidr.ts';
import { createMemo } from '../../pipeline/memo.ts';
import type { PolicyKind } from '../../pipeline/types.ts';

/**
 * Verdicts remembered per client address (see createMemo): parsing and matching an address with
 * ipaddr.js costs about 0.7 µs a request, a look-up of the address string a few ns. Bound: at
 * most 2 × 4096 addresses per route, however many clients there are.
 */
const VERDICT_CACHE_SIZE = 4096;

/** `ipFilter` config: who may call, by client address (after `trustProxy`). */
export const IpFilterSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description: 'enforce rejects with 403; dry-run only records what it would reject. Default enforce.',
      }),
    ),
    allow: T.Optional(
      T.Array(T.String(), {
        description:
          'IPv4/IPv6 CIDRs or addresses allowed. When present, every other address is denied. Default: none (all allowed).',
      }),
    ),
    deny: T.Optional(
      T.Array(T.String(), {
        description: 'IPv4/IPv6 CIDRs or addresses denied; deny wins over allow. Default: none.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Allow and deny lists of client addresses.' },
);

export type IpFilterConfig = Static<typeof IpFilterSchema>;

/**
 * The `ipFilter` kind. The client address is `ctx.clientIp` (the socket peer, or the
 * X-Forwarded-For client only when the peer is in `trustProxy`). IPv4-mapped IPv6 peers match
 * IPv4 ranges. Deny wins over allow; a present `allow` list means default deny.
 */
export const ipFilterPolicy: PolicyKind<typeof IpFilterSchema> = {
  name: 'ipFilter',
  phase: 'ipFilter',
  schema: IpFilterSchema,
  create(config) {
    const issues = [...checkList(config.deny ?? [], '/deny'), ...checkList(config.allow ?? [], '/allow')];
    if (issues.length > 0) throw new ConfigError(issues);
    const deny = compileCidrs(config.deny ?? []);
    const allow = config.allow ? compileCidrs(config.allow) : undefined;
    // The reason an address is refused, or '' when it passes.
    const verdict = createMemo(VERDICT_CACHE_SIZE, (ip) =>
      deny(ip) ? 'deny_list' : allow && !allow(ip) ? 'not_allowed' : '',
    );
    return function ipFilter(ctx) {
      const ip = ctx.clientIp;
      const reason = verdict(ip);
      if (reason !== '') throw denied(ip, reason);
    };
  },
};

function denied(ip: string, reason: string): ProblemError {
  // The client's own address is not a secret; echoing it helps callers behind NAT see why.
  return new ProblemError('PC_IP_DENIED', `Client address ${ip} is not allowed`, {
    extensions: { reason },
  });
}

/** Every entry that is not an address or CIDR, as an issue (the policy file is named by the caller). */
function checkList(entries: readonly string[], pointer: string): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  entries.forEach((entry, i) => {
    try {
      parseCidr(entry);
    } catch {
      issues.push({
        file: '',
        path: `${pointer}/${i}`,
        message: `"${entry}" is not an IPv4/IPv6 address or CIDR (e.g. 203.0.113.0/24, 2001:db8::/32)`,
      });
    }
  });
  return issues;
}
