import { type Static, Type as T } from '@sinclair/typebox';

/** A TLS certificate pair: paths to PEM files, relative to gateway.yaml. */
export const CertPair = T.Object(
  {
    cert: T.String({ description: 'Path to the PEM certificate chain.' }),
    key: T.String({ description: 'Path to the PEM private key.' }),
  },
  { additionalProperties: false },
);

/** The HTTPS listener: a default certificate plus optional per-host certificates by SNI. */
export const HttpsListener = T.Object(
  {
    port: T.Integer({
      minimum: 0,
      maximum: 65535,
      description: 'Port of the TLS listener. 0 picks a free port.',
    }),
    host: T.Optional(T.String({ description: 'Address to bind. Default: listen.http.host or 0.0.0.0.' })),
    cert: T.String({ description: 'Default certificate (PEM path), served when no SNI entry matches.' }),
    key: T.String({ description: 'Default private key (PEM path).' }),
    sni: T.Optional(
      T.Record(T.String(), CertPair, {
        description: 'Certificates by server name; "*.example.com" matches one label. Default: none.',
      }),
    ),
    minVersion: T.Optional(
      T.Union([T.Literal('TLSv1.2'), T.Literal('TLSv1.3')], {
        description: 'Lowest TLS version. Default TLSv1.2.',
      }),
    ),
    ciphers: T.Optional(
      T.String({ description: 'OpenSSL cipher list for TLS 1.2. Default: modern AEAD suites.' }),
    ),
    http2: T.Optional(T.Boolean({ description: 'Offer HTTP/2 (ALPN h2) next to HTTP/1.1. Default true.' })),
  },
  { additionalProperties: false },
);

