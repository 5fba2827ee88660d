/**
 * `rateLimit`: count requests per client key in the Store (memory, or Redis shared by every
 * gateway instance) and answer 429 past the limit. Every response of a limited route carries the
 * IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers, structured
 * fields: `"default";q=100;w=60` and `"default";r=42;t=30`); a 429 adds `Retry-After`.
 *
 * ```yaml
 * rateLimit: { limit: 100, window: 1m, key: ip }
 * rateLimit:
 *   key: subject
 *   limits: [{ limit: 10, window: 1s }, { limit: 1000, window: 1h }]
 * ```
 *
 * Several limits (`limits`, plus the inline one if any) are checked together and every one of them counts the request, even when
 * another one refuses it (the Store decides one key at a time), so a client that keeps
 * hammering a per-second limit also uses up its hourly quota.
 */
import { createHash } from 'node:crypto';
import { type Static, Type as T } from '@sinclair/typebox';
import { DURATION_PATTERN, DURATION_UNITS_MS, parseDuration } from '../../config/duration.ts';
import { ProblemError } from '../../errors.ts';
import { clientNetwork, DEFAULT_IPV6_PREFIX } from '../../net/client-network.ts';
import { createMemo } from '../../pipeline/memo.ts';
import type {
  Decision,
  Hook,
  Identity,
  PolicyDeps,
  PolicyKind,
  RequestContext,
} from '../../pipeline/types.ts';
import { createMemoryStore } from '../../state/memory.ts';
import type { RateDecision, RateLimitSpec, Store } from '../../state/store.ts';

/** Policy name in decisions and logs. */
const POLICY = 'rateLimit';
/** A store outage is logged at most this often per route (the first failure always). */
const STORE_ERROR_LOG_INTERVAL_MS = 10_000;
/** Length of the hashed key value kept in store keys (base64url chars, 132 bits). */
const KEY_HASH_CHARS = 22;
/**
 * Store keys remembered per limit and kind of client value (address, subject per auth method,
 * header value → prefixed hashed key), so a returning client costs a map look-up instead of a
 * SHA-256 (see storeKeyResolver and createMemo: at most 2 × 4096 entries per memo).
 */
const KEY_CACHE_SIZE = 4096;
/**
 * Clients remembered as refused, per policy (store key → when a request would be admitted again),
 * so a client past a limit is refused before auth checks its credentials: at most this many; when
 * full, the oldest refusal is forgotten (that client is then checked and refused the usual way).
 */
const REFUSED_CACHE_SIZE = 4096;

const Duration = T.Union([T.String({ pattern: DURATION_PATTERN.source }), T.Integer({ minimum: 1 })], {
  description: 'Window length: "250ms", "1s", "1m", "1h", "1d" or a number of ms. Required.',
});

const Key = T.String({
  pattern: "^(ip|subject|apiKey|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$",
  description:
    'Who is counted: `ip` (client address after trustProxy; IPv6 per `ipv6Prefix` network), `subject` ' +
    '(authenticated identity), `apiKey` (the API key name, when auth used an API key) or `header:<name>`. ' +
    'When the identity or header is missing (e.g. a request auth rejected), the client address is used ' +
    'instead. Default ip.',
});

const Cost = T.Integer({ minimum: 1, description: 'Units one request uses (at most `limit`). Default 1.' });

const LIMIT_NAME = T.String({
  pattern: '^[A-Za-z0-9_.-]+$',
  description:
    'Policy name in RateLimit-Policy / RateLimit. Default "default" when the policy has one limit, ' +
    'else "<limit>-per-<window>" (e.g. "10-per-1s").',
});
const LIMIT = T.Integer({ minimum: 1, description: 'Requests allowed per window (also the largest burst).' });

/** One limit inside `limits`; `key` and `cost` default to the policy's. */
const LimitSchema = T.Object(
  {
    limit: LIMIT,
    window: Duration,
    name: T.Optional(LIMIT_NAME),
    key: T.Optional(Key),
    cost: T.Optional(Cost),
  },
  { additionalProperties: false },
);

/**
 * The `rateLimit` config: one limit inline (`limit` + `window`), several under `limits`, or both
 * (the inline one is then one more limit). Every limit is enforced.
 */
