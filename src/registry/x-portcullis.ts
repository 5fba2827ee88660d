/**
 * The `x-portcullis` extension of a service spec: its schema (the one place its fields and
 * defaults are documented) and the step that turns what a user wrote into defaulted
 * ServiceSettings, checked once at load.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { type Static, Type as T } from '@sinclair/typebox';
import { compileCheck } from '../config/validate.ts';
import type { SourceDocument } from '../config/yaml.ts';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import type {
  LoadBalancing,
  RetryBudgetConfig,
  RetryOn,
  ServiceSettings,
  UpstreamConfig,
  WebSocketSettings,
} from './types.ts';

/** JSON pointer of the extension in a spec. */
export const EXTENSION_POINTER = '/x-portcullis';

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 3_000;
const DEFAULT_RETRIES = 1;
const DEFAULT_HEALTH = { intervalMs: 5_000, timeoutMs: 2_000, unhealthyAfter: 3, healthyAfter: 2 };
/** Upstream answers that count as passive-health failures by default: the gateway-failure statuses. */
export const DEFAULT_FAILURE_STATUSES: readonly number[] = [502, 503, 504];
/** Ceiling of the growing ejection time (Envoy's max_ejection_time default). */
const DEFAULT_MAX_EJECT_MS = 300_000;
const DEFAULT_PASSIVE = { failures: 3, ejectMs: 10_000, panicThreshold: 0 };
/** Envoy's circuit breaker defaults (max_requests, max_pending_requests), per upstream here. */
export const DEFAULT_CIRCUIT_BREAKER = { maxRequests: 1024, maxPending: 1024 };
/** What is retried when `retryOn` is not set: every failure before an answer, no status. */
export const DEFAULT_RETRY_ON: readonly RetryOn[] = ['connect-failure', 'reset', 'timeout'];
/** At most 20 % extra requests, plus 10 (Finagle's budget shape; Envoy's default percent). */
export const DEFAULT_RETRY_BUDGET: Readonly<RetryBudgetConfig> = { percent: 20, burst: 10 };
/** The largest `retries`. */
const MAX_RETRIES = 5;
const DEFAULT_LOAD_BALANCING: LoadBalancing = 'round-robin';
/** WebSocket timeouts: 5 minutes without a frame either way (pings count), 24 hours in all. */
export const DEFAULT_WEBSOCKET: Readonly<WebSocketSettings> = {
  idleTimeoutMs: 300_000,
  maxLifetimeMs: 86_400_000,
};

const positiveMs = (description: string) => T.Integer({ minimum: 1, description });
/** The longest timer Node keeps (about 24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;
const timerMs = (description: string) => T.Integer({ minimum: 1, maximum: MAX_TIMER_MS, description });

/**
 * `websocket`, on a service (the default of its GET operations) or on one GET operation (its own
 * `x-portcullis`): true, false, or the timeouts (which allow upgrades).
 */
export const WebSocketSchema = T.Union(
  [
    T.Boolean({ description: 'true: upgrades allowed with the default timeouts; false: refused (403).' }),
    T.Object(
      {
        idleTimeoutMs: T.Optional(
          timerMs(
            'Close a socket that carried no frame either way (pings and pongs count) for this long: a close frame 1001 to the client and to the upstream. Default 300000 (5 minutes).',
          ),
        ),
        maxLifetimeMs: T.Optional(
          timerMs(
            'Close a socket open this long, busy or not (1001 both ways). Default 86400000 (24 hours).',
          ),
        ),
      },
      { additionalProperties: false, description: 'Upgrades allowed, with these timeouts.' },
    ),
  ],
  {
    description:
      'WebSocket proxying of GET operations: the upgrade request runs the whole policy chain, then frames pass both ways untouched. false refuses upgrades with 403 PC_WEBSOCKET_REFUSED. Default true (idleTimeoutMs 300000, maxLifetimeMs 86400000).',
  },
);

/** `websocket` as written (service or operation). */
export type WebSocketOption = Static<typeof WebSocketSchema>;

