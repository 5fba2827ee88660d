/**
 * `cache`: an RFC 9111 shared cache in front of the upstream's responses.
 *
 * ```yaml
 * - match: { service: petstore, methods: [GET] }
 *   cache: {}                       # RFC 9111 defaults, store from gateway.yaml `state`
 * - match: { service: catalog }
 *   cache: { ttl: 5m, targeted: Catalog-Cache-Control, store: memory }
 * ```
 *
 * It runs last (phase `cache`): ipFilter, CORS, WAF, auth, rateLimit and validate have accepted the
 * request before anything is looked up, so a cached answer is never served to a request they
 * reject. Its hook only marks the request; the lifecycle then answers through the cache
 * (lifecycle/answer.ts answerCached → serve.ts) instead of forwarding straight.
 */
import { type Static, Type as T } from '@sinclair/typebox';
import { DURATION_PATTERN, parseDuration } from '../../config/duration.ts';
import { ConfigError } from '../../errors.ts';
import type { PolicyKind } from '../../pipeline/types.ts';
import type { Service } from '../../registry/types.ts';
import { type RouteCache, upstreamHeadersOf } from './serve.ts';
import type { CacheStore } from './store.ts';
import { cacheStoresFor, loadRedisCacheStore } from './stores.ts';

/** The targeted field every cache of this kind obeys (RFC 9213), after any configured one. */
const CDN_CACHE_CONTROL = 'cdn-cache-control';
/** This cache's device token in Surrogate-Control / Surrogate-Capability. */
const SURROGATE_TOKEN = 'portcullis';
const FIELD_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

/** A duration: a string (`30s`, `5m`, `1h`) or a number of milliseconds (at least `minMs`). */
const Duration = (description: string, dflt?: string, minMs = 0) =>
  T.Union([T.String({ pattern: DURATION_PATTERN.source }), T.Integer({ minimum: minMs })], {
    description: `${description} A duration (\`30s\`, \`5m\`) or a number of milliseconds.`,
    ...(dflt === undefined ? {} : { default: dflt }),
  });

export const CacheSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        default: 'enforce',
        description:
          'dry-run looks up and stores as usual and records what it would have served (decision `bypass` with ' +
          '`wouldServe`, span event) but forwards every request. Default enforce.',
      }),
    ),
    ttl: T.Optional(
      Duration(
        'Freshness given to a response that states none (no s-maxage, max-age or Expires) and whose status ' +
          'is cacheable by default (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501) or that is ' +
          '`public`. Default: none, RFC 9111 heuristics only (10 % of the time since Last-Modified, at most a day). ' +
          'Whole seconds: a number below 1000 (ms) is an error (`ttl: 300` would mean 0.3 s).',
        undefined,
        1000,
      ),
    ),
    targeted: T.Optional(
      T.Union(
        [T.String({ pattern: FIELD_NAME }), T.Array(T.String({ pattern: FIELD_NAME }), { minItems: 1 })],
        {
          description:
            'Targeted cache-control field names (RFC 9213) this cache obeys before CDN-Cache-Control, in order, ' +
            'e.g. `Acme-Cache-Control`. The first one present replaces Cache-Control and Expires. Default: none.',
        },
      ),
    ),
    cdnCacheControl: T.Optional(
      T.Boolean({
        default: true,
        description: 'Obey CDN-Cache-Control (RFC 9213) over Cache-Control. Default true.',
      }),
    ),
    surrogateControl: T.Optional(
      T.Boolean({
        default: true,
        description:
          'Obey Surrogate-Control (W3C Edge Architecture, as Varnish and Fastly do) when no targeted field is ' +
          'present: it replaces Cache-Control and Expires; members targeted at another device (`max-age=60;other`) ' +
          'are ignored, those targeted at `portcullis` apply. The gateway announces itself upstream with ' +
          '`Surrogate-Capability: portcullis="Surrogate/1.0"` and removes Surrogate-Control from its answers. Default true.',
      }),
    ),
    store: T.Optional(
      T.Union([T.Literal('state'), T.Literal('memory')], {
        default: 'state',
        description:
          '`state`: the store gateway.yaml `state` chooses (Redis, shared by every instance, when configured; ' +
          'else memory). `memory`: this process only, whatever `state` says. Default state.',
      }),
    ),
    maxEntryBytes: T.Optional(
      T.Integer({
        minimum: 1,
        default: 1_048_576,
        description:
          'Largest body stored; a larger one streams through to the client uncached. Default 1048576 (1 MiB).',
      }),
    ),
    coalesceTimeout: T.Optional(
      Duration(
        "Concurrent misses of one URL wait for the first one's upstream fetch, at most this long, then go " +
          'upstream themselves. Default 5s.',
        '5s',
      ),
    ),
    staleIfUnreachable: T.Optional(
      T.Boolean({
        default: false,
        description:
          'When no upstream can be reached (connection refused or reset, timeout, none healthy), answer with a ' +
          'stale stored response instead of the 502/503/504 (RFC 9111 §4.2.4), unless the response forbids it ' +
          "(must-revalidate, proxy-revalidate, s-maxage, no-cache). An upstream's own 5xx is replaced only " +
          'within stale-if-error. Default false: a stale response is served only where it says so ' +
          '(stale-if-error, stale-while-revalidate) or the client asks (max-stale).',
      }),
    ),
    keepStale: T.Optional(
      Duration(
        'How long a stale response with a validator (ETag / Last-Modified) or `no-cache` is kept past its ' +
          'freshness (and stale-while-revalidate / stale-if-error windows) to be revalidated with a conditional ' +
          'request. Default 1h.',
        '1h',
      ),
    ),
  },
  {
    additionalProperties: false,
    description:
      'RFC 9111 shared cache of upstream responses, looked up after every other policy accepted the request. ' +
      'Every answer of the route carries Cache-Status (RFC 9211); answers from the store carry Age.',
  },
);