export const RateLimitSchema = T.Object(
  {
    limit: T.Optional(LIMIT),
    window: T.Optional(Duration),
    name: T.Optional(LIMIT_NAME),
    limits: T.Optional(T.Array(LimitSchema, { minItems: 1, description: 'Several limits. Default: none.' })),
    key: T.Optional(Key),
    cost: T.Optional(Cost),
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description:
          'dry-run never refuses and sends no RateLimit fields; it records "would-deny". Default enforce.',
      }),
    ),
    onStoreError: T.Optional(
      T.Union([T.Literal('allow'), T.Literal('deny'), T.Literal('local')], {
        description:
          'When the store (Redis) is unreachable: `allow` every request, `deny` with 503 store-unavailable, ' +
          'or count in this instance only (`local`: each instance enforces the limit on its own, so N ' +
          'instances admit up to N times the limit until Redis is back). Default local.',
      }),
    ),
    ipv6Prefix: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 128,
        default: DEFAULT_IPV6_PREFIX,
        description:
          'IPv6 clients are counted per network of this many bits (a client typically holds a whole /64 ' +
          'and could take a fresh address per request); 128 counts each address. IPv4 clients are counted ' +
          'per address, IPv4-mapped IPv6 as IPv4. Default 64.',
      }),
    ),
    scope: T.Optional(
      T.Union([T.Literal('route'), T.Literal('service'), T.Literal('global')], {
        description:
          'Which routes share a counter: each route its own (`route`), all routes of the service that get ' +
          'this same limit (`service`), or every route with this same limit (`global`). Default route.',
      }),
    ),
  },
  {
    additionalProperties: false,
    // Plain JSON Schema (Ajv checks it at load): a limit needs both fields, and there is at least one.
    dependencies: { limit: ['window'], window: ['limit'], name: ['limit'] },
    anyOf: [{ required: ['limit', 'window'] }, { required: ['limits'] }],
  },
);

export type RateLimitConfig = Static<typeof RateLimitSchema>;

export { parseDuration };

/** The request's store key for one limit: prefix + hashed client value (see storeKeyResolver). */
type StoreKeyOf = (ctx: RequestContext) => string;

/**
 * The store key of a request for one limit, `prefix + hashKey(value)` where value is
 * `ip:<address>` (IPv6: `ip:<network>/<prefix>`), `subject:<method>:<subject>`, `apiKey:<name>`
 * or `header:<name>:<value>`. Memoised on the string the request already holds (client address,
 * subject, header value; the first two are the same string object request after request, their
 * hash cached by V8), so a returning client costs one Map look-up: no string built, no SHA-256.
 * Bound: per limit, one memo for addresses, and one per auth method or one for header values
 * (each createMemo, at most 2 × KEY_CACHE_SIZE entries).
 */
function storeKeyResolver(key: string, prefix: string, ipv6Prefix: number): StoreKeyOf {
  const hashed = (value: string) => prefix + hashKey(value);
  const byAddress = createMemo(KEY_CACHE_SIZE, (ip) =>
    hashed(ip.includes(':') ? `ip:${clientNetwork(ip, ipv6Prefix)}` : `ip:${ip}`),
  );
  const byIp: StoreKeyOf = (ctx) => byAddress(ctx.clientIp);
  if (key === 'ip') return byIp;
  if (key === 'subject') {
    const byMethod: Partial<Record<Identity['method'], (subject: string) => string>> = {};
    return (ctx) => {
      const identity = ctx.identity;
      if (!identity) return byIp(ctx);
      const method = identity.method;
      let bySubject = byMethod[method];
      if (!bySubject) {
        bySubject = createMemo(KEY_CACHE_SIZE, (subject) => hashed(`subject:${method}:${subject}`));
        byMethod[method] = bySubject;
      }
      return bySubject(identity.subject);
    };
  }
  if (key === 'apiKey') {
    const byName = createMemo(KEY_CACHE_SIZE, (name) => hashed(`apiKey:${name}`));
    return (ctx) => (ctx.identity?.method === 'apiKey' ? byName(ctx.identity.subject) : byIp(ctx));
  }
  const header = key.slice('header:'.length).toLowerCase();
  const byValue = createMemo(KEY_CACHE_SIZE, (value) => hashed(`header:${header}:${value}`));
  return (ctx) => {
    const value = ctx.req.headers[header];
    if (value === undefined || value === '') return byIp(ctx);
    return byValue(Array.isArray(value) ? value.join(',') : value);
  };
}

/** One limit's outcome: the store's decision, null (not counted) or 'deny' (store down, deny). */
type Decided = RateDecision | null | 'deny';

interface PreparedLimit {
  name: string;
  /** The key does not depend on who the caller is (`ip`, `header:`): it can be decided before auth. */
  anonymous: boolean;
  spec: RateLimitSpec;
  /** Store key prefix: scope and the limit itself (a changed limit starts fresh counters). */
  prefix: string;
  /** The request's store key: prefix + hashed client value, cached. */
  storeKey: StoreKeyOf;
}

/**
 * Shared per gateway store, so `onStoreError: local` counts one key once across routes. Bound:
 * one memory store per gateway store (weakly held), itself DEFAULT_MAX_KEYS counters at most.
 */
const fallbackStores = new WeakMap<Store, Store>();