/** `websocket` as written, over `base` (the service's, for an operation; else the defaults). */
export function resolveWebSocket(
  value: WebSocketOption | undefined,
  base: WebSocketSettings | false = DEFAULT_WEBSOCKET,
): WebSocketSettings | false {
  if (value === undefined) return base;
  if (value === false) return false;
  const from = base === false ? DEFAULT_WEBSOCKET : base;
  return value === true ? { ...from } : { ...from, ...value };
}

/** The `x-portcullis` object an operation may carry: only what can differ per operation. */
export const OperationXPortcullisSchema = T.Object(
  { websocket: T.Optional(WebSocketSchema) },
  { additionalProperties: false },
);

/** The `x-portcullis` object as written in a spec; every field is optional. */
export const XPortcullisSchema = T.Object(
  {
    basePath: T.Optional(
      T.String({
        pattern: '^/[^?#{}*:\\s]*$',
        description:
          'Public path prefix of the service; "/" allowed. Default: "/" + slug of info.title ("Pet Store API" → "/pet-store-api").',
      }),
    ),
    upstreams: T.Optional(
      T.Array(
        T.Object(
          {
            url: T.String({
              description:
                'http(s) origin plus optional path prefix, e.g. http://127.0.0.1:4001/v1. Required.',
            }),
            weight: T.Optional(
              T.Integer({ minimum: 1, description: 'Relative share for weighted/ip-hash. Default 1.' }),
            ),
            zone: T.Optional(
              T.String({
                minLength: 1,
                description:
                  'Locality the upstream runs in (zone, rack, region), compared with gateway.yaml `zone` when the service sets preferZone. Default: none.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        {
          minItems: 1,
          description: 'Where requests go. Default: every absolute http(s) servers[].url (weight 1).',
        },
      ),
    ),
    loadBalancing: T.Optional(
      T.Union(
        ['round-robin', 'weighted', 'least-connections', 'ip-hash', 'random-two'].map((v) => T.Literal(v)),
        { description: 'Balancing algorithm. Default round-robin.' },
      ),
    ),
    healthCheck: T.Optional(
      T.Object(
        {
          path: T.String({
            pattern: '^/',
            description: 'Path probed with GET; 2xx/3xx = healthy. Required.',
          }),
          intervalMs: T.Optional(positiveMs('Time between probes. Default 5000.')),
          timeoutMs: T.Optional(positiveMs('Probe timeout. Default 2000.')),
          unhealthyAfter: T.Optional(
            T.Integer({ minimum: 1, description: 'Failed probes in a row before marking down. Default 3.' }),
          ),
          healthyAfter: T.Optional(
            T.Integer({ minimum: 1, description: 'Good probes in a row before readmitting. Default 2.' }),
          ),
        },
        { additionalProperties: false, description: 'Active health checks. Default: none (passive only).' },
      ),
    ),
    passiveHealth: T.Optional(
      T.Object(
        {
          failures: T.Optional(
            T.Integer({ minimum: 1, description: 'Failed proxied requests in a row that eject. Default 3.' }),
          ),
          ejectMs: T.Optional(positiveMs('How long an ejected upstream is skipped. Default 10000.')),
          panicThreshold: T.Optional(
            T.Integer({
              minimum: 0,
              maximum: 100,
              description:
                'Panic mode (as Envoy): when fewer than this percent of the upstreams are un-ejected, or none is, ejections are ignored and requests are balanced over every upstream that active checks have not taken out, so the last upstream is never ejected. Logged and shown on /readyz. Default 0 (panic only when every upstream is ejected; Envoy uses 50).',
            }),
          ),
          statuses: T.Optional(
            T.Array(T.Integer({ minimum: 500, maximum: 599 }), {
              uniqueItems: true,
              description:
                "Upstream answer statuses that count as failures, alongside refused, reset and timed-out connections (like Envoy's consecutive 5xx / gateway-failure outlier detection); any other answer ends the streak. Add 500 to eject on application errors too; [] counts connection failures only. Default [502, 503, 504].",
            }),
          ),
          maxEjectMs: T.Optional(
            positiveMs(
              'Ceiling of the ejection time, which grows with each ejection in a row: ejectMs × the number of ejections, up to this. The count starts over once the upstream has served maxEjectMs without being ejected. Not below ejectMs. Default 300000 (or ejectMs, if larger).',
            ),
          ),
        },
        {
          additionalProperties: false,
          description:
            'Ejection on proxied failures (outlier detection). Default { failures: 3, ejectMs: 10000, panicThreshold: 0, statuses: [502, 503, 504], maxEjectMs: 300000 }.',
        },
      ),
    ),
    circuitBreaker: T.Optional(
      T.Object(
        {
          maxRequests: T.Optional(
            T.Integer({
              minimum: 1,
              description: 'Requests in flight to one upstream at most. Default 1024.',
            }),
          ),
          maxPending: T.Optional(
            T.Integer({
              minimum: 0,
              description:
                'Requests waiting for one of its slots at most, each for up to timeoutMs. Default 1024.',
            }),
          ),
        },
        {
          additionalProperties: false,
          description:
            "Per-upstream circuit breaker (as Envoy's max_requests and max_pending_requests): a request goes to an eligible upstream below maxRequests when there is one; when every one is full it waits for a slot of the chosen one, and past maxPending waiting (or after timeoutMs of waiting) it gets 503 PC_UPSTREAM_OVERLOADED with Retry-After instead of queueing without bound. Counted in portcullis_upstream_breaker_rejections_total. Limits hold per gateway process (with workers: N, per worker). Default { maxRequests: 1024, maxPending: 1024 }.",
        },
      ),
    ),
    preferZone: T.Optional(
      T.Boolean({
        description:
          "Send requests only to upstreams whose zone is the gateway's own (gateway.yaml zone, PORTCULLIS_ZONE) while one of them is eligible; when none is (ejected or down), fail over to the others, and back when one recovers. Needs gateway.yaml zone (a warning is logged without it). Default false.",
      }),
    ),
    timeoutMs: T.Optional(positiveMs('Upstream response (headers and body idle) timeout. Default 10000.')),
    connectTimeoutMs: T.Optional(positiveMs('Upstream TCP/TLS connect timeout. Default 3000.')),
    retries: T.Optional(
      T.Integer({
        minimum: 0,
        maximum: MAX_RETRIES,
        description:
          'Further attempts of an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE with no body or one of at most 64 KiB) after a failure listed in retryOn, each on an upstream not tried yet while there is one; a streamed body is never resent. Separately, a request that failed on a reused keep-alive connection before any byte came back is resent once on a fresh connection to the same upstream, whatever retries says. Default 1.',
      }),
    ),
    retryOn: T.Optional(
      T.Array(
        T.Union(
          [
            T.Literal('connect-failure', {
              description:
                'No connection (refused, unreachable, connect timeout): the upstream never saw the request.',
            }),
            T.Literal('reset', { description: 'The connection closed or reset before the response began.' }),
            T.Literal('timeout', { description: 'No response headers within timeoutMs.' }),
            T.Literal(502),
            T.Literal(503),
            T.Literal(504),
          ],
          {
            description:
              'connect-failure, reset, timeout, or an upstream answer with status 502, 503 or 504 (its body is discarded).',
          },
        ),
        {
          uniqueItems: true,
          description:
            'Which failures of an idempotent request are retried. Default [connect-failure, reset, timeout] (no status).',
        },
      ),
    ),
    retryBudget: T.Optional(
      T.Object(
        {
          percent: T.Optional(
            T.Integer({
              minimum: 0,
              maximum: 100,
              description: 'Retries earned per 100 requests forwarded to the service. Default 20.',
            }),
          ),
          burst: T.Optional(
            T.Integer({
              minimum: 0,
              description: 'Retries the budget starts with and holds at most. Default 10.',
            }),
          ),
        },
        {
          additionalProperties: false,
          description:
            "The service's retry budget, a token bucket: every request forwarded earns percent/100 of a retry, a retry spends one, and at most burst are held, so over any stretch of traffic retries <= burst + percent % of requests. Retries after a connect-failure are free (the upstream never saw the request), as is the fresh-connection resend. With the budget spent, the failure is answered (502/504, or the upstream's 502/503/504). Default { percent: 20, burst: 10 }.",
        },
      ),
    ),
    mock: T.Optional(
      T.Boolean({
        description: "Answer from the spec's examples/schemas instead of forwarding. Default false.",
      }),
    ),
    passThrough: T.Optional(
      T.Boolean({
        description: 'Also forward paths under basePath that the spec does not define. Default false.',
      }),
    ),
    tls: T.Optional(
      T.Object(
        {
          ca: T.Optional(
            T.String({ description: 'Extra CA (PEM path, relative to the spec file). Default: none.' }),
          ),
          rejectUnauthorized: T.Optional(
            T.Boolean({ description: 'Verify the upstream certificate. Default true.' }),
          ),
          servername: T.Optional(T.String({ description: 'SNI name sent upstream. Default: the URL host.' })),
        },
        {
          additionalProperties: false,
          description: 'TLS to https upstreams. Default: system CAs, verified.',
        },
      ),
    ),
    websocket: T.Optional(WebSocketSchema),
  },
  { additionalProperties: false },
);

/** `x-portcullis` as written. */
export type XPortcullis = Static<typeof XPortcullisSchema>;

const checkExtension = compileCheck(XPortcullisSchema);

/** Lower-case, non-alphanumerics collapsed to "-": "Pet Store API" → "pet-store-api". */
export function slugify(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/**
 * Validate `ext` (the raw `x-portcullis` value, possibly undefined) and apply every default.
 * `doc` is the raw spec (for info.title and servers), `file` the absolute spec path.
 * Throws ConfigError naming file, line and field for schema violations, bad URLs, an unreadable
 * CA file, or no upstream at all on a service that is not mocked.
 */
export function resolveSettings(
  ext: unknown,
  doc: unknown,
  file: string,
  source: SourceDocument,
): ServiceSettings {
  const at = (path: string, message: string): ConfigIssue => ({
    file,
    line: source.lineOf(path),
    path,
    message,
  });
  const value = ext ?? {};
  const schemaIssues = checkExtension(value, source, EXTENSION_POINTER);
  if (schemaIssues.length > 0) throw new ConfigError(schemaIssues);
  const x = value as XPortcullis;
  const issues: ConfigIssue[] = [];

  const upstreams: UpstreamConfig[] = [];
  if (x.upstreams) {
    x.upstreams.forEach((u, i) => {
      const url = normalizeUpstreamUrl(u.url);
      if (typeof url !== 'string') issues.push(at(`${EXTENSION_POINTER}/upstreams/${i}/url`, url.error));
      else if (upstreams.some((other) => other.url === url))
        issues.push(at(`${EXTENSION_POINTER}/upstreams/${i}/url`, `upstream ${url} is listed twice`));
      else
        upstreams.push(
          u.zone === undefined
            ? { url, weight: u.weight ?? 1 }
            : { url, weight: u.weight ?? 1, zone: u.zone },
        );
    });
  } else {
    upstreams.push(...upstreamsFromServers(doc));
  }
  const mock = x.mock ?? false;
  if (upstreams.length === 0 && issues.length === 0 && !mock) {
    issues.push(
      at(
        `${EXTENSION_POINTER}/upstreams`,
        'no upstream: set x-portcullis.upstreams or an absolute servers[].url, or mock: true',
      ),
    );
  }

  let ca: string | undefined;
  if (x.tls?.ca !== undefined) {
    ca = resolve(dirname(file), x.tls.ca);
    try {
      accessSync(ca, fsConstants.R_OK);
    } catch {
      issues.push(at(`${EXTENSION_POINTER}/tls/ca`, `cannot read CA file ${ca}`));
    }
  }
  const ejectMs = x.passiveHealth?.ejectMs ?? DEFAULT_PASSIVE.ejectMs;
  const maxEjectMs = x.passiveHealth?.maxEjectMs ?? Math.max(DEFAULT_MAX_EJECT_MS, ejectMs);
  if (maxEjectMs < ejectMs)
    issues.push(
      at(
        `${EXTENSION_POINTER}/passiveHealth/maxEjectMs`,
        `maxEjectMs (${maxEjectMs}) is below ejectMs (${ejectMs}): the ceiling of the ejection time cannot be shorter than one ejection`,
      ),
    );
  if (issues.length > 0) throw new ConfigError(issues);

  const settings: ServiceSettings = {
    basePath: normalizeBasePath(x.basePath ?? defaultBasePath(doc, file)),
    upstreams,
    loadBalancing: (x.loadBalancing as LoadBalancing | undefined) ?? DEFAULT_LOAD_BALANCING,
    passiveHealth: {
      ...DEFAULT_PASSIVE,
      ...x.passiveHealth,
      statuses: [...(x.passiveHealth?.statuses ?? DEFAULT_FAILURE_STATUSES)],
      maxEjectMs,
    },
    circuitBreaker: { ...DEFAULT_CIRCUIT_BREAKER, ...x.circuitBreaker },
    preferZone: x.preferZone ?? false,
    timeoutMs: x.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    connectTimeoutMs: x.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    retries: x.retries ?? DEFAULT_RETRIES,
    retryOn: (x.retryOn as RetryOn[] | undefined) ?? [...DEFAULT_RETRY_ON],
    retryBudget: { ...DEFAULT_RETRY_BUDGET, ...x.retryBudget },
    mock,
    passThrough: x.passThrough ?? false,
    tls: { rejectUnauthorized: x.tls?.rejectUnauthorized ?? true },
    websocket: resolveWebSocket(x.websocket),
  };
  if (x.healthCheck) settings.healthCheck = { ...DEFAULT_HEALTH, ...x.healthCheck };
  if (ca !== undefined) settings.tls.ca = ca;
  if (x.tls?.servername !== undefined) settings.tls.servername = x.tls.servername;
  return settings;
}

/** `/petstore/` → `/petstore`; `/` stays `/`. */
function normalizeBasePath(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

function defaultBasePath(doc: unknown, file: string): string {
  const title = (doc as { info?: { title?: unknown } } | null)?.info?.title;
  const slug = typeof title === 'string' ? slugify(title) : '';
  return `/${slug || slugify(basename(file, extname(file)))}`;
}

/**
 * Check and canonicalise an upstream URL: http(s), no credentials, query or fragment, no
 * trailing slash (so equal upstreams compare and hash equal).
 */
function normalizeUpstreamUrl(raw: string): string | { error: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { error: `not an absolute URL: "${raw}"` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { error: `unsupported scheme "${url.protocol}" in "${raw}": use http or https` };
  }
  if (url.username || url.password) return { error: 'credentials in upstream URLs are not supported' };
  if (url.search || url.hash) return { error: `an upstream URL takes no query or fragment: "${raw}"` };
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** Absolute http(s) `servers[].url`s, with `{variables}` replaced by their defaults; others are skipped. */
function upstreamsFromServers(doc: unknown): UpstreamConfig[] {
  const servers = (doc as { servers?: unknown } | null)?.servers;
  if (!Array.isArray(servers)) return [];
  const out: UpstreamConfig[] = [];
  for (const server of servers as Array<{
    url?: unknown;
    variables?: Record<string, { default?: unknown }>;
  }>) {
    if (typeof server?.url !== 'string') continue;
    const expanded = server.url.replace(/\{([^}]+)\}/g, (whole, name: string) => {
      const def = server.variables?.[name]?.default;
      return def === undefined ? whole : String(def);
    });
    const url = normalizeUpstreamUrl(expanded);
    if (typeof url === 'string' && !out.some((u) => u.url === url)) out.push({ url, weight: 1 });
  }
  return out;
}
