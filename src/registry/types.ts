import type { OpenAPIV3, OpenAPIV3_1 } from 'openapi-types';

export type LoadBalancing = 'round-robin' | 'weighted' | 'least-connections' | 'ip-hash' | 'random-two';

export interface UpstreamConfig {
  /** Origin plus optional path prefix, e.g. `http://127.0.0.1:4001/v1`. */
  url: string;
  /** Relative share for `weighted` (and ip-hash ring points). Default 1. */
  weight: number;
  /** Locality (zone, rack, region) the upstream runs in, for `preferZone`; absent: none. */
  zone?: string;
}

export interface HealthCheckConfig {
  /** Path probed with GET; 2xx/3xx = healthy. */
  path: string;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive failed probes before an upstream is marked down. */
  unhealthyAfter: number;
  /** Consecutive good probes before a down upstream is readmitted. */
  healthyAfter: number;
}

export interface PassiveHealthConfig {
  /** Consecutive proxied-request failures (connect errors, resets, timeouts, 5xx if counted) that eject. */
  failures: number;
  /** How long an ejected upstream is skipped before it is tried again. */
  ejectMs: number;
  /**
   * Panic mode: when fewer than this percent of a group's upstreams are un-ejected, or none is,
   * ejections are ignored and requests are balanced over every upstream active checks have not
   * taken out. Default 0: only when every upstream is ejected.
   */
  panicThreshold: number;
  /** Upstream answer statuses that count as failures (like Envoy's consecutive 5xx). */
  statuses: number[];
  /** Ceiling of the growing ejection time (`ejectMs` × ejections in a row). */
  maxEjectMs: number;
}

/** Per-upstream concurrency limits: beyond them the gateway answers 503 instead of queueing. */
export interface CircuitBreakerConfig {
  /** Requests in flight to one upstream at most. */
  maxRequests: number;
  /** Requests waiting for a slot of one upstream at most (each waits up to `timeoutMs`). */
  maxPending: number;
}

/** What makes an idempotent request go to another attempt (see x-portcullis `retryOn`). */
export type RetryOn = 'connect-failure' | 'reset' | 'timeout' | 502 | 503 | 504;

/** Token bucket capping a service's retries: retries <= burst + percent % of requests. */
export interface RetryBudgetConfig {
  /** Retries earned per 100 requests forwarded to the service. */
  percent: number;
  /** Retries the bucket starts with and holds at most. */
  burst: number;
}

/** WebSocket proxying of an operation (x-portcullis `websocket`), when allowed. */
export interface WebSocketSettings {
  /** Close a socket with no frame either way for this long (1001 both ways). */
  idleTimeoutMs: number;
  /** Close a socket open this long, busy or not (1001 both ways). */
  maxLifetimeMs: number;
}

/** The validated, defaulted `x-portcullis` of one service. */
export interface ServiceSettings {
  basePath: string;
  upstreams: UpstreamConfig[];
  loadBalancing: LoadBalancing;
  healthCheck?: HealthCheckConfig;
  passiveHealth: PassiveHealthConfig;
  circuitBreaker: CircuitBreakerConfig;
  /** Send traffic to upstreams of the gateway's own `zone` while one of them is eligible. */
  preferZone: boolean;
  timeoutMs: number;
  connectTimeoutMs: number;
  /** Further attempts of an idempotent, replayable request (0-5). */
  retries: number;
  /** Failures that are retried (connection failures, resets, timeouts, 502/503/504 answers). */
  retryOn: RetryOn[];
  /** Caps the service's retries (see RetryBudgetConfig). */
  retryBudget: RetryBudgetConfig;
  /** Answer operations from the spec's examples/schemas instead of forwarding. */
  mock: boolean;
  /** Forward paths that are not in the spec too (opt-out of the positive security model). */
  passThrough: boolean;
  /** For https upstreams: extra CA (PEM path, resolved) and whether to verify. */
  tls: { ca?: string; rejectUnauthorized: boolean; servername?: string };
  /** WebSocket upgrades on GET operations: their timeouts, or false (refused). */
  websocket: WebSocketSettings | false;
}

export type OpenApiDocument = OpenAPIV3.Document | OpenAPIV3_1.Document;
export type OperationObject = OpenAPIV3.OperationObject | OpenAPIV3_1.OperationObject;

/** One routable operation. Immutable once built. */
export interface Route {
  /** Service name (file name without extension), the key policies match on. */
  service: string;
  operationId: string;
  /** Upper-case HTTP method. */
  method: string;
  /** Path template as in the spec, e.g. `/pets/{petId}`. */
  specPath: string;
  /** Public path template in router syntax, e.g. `/petstore/pets/:petId`. */
  publicPath: string;
  tags: string[];
  /** The dereferenced operation ($refs resolved). */
  operation: OperationObject;
  /** Stands for the undeclared paths of a pass-through service (runtime.ts), not an operation. */
  passThrough?: boolean;
  /** The operation's own `x-portcullis.websocket`, resolved over the service's; absent: the service's. */
  websocket?: WebSocketSettings | false;
}

/** One service: its spec, settings and routes. */
export interface Service {
  name: string;
  /** Absolute path of the spec file. */
  file: string;
  title: string;
  version: string;
  settings: ServiceSettings;
  /** The dereferenced document. */
  document: OpenApiDocument;
  routes: Route[];
  /** Hash of the upstream-related settings: equal hash = the pool is kept across reloads. */
  upstreamKey: string;
}