function fallbackFor(store: Store): Store {
  let local = fallbackStores.get(store);
  if (!local) {
    local = createMemoryStore();
    fallbackStores.set(store, local);
  }
  return local;
}

/** The window as written back for names: 60000 → "1m". */
function formatWindow(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = DURATION_UNITS_MS[unit as keyof typeof DURATION_UNITS_MS];
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** Where the hashed client value lives: never the raw IP, API key name or header in the store. */
function hashKey(value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, KEY_HASH_CHARS);
}

function prepare(config: RateLimitConfig, deps: PolicyDeps): PreparedLimit[] {
  const inline =
    config.limit !== undefined && config.window !== undefined
      ? [{ limit: config.limit, window: config.window, name: config.name, key: undefined, cost: undefined }]
      : [];
  const items = [...inline, ...(config.limits ?? [])];
  const scope = config.scope ?? 'route';
  const scopeId =
    scope === 'global'
      ? '*'
      : scope === 'service'
        ? deps.service.name
        : `${deps.route.service}/${deps.route.operationId}`;
  const single = items.length === 1;
  const ipv6Prefix = config.ipv6Prefix ?? DEFAULT_IPV6_PREFIX;
  return items.map((item) => {
    const windowMs = parseDuration(item.window);
    const key = item.key ?? config.key ?? 'ip';
    const cost = item.cost ?? config.cost ?? 1;
    const prefix = `${scopeId}:${item.limit}/${windowMs}:${key}:`;
    return {
      name: item.name ?? (single ? 'default' : `${item.limit}-per-${formatWindow(windowMs)}`),
      anonymous: key === 'ip' || key.startsWith('header:'),
      spec: { limit: item.limit, windowMs, cost },
      prefix,
      storeKey: storeKeyResolver(key, prefix, ipv6Prefix),
    };
  });
}