export type CacheConfig = Static<typeof CacheSchema>;

/** The stores of each service's cached routes (a reload builds new Service objects, and new sets). */
const storesOfService = new WeakMap<Service, Set<CacheStore>>();
/** One cached route's cache per service: how its uncached routes invalidate (unsafe methods). */
const cacheOfService = new WeakMap<Service, RouteCache>();

/**
 * The cache an unsafe request to a route without a cache policy goes through to invalidate what
 * the service's cached routes stored (e.g. `cache` on GETs only, a POST to the same URL): undefined
 * when no route of the service caches.
 */
export function cacheOfServiceFor(service: Service): RouteCache | undefined {
  return cacheOfService.get(service);
}

export const cachePolicy: PolicyKind<typeof CacheSchema> = {
  name: 'cache',
  phase: 'cache',
  schema: CacheSchema,
  async create(config, deps) {
    if (deps.service.settings.mock)
      throw new ConfigError([
        {
          file: '',
          path: '',
          message: `service ${deps.service.name} answers from its spec (mock: true): there is no upstream response to cache`,
        },
      ]);
    const state = deps.config.state;
    if (config.store !== 'memory' && (state.redis || state.sentinel || state.cluster))
      await loadRedisCacheStore();
    const stores = cacheStoresFor(deps.store, deps.config, deps.logger);
    const store = config.store === 'memory' ? stores.memory() : stores.state();
    const targeted = [
      ...(config.targeted === undefined
        ? []
        : Array.isArray(config.targeted)
          ? config.targeted
          : [config.targeted]),
    ].map((n) => n.toLowerCase());
    if (config.cdnCacheControl !== false) targeted.push(CDN_CACHE_CONTROL);
    // Every route of the service learns the stores its cached routes use (see cacheOfService).
    let serviceStores = storesOfService.get(deps.service);
    if (!serviceStores) {
      serviceStores = new Set();
      storesOfService.set(deps.service, serviceStores);
    }
    serviceStores.add(store);
    const surrogate = config.surrogateControl === false ? undefined : SURROGATE_TOKEN;
    const rc: RouteCache = {
      store,
      serviceStores,
      inflight: stores.inflight(store),
      targeted,
      surrogate,
      upstreamHeaders: upstreamHeadersOf(surrogate),
      ttl: config.ttl === undefined ? undefined : Math.ceil(parseDuration(config.ttl) / 1000),
      maxEntryBytes: config.maxEntryBytes ?? 1_048_576,
      coalesceTimeoutMs: parseDuration(config.coalesceTimeout ?? '5s'),
      keepStaleMs: parseDuration(config.keepStale ?? '1h'),
      staleIfUnreachable: config.staleIfUnreachable === true,
      dryRun: config.mode === 'dry-run',
      logger: deps.logger,
    };
    if (!cacheOfService.has(deps.service)) cacheOfService.set(deps.service, rc);
    return function cache(ctx) {
      ctx.cache = rc;
    };
  },
};