export const GatewayConfigSchema = T.Object(
  {
    listen: T.Optional(
      T.Object(
        {
          http: T.Optional(
            T.Object(
              {
                port: T.Optional(
                  T.Integer({ minimum: 0, maximum: 65535, description: 'Plain HTTP port. Default 8080.' }),
                ),
                host: T.Optional(T.String({ description: 'Address to bind. Default 0.0.0.0.' })),
                redirectToHttps: T.Optional(
                  T.Boolean({
                    description: 'Answer every plain-HTTP request with 308 to HTTPS. Default false.',
                  }),
                ),
              },
              { additionalProperties: false },
            ),
          ),
          https: T.Optional(HttpsListener),
        },
        { additionalProperties: false },
      ),
    ),
    admin: T.Optional(
      T.Object(
        {
          port: T.Optional(
            T.Integer({ minimum: 0, maximum: 65535, description: 'Admin port. Default 9090.' }),
          ),
          host: T.Optional(T.String({ description: 'Admin bind address. Default 127.0.0.1.' })),
          hosts: T.Optional(
            T.Array(
              T.String({
                // A name, an IPv4 address, an IPv6 address (bare or in brackets) or "*"; no port.
                pattern: '^(\\*|[A-Za-z0-9_.-]+|\\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\\]?)$',
                description: 'A Host name or address without port, or "*" for any.',
              }),
              {
                description:
                  'More Host header values (port ignored) the admin app answers, besides localhost, 127.0.0.1, [::1] and its own address (admin.host, or every local interface address when admin.host is 0.0.0.0 or ::). Any other Host gets 421 (PC_MISDIRECTED): a DNS-rebinding web page cannot read the admin port. "*" answers any Host. Default: none.',
              },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    openapi: T.Optional(T.String({ description: 'Folder of service specs. Default ./openapi.' })),
    policies: T.Optional(T.String({ description: 'Folder of policy files. Default ./policies.' })),
    watch: T.Optional(T.Boolean({ description: 'Reload specs and policies on change. Default true.' })),
    state: T.Optional(
      T.Object(
        {
          redis: T.Optional(
            T.String({ description: 'Redis URL (single node); absent: in-memory state (one process).' }),
          ),
          sentinel: T.Optional(
            T.Object(
              {
                name: T.String({ description: 'Name of the monitored master.' }),
                sentinels: T.Array(T.String(), {
                  minItems: 1,
                  description: 'Sentinel addresses, host:port.',
                }),
                sentinelPassword: T.Optional(
                  T.String({ description: 'Password of the sentinels. Default: none.' }),
                ),
              },
              {
                additionalProperties: false,
                description: 'Redis Sentinel instead of `redis`. Default: none.',
              },
            ),
          ),
          cluster: T.Optional(
            T.Object(
              { nodes: T.Array(T.String(), { minItems: 1, description: 'Seed nodes, host:port.' }) },
              {
                additionalProperties: false,
                description: 'Redis Cluster instead of `redis`. Default: none.',
              },
            ),
          ),
          commandTimeoutMs: T.Optional(
            T.Integer({
              minimum: 1,
              description: 'A Redis command slower than this counts as a store error. Default 250.',
            }),
          ),
          connectTimeoutMs: T.Optional(
            T.Integer({ minimum: 1, description: 'Redis connect timeout. Default 2000.' }),
          ),
          cacheMemoryBytes: T.Optional(
            T.Integer({
              minimum: 1,
              description:
                'Bound of the in-memory response cache (the `cache` policy with no Redis, or `store: memory`): ' +
                'bodies and headers, least recently used out first; one per process. Default 67108864 (64 MiB).',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    telemetry: T.Optional(
      T.Object(
        {
          otlp: T.Optional(T.String({ description: 'OTLP/HTTP endpoint; absent: tracing off.' })),
          serviceName: T.Optional(
            T.String({ description: 'service.name resource attribute. Default portcullis.' }),
          ),
          sampleRatio: T.Optional(
            T.Number({
              minimum: 0,
              maximum: 1,
              description:
                "Head sampling ratio for requests without a sampled parent (parent-based: a caller's decision is kept). Default 1.",
            }),
          ),
          propagators: T.Optional(
            T.Array(
              T.Union(['tracecontext', 'baggage', 'b3', 'b3multi', 'jaeger'].map((p) => T.Literal(p))),
              {
                minItems: 1,
                uniqueItems: true,
                description:
                  'Trace context formats read from clients and sent upstream (first that finds a context wins). Default [tracecontext, baggage].',
              },
            ),
          ),
          accessLog: T.Optional(
            T.Union(
              [
                T.Boolean(),
                T.Object(
                  {
                    sample: T.Optional(
                      T.Number({
                        minimum: 0,
                        maximum: 1,
                        description:
                          'Share of successful requests logged (answered below 400, nothing denied). Denials and errors are always logged. Default 1.',
                      }),
                    ),
                  },
                  { additionalProperties: false },
                ),
              ],
              {
                description:
                  'One access-log line per request, at level info: true, false, or { sample } to log a share of the successful ones. Default true.',
              },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    trustProxy: T.Optional(
      T.Array(T.String(), {
        description: 'CIDRs whose X-Forwarded-* / Forwarded / X-Request-Id are believed. Default: none.',
      }),
    ),
    limits: T.Optional(
      T.Object(
        {
          bodyBytes: T.Optional(
            T.Integer({ minimum: 0, description: 'Largest request body. Default 1 MiB.' }),
          ),
          headersTimeoutMs: T.Optional(
            T.Integer({ minimum: 0, description: 'Client header timeout. Default 10000.' }),
          ),
          requestTimeoutMs: T.Optional(
            T.Integer({ minimum: 0, description: 'Whole client request timeout. Default 30000.' }),
          ),
          keepAliveTimeoutMs: T.Optional(
            T.Integer({ minimum: 0, description: 'Idle client keep-alive. Default 72000.' }),
          ),
          shutdownGraceMs: T.Optional(
            T.Integer({
              minimum: 0,
              description: 'How long shutdown waits for in-flight requests. Default 10000.',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    headers: T.Optional(
      T.Object(
        {
          hideUpstreamIdentity: T.Optional(
            T.Boolean({
              description: 'Drop upstream Server and X-Powered-By response headers. Default true.',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    workers: T.Optional(
      T.Union(
        [
          T.Integer({ minimum: 1, maximum: 256 }),
          T.Literal('auto', { description: 'One worker per core (os.availableParallelism()).' }),
        ],
        {
          description:
            'Worker processes serving the listeners (node:cluster): an integer 1-256, or auto for one per core. The primary process loads and watches the configuration, holds the memory store and serves the admin port; rate limits and sticky sessions stay per instance. Needs a restart to change. Env PORTCULLIS_WORKERS. Default 1 (one process, no primary).',
        },
      ),
    ),
    zone: T.Optional(
      T.String({
        minLength: 1,
        description:
          'The zone (or rack, region) this gateway runs in; services with preferZone send traffic to upstreams of this zone while one is eligible. Env PORTCULLIS_ZONE. Default: none.',
      }),
    ),
    logLevel: T.Optional(
      T.Union(
        ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => T.Literal(l)),
        { description: 'pino log level. Default info.' },
      ),
    ),
    logFormat: T.Optional(
      T.Union([T.Literal('json'), T.Literal('pretty')], {
        description:
          'json: one JSON object per line (for log shippers). pretty: coloured, human-readable lines for a terminal (`start --pretty`). Default json.',
      }),
    ),
    logBufferBytes: T.Optional(
      T.Integer({
        minimum: 4096,
        description:
          'Bytes of log lines held while stdout is slower than the gateway; past this, lines are dropped and counted in portcullis_log_lines_dropped_total instead of slowing requests. Default 4194304 (4 MiB).',
      }),
    ),
  },
  { additionalProperties: false },
);

/** A trace context format (`telemetry.propagators`). */
export type TelemetryPropagator = 'tracecontext' | 'baggage' | 'b3' | 'b3multi' | 'jaeger';

/** gateway.yaml as written (every field optional). */
export type GatewayConfigInput = Static<typeof GatewayConfigSchema>;

/** gateway.yaml after defaults and environment overrides: what the code downstream trusts. */
export interface GatewayConfig {
  /** Folder the relative paths were resolved against. */
  baseDir: string;
  /** The file it came from, if any. */
  file?: string;
  listen: {
    http?: { port: number; host: string; redirectToHttps: boolean };
    https?: {
      port: number;
      host: string;
      cert: string;
      key: string;
      sni: Record<string, { cert: string; key: string }>;
      minVersion: 'TLSv1.2' | 'TLSv1.3';
      ciphers: string;
      http2: boolean;
    };
  };
  /** `hosts`: extra Host names the admin app answers (absent: none; see the schema). */
  admin?: { port: number; host: string; hosts?: string[] };
  openapi: string;
  policies: string;
  watch: boolean;
  state: {
    redis?: string;
    sentinel?: { name: string; sentinels: string[]; sentinelPassword?: string };
    cluster?: { nodes: string[] };
    commandTimeoutMs?: number;
    connectTimeoutMs?: number;
    /** Bound of the memory response cache, bytes (default 64 MiB, see policies/cache). */
    cacheMemoryBytes?: number;
  };
  telemetry: {
    otlp?: string;
    serviceName: string;
    sampleRatio: number;
    propagators: TelemetryPropagator[];
    accessLog: boolean;
    /** Share of successful requests in the access log (`accessLog: { sample }`). */
    accessLogSample: number;
  };
  trustProxy: string[];
  limits: {
    bodyBytes: number;
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    keepAliveTimeoutMs: number;
    shutdownGraceMs: number;
  };
  headers: { hideUpstreamIdentity: boolean };
  /** Worker processes (`auto` resolved to the core count); 1 = one process, no cluster. */
  workers: number;
  /** The gateway's zone, for preferZone; absent: none. */
  zone?: string;
  logLevel: string;
  logFormat: 'json' | 'pretty';
  logBufferBytes: number;
}