function createRateLimit(config: RateLimitConfig, deps: PolicyDeps): Hook {
  const limits = prepare(config, deps);
  const names = new Set(limits.map((l) => l.name));
  if (names.size !== limits.length) throw new Error('rateLimit: limit names must be unique within a policy');
  const dryRun = config.mode === 'dry-run';
  const onStoreError = config.onStoreError ?? 'local';
  const store = deps.store;
  const local = onStoreError === 'local' && store.kind !== 'memory' ? fallbackFor(store) : store;
  // The policy field never changes: built once. `w` is whole seconds in the draft.
  const policyField = limits
    .map((l) => `"${l.name}";q=${l.spec.limit};w=${Math.max(1, Math.round(l.spec.windowMs / 1000))}`)
    .join(', ');
  let lastErrorLog = Number.NEGATIVE_INFINITY;

  const logStoreError = (err: unknown) => {
    const now = Date.now();
    if (now - lastErrorLog < STORE_ERROR_LOG_INTERVAL_MS) return;
    lastErrorLog = now;
    deps.logger.warn(
      { policy: POLICY, route: deps.route.operationId, onStoreError, err: (err as Error).message },
      'rate-limit store unavailable',
    );
  };

  /** A limit's decision when the store failed: null = not counted (`onStoreError: allow`). */
  const afterStoreError = (err: unknown, limit: PreparedLimit, key: string): Decided | Promise<Decided> => {
    logStoreError(err);
    if (onStoreError === 'allow') return null;
    if (onStoreError === 'deny') return 'deny';
    return local.hit(key, limit.spec);
  };

  const decide = (limit: PreparedLimit, ctx: RequestContext): Promise<Decided> => {
    const key = limit.storeKey(ctx);
    return store.hit(key, limit.spec).then(undefined, (err: unknown) => afterStoreError(err, limit, key));
  };

  /** Headers, decisions and the 429 from every limit's decision (in `limits` order). */
  const conclude = (ctx: RequestContext, results: readonly Decided[]): void => {
    if (results.includes('deny')) {
      record(ctx, dryRun ? 'would-deny' : 'error', 'store-unavailable', {});
      if (!dryRun) {
        throw new ProblemError('PC_STORE_UNAVAILABLE', 'Rate-limit state is unavailable; try again shortly', {
          headers: { 'retry-after': '1' },
        });
      }
      return;
    }
    let retryAfterMs = 0;
    const current: string[] = [];
    const detail: Record<string, unknown> = {};
    for (let i = 0; i < limits.length; i++) {
      const result = results[i] as RateDecision | null;
      if (result === null) continue;
      const limit = limits[i] as PreparedLimit;
      current.push(`"${limit.name}";r=${result.remaining};t=${Math.ceil(result.resetMs / 1000)}`);
      detail[limit.name] = result.remaining;
      if (!result.allowed && result.retryAfterMs > retryAfterMs) retryAfterMs = result.retryAfterMs;
      if (!result.allowed) detail.exceeded = limit.name;
    }
    const denied = results.some((r) => r !== null && typeof r === 'object' && !r.allowed);
    if (dryRun) {
      record(ctx, denied ? 'would-deny' : 'allow', denied ? 'limit' : undefined, detail);
      return;
    }
    const headers: Record<string, string> = {};
    if (current.length > 0) {
      headers['ratelimit-policy'] = policyField;
      headers.ratelimit = current.join(', ');
      Object.assign(ctx.responseHeaders, headers);
    }
    if (!denied) {
      record(ctx, 'allow', undefined, detail);
      return;
    }
    record(ctx, 'deny', 'limit', detail);
    const now = Date.now();
    for (let i = 0; i < limits.length; i++) {
      const result = results[i] as RateDecision | null;
      const limit = limits[i] as PreparedLimit;
      if (result && !result.allowed && limit.anonymous)
        rememberRefusal(limit.storeKey(ctx), now + result.retryAfterMs);
    }
    // Whole seconds, rounded up: a client retrying at that moment is admitted.
    headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
    throw new ProblemError('PC_RATE_LIMITED', `Rate limit "${detail.exceeded as string}" exceeded`, {
      headers,
    });
  };

  // Refusals of identity-independent limits, for beforeAuth. Map order is age (FIFO bound).
  const refused = new Map<string, number>();
  const rememberRefusal = (key: string, until: number) => {
    refused.delete(key);
    if (refused.size >= REFUSED_CACHE_SIZE) refused.delete(refused.keys().next().value as string);
    refused.set(key, until);
  };
  const anonymousLimits = limits.filter((l) => l.anonymous);

  /**
   * Run before auth (see runChain): refuse a client that one of the identity-independent limits
   * refused and that would still be refused now, without checking its credentials (a guessing
   * client past its limit costs no bcrypt, no JWT verification). The store is not asked: a refused
   * request does not change a counter, so its answer would be the same. Other limits of the policy
   * do not count such a request.
   */
  const beforeAuth = (ctx: RequestContext): void => {
    if (refused.size === 0) return;
    for (const limit of anonymousLimits) {
      const key = limit.storeKey(ctx);
      const until = refused.get(key);
      if (until === undefined) continue;
      const wait = until - Date.now();
      if (wait <= 0) {
        refused.delete(key);
        continue;
      }
      record(ctx, 'deny', 'limit', { exceeded: limit.name, beforeAuth: true });
      const seconds = String(Math.max(1, Math.ceil(wait / 1000)));
      const headers = {
        'ratelimit-policy': policyField,
        ratelimit: `"${limit.name}";r=0;t=${seconds}`,
        'retry-after': seconds,
      };
      throw new ProblemError('PC_RATE_LIMITED', `Rate limit "${limit.name}" exceeded`, { headers });
    }
  };

  // One limit (the common case): a single promise reaction from the store's answer to the verdict,
  // and an admitted request costs its two fields and its decision, no intermediate arrays.
  const only = limits.length === 1 ? (limits[0] as PreparedLimit) : undefined;
  const concludeOnly = (ctx: RequestContext, decision: RateDecision): void => {
    if (!decision.allowed || dryRun) {
      conclude(ctx, [decision]);
      return;
    }
    const limit = only as PreparedLimit;
    ctx.responseHeaders['ratelimit-policy'] = policyField;
    ctx.responseHeaders.ratelimit = `"${limit.name}";r=${decision.remaining};t=${Math.ceil(decision.resetMs / 1000)}`;
    ctx.decisions.push({ policy: POLICY, outcome: 'allow', detail: { [limit.name]: decision.remaining } });
  };
  const hook = function rateLimit(ctx: RequestContext): Promise<void> {
    if (only) {
      const key = only.storeKey(ctx);
      return store.hit(key, only.spec).then(
        (decision) => concludeOnly(ctx, decision),
        async (err: unknown) => conclude(ctx, [await afterStoreError(err, only, key)]),
      );
    }
    return Promise.all(limits.map((l) => decide(l, ctx))).then((results) => conclude(ctx, results));
  };
  return dryRun || anonymousLimits.length === 0 ? hook : Object.assign(hook, { beforeAuth });
}

function record(
  ctx: RequestContext,
  outcome: Decision['outcome'],
  reason: string | undefined,
  detail: Record<string, unknown>,
) {
  ctx.decisions.push(
    reason ? { policy: POLICY, outcome, reason, detail } : { policy: POLICY, outcome, detail },
  );
}

/** The `rateLimit` policy kind (phase rateLimit): see the module comment and RateLimitSchema. */
export const rateLimitPolicy: PolicyKind<typeof RateLimitSchema> = {
  name: POLICY,
  phase: 'rateLimit',
  schema: RateLimitSchema,
  create: createRateLimit,
};
