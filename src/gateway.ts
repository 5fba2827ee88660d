import { randomBytes } from 'node:crypto';
import { type IncomingMessage, ServerResponse, STATUS_CODES } from 'node:http';
import { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type TLSSocket, Server as TlsServer } from 'node:tls';
import type { FSWatcher } from 'chokidar';
import fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { createAdmin } from './admin/admin.ts';
import { readSettings, settleSettings, watchSettings } from './config/live.ts';
import type { GatewayConfig } from './config/schema.ts';
import { createTlsOptions, type SniCallback } from './config/tls.ts';
import { ConfigError, formatIssue, ProblemError } from './errors.ts';
import { writeProblem } from './lifecycle/answer.ts';
import { Exchange } from './lifecycle/exchange.ts';
import { handle, type Lifecycle, redirect } from './lifecycle/handle.ts';
import { PublicReply, PublicRequest } from './lifecycle/wire.ts';
import { createLogger, type Logger } from './logger.ts';
import { type CidrMatcher, compileCidrs } from './net/cidr.ts';
import { pinTickObjectShape } from './pipeline/tick-shape.ts';
import { closeCacheStores } from './policies/cache/stores.ts';
import { POLICY_KINDS } from './policies/index.ts';
import { PROBLEM_CONTENT_TYPE, problemBody, sendProblem, toProblem } from './problem.ts';
import { Runtime, type RuntimeOptions } from './runtime.ts';
import { createStore } from './state/create-store.ts';
import type { Store } from './state/store.ts';
import { createMetrics, type Metrics } from './telemetry/metrics.ts';
import { createObserver, type Observer } from './telemetry/observer.ts';
import { REQUEST_ID_HEADER } from './telemetry/record.ts';
import type { Tracing } from './telemetry/types.ts';
import { createForwarder, type Forward } from './upstream/forward.ts';
import { type Upgrade, WebSockets, wantsWebSocket } from './upstream/websocket.ts';

/** Methods Fastify's router takes for an injected request (`app.inject`); the others reach its not-found handler. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'] as const;
/** Failed trace exports and dropped spans are logged at most this often. */
const TRACE_WARN_INTERVAL_MS = 60_000;

export interface GatewayOptions {
  logger?: Logger;
  /**
   * Tracing already started (the CLI starts it before Fastify and undici load). Default: started
   * here when `telemetry.otlp` is set, else none. Either way `close()` shuts it down.
   */
  tracing?: Tracing;
  /**
   * Refuse to start on any rejected spec or policy file (`start --strict`). Default false: start
   * like a reload, serving what loads (see Runtime.load).
   */
  strict?: boolean;
  /** Set in a `workers: N` worker (src/cluster/worker.ts); absent in a single process. */
  worker?: WorkerRole;
  /**
   * `portcullis explain` / `test` (src/explain.ts): requests are injected, `forward` replaces the
   * forwarder (it calls no upstream), active health checks do not run, and `onExchange` sees each
   * request's Exchange as it enters. Default: absent (a serving gateway).
   */
  offline?: { forward: Forward; onExchange(ex: Exchange): void };
}

/** What a cluster worker's gateway takes from its primary. */
export interface WorkerRole {
  /** The instance's store (the primary's memory store over IPC); default: created from `state`. */
  store?: Store;
  /** The primary's commit vote on each reload (RuntimeOptions.beforeSwap). */
  beforeSwap: NonNullable<RuntimeOptions['beforeSwap']>;
}

export interface ListenAddresses {
  http?: string;
  https?: string;
  admin?: string;
}

/** A built gateway: not listening until `listen()`; tests may `inject()` into `app`. */
export interface Gateway {
  readonly config: GatewayConfig;
  readonly runtime: Runtime;
  readonly logger: Logger;
  /** Rate-limit and sticky-session state: Redis when `state.redis` is set, else memory. */
  readonly store: Store;
  /** Prometheus metrics (served on the admin port at /metrics). */
  readonly metrics: Metrics;
  /** OpenTelemetry tracing; absent when `telemetry.otlp` is unset. */
  readonly tracing?: Tracing;
  /** The plain-HTTP public app (absent when only HTTPS is configured). */
  readonly app?: FastifyInstance;
  readonly httpsApp?: FastifyInstance;
  readonly admin?: FastifyInstance;
  listen(): Promise<ListenAddresses>;
  /**
   * What SIGHUP does (and the file watch, with `watch: true`): re-read gateway.yaml and apply its
   * live fields (config/live.ts; the others are logged as needing a restart), re-read the
   * certificates (new handshakes get them; a broken pair keeps the old one), reload specs and
   * policies.
   */
  reload(): Promise<void>;
  /**
   * Apply an already loaded gateway.yaml as reload() does (for a process that loads it elsewhere).
   * Resolves true when live fields changed: the specs and policies were then reloaded with them.
   */
  applySettings(next: GatewayConfig): Promise<boolean>;
  /** Graceful: stop accepting, drain in-flight requests (bounded by limits.shutdownGraceMs), close pools. */
  close(): Promise<void>;
}

/**
 * Build the gateway from a resolved config: load specs (throws ConfigError if any is invalid),
 * build the public app(s) and the admin app. Nothing listens yet.
 */
export async function createGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  pinTickObjectShape(); // early, before the store connects (see tick-shape.ts); once per process
  const logger =
    options.logger ??
    createLogger(config.logLevel, undefined, {
      format: config.logFormat,
      bufferBytes: config.logBufferBytes,
    });
  const store = options.worker?.store ?? (await createStore(config.state, logger));
  const runtime = new Runtime({
    config,
    logger,
    store,
    kinds: POLICY_KINDS,
    beforeSwap: options.worker?.beforeSwap,
    healthChecks: options.offline ? false : undefined,
  });
  try {
    await runtime.load(options.strict ? 'strict' : 'tolerant');
  } catch (err) {
    await store.close();
    throw err;
  }
  let closing = false;
  let tracing = options.tracing;
  if (!tracing && config.telemetry.otlp) {
    const { startTracing } = await import('./telemetry/tracing.ts');
    tracing = startTracing(config.telemetry);
  }
  if (tracing) {
    // A collector that is down fails every export: say so at most once a minute.
    let lastWarned = 0;
    const stats = tracing.stats;
    tracing.onError = (message) => {
      const now = Date.now();
      if (now - lastWarned < TRACE_WARN_INTERVAL_MS) return;
      lastWarned = now;
      logger.warn({ spansExported: stats.exported, spansDropped: stats.dropped }, message);
    };
  }
  const metrics = createMetrics(runtime);
  // What the gateway.yaml live fields shape (config/live.ts), rebuilt and swapped on a reload.
  const live = liveParts(config, { logger, metrics, tracing, forward: options.offline?.forward });
  const websocketOptions = {
    logger,
    hideUpstreamIdentity: config.headers.hideUpstreamIdentity,
    opened: (service: string) => metrics.websocketOpen(service, 1),
    closed: (service: string) => metrics.websocketOpen(service, -1),
  };
  const websockets = new WebSockets(websocketOptions);
  const build = (opts: PublicAppOptions) =>
    buildPublicApp(config, runtime, live, logger, websockets, {
      ...opts,
      onExchange: options.offline?.onExchange,
    });

  const https = config.listen.https;
  const configFile = config.file ?? 'gateway.yaml';
  let tls = https ? await createTlsOptions(https, configFile) : undefined;
  const httpsApp =
    https && tls
      ? build({
          // The SNI map is looked up through `tls`, replaced when the certificates are reloaded.
          tls: {
            ...tls,
            SNICallback: (name: string, cb: Parameters<SniCallback>[1]) => tls?.SNICallback(name, cb),
          },
          http2: https.http2,
        })
      : undefined;
  const http = config.listen.http;
  // The bound port, not the configured one: port 0 means "any free port".
  const httpsPort = () => (httpsApp?.server.address() as AddressInfo | null)?.port ?? https?.port ?? 443;
  const app = http
    ? build({
        redirectTo: http.redirectToHttps && https ? httpsPort : undefined,
      })
    : undefined;
  const admin = config.admin
    ? createAdmin({
        runtime,
        store,
        metrics,
        isClosing: () => closing,
        config: config.admin,
        zone: config.zone,
      })
    : undefined;
  if (config.watch) await runtime.watch();

  let current = config;
  /**
   * Re-read the certificate files and apply them to new handshakes (same listener, same PID). A
   * pair that fails keeps the old certificates serving; the error names the file and field.
   */
  const reloadCertificates = async (settings: GatewayConfig): Promise<boolean> => {
    const listener = settings.listen.https;
    if (!httpsApp || !listener) return true;
    try {
      const next = await createTlsOptions(listener, configFile);
      const { SNICallback: _sni, ALPNProtocols: _alpn, ...context } = next;
      (httpsApp.server as unknown as TlsServer).setSecureContext(context);
      tls = next;
      logger.info({ cert: listener.cert, sni: Object.keys(listener.sni) }, 'certificates reloaded');
      return true;
    } catch (err) {
      const issues =
        err instanceof ConfigError
          ? err.issues
          : [{ file: configFile, path: '/listen/https', message: String(err) }];
      for (const i of issues)
        logger.error({ code: 'PC_CONFIG_INVALID', file: i.file, field: i.path }, formatIssue(i));
      logger.error('certificates rejected; the previous ones keep serving');
      return false;
    }
  };
  /**
   * Apply the live fields of `next` (config/live.ts); log the others as needing a restart. True
   * when live fields changed: the specs and policies were reloaded with them.
   */
  const applySettings = async (next: GatewayConfig): Promise<boolean> => {
    const { change, settings: applied } = settleSettings(current, next, logger);
    // Certificates are re-read even when their paths did not change: the files may have.
    const certificatesOk = await reloadCertificates(applied);
    const settings = certificatesOk ? applied : { ...applied, listen: current.listen };
    const fields = change.live.filter((f) => certificatesOk || !f.startsWith('/listen/'));
    if (fields.length === 0) return false;
    current = settings;
    logger.level = settings.logLevel;
    tracing?.setSampleRatio?.(settings.telemetry.sampleRatio);
    Object.assign(
      live,
      liveParts(settings, { logger, metrics, tracing, forward: options.offline?.forward }, live),
    );
    websocketOptions.hideUpstreamIdentity = settings.headers.hideUpstreamIdentity;
    for (const a of [app, httpsApp]) if (a) applyServerLimits(a.server, settings.limits);
    // Policies read limits (a body read never goes past limits.bodyBytes): rebuild the chains.
    runtime.setConfig(settings);
    await runtime.reload();
    logger.info({ fields }, 'gateway.yaml reloaded');
    return true;
  };
  /** Re-read gateway.yaml (when there is one) and the certificates, then the specs and policies. */
  const reloadAll = async (): Promise<void> => {
    if (closing) return;
    const next = config.file ? await readSettings(config.file, logger) : undefined;
    // Changed live fields reload the specs and policies with them: not a second time here.
    if (next && (await applySettings(next))) return;
    if (!next) await reloadCertificates(current);
    await runtime.reload();
  };
  const settingsWatcher: FSWatcher | undefined = config.watch
    ? await watchSettings(config, logger, reloadAll)
    : undefined;

  const addr = (a: FastifyInstance, scheme: string) => {
    const info = a.server.address() as AddressInfo;
    const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
    return `${scheme}://${host}:${info.port}`;
  };

  return {
    get config() {
      return current;
    },
    runtime,
    logger,
    store,
    metrics,
    tracing,
    app,
    httpsApp,
    admin,
    async listen() {
      const out: ListenAddresses = {};
      if (app && http) {
        await app.listen({ port: http.port, host: http.host });
        out.http = addr(app, 'http');
      }
      if (httpsApp && https) {
        await httpsApp.listen({ port: https.port, host: https.host });
        out.https = addr(httpsApp, 'https');
      }
      if (admin && config.admin) {
        await admin.listen({ port: config.admin.port, host: config.admin.host });
        out.admin = addr(admin, 'http');
      }
      // A worker's listening is not the instance's: the primary says so once every worker is up.
      const message = options.worker ? 'worker listening' : 'portcullis listening';
      logger.info({ ...out, version: runtime.snapshot?.version }, message);
      return out;
    },
    reload: reloadAll,
    applySettings,
    async close() {
      closing = true;
      await settingsWatcher?.close();
      // Open WebSockets get their close frame (1001) first; the grace period below bounds them too.
      const sockets = websockets.goingAway();
      const publicApps = [app, httpsApp].filter((a): a is FastifyInstance => a !== undefined);
      const drains = publicApps.map((a) => trackConnections(a.server));
      for (const d of drains) d.drain();
      // Past the grace period, cut whatever is still open so shutdown is bounded.
      const force = setTimeout(() => {
        for (const d of drains) d.destroyAll();
        websockets.destroyAll();
      }, current.limits.shutdownGraceMs);
      force.unref();
      await Promise.all([...publicApps.map((a) => a.close()), sockets]);
      clearTimeout(force);
      await runtime.close();
      await closeCacheStores(store);
      await store.close();
      await admin?.close();
      // Last: the spans of the drained requests are exported before the exporter stops.
      await tracing?.shutdown();
    },
  };
}

interface ConnectionTracker {
  /** Stop keep-alive: end idle HTTP/1 connections now, busy ones once their last response is done. */
  drain(): void;
  /** Destroy every connection, busy or not (the end of the grace period). */
  destroyAll(): void;
}

const trackers = new WeakMap<object, ConnectionTracker>();

/**
 * Connection bookkeeping for shutdown, attached once per public server before it listens.
 * Needed because an HTTP/2 server (TLS with allowHTTP1) has neither closeIdleConnections nor
 * closeAllConnections: without this, one idle HTTP/1.1 keep-alive client holds `close()` open
 * for the whole grace period, and one stuck client holds it forever. HTTP/2 sessions get their
 * GOAWAY from Fastify's close.
 */
function trackConnections(server: FastifyInstance['server']): ConnectionTracker {
  const existing = trackers.get(server);
  if (existing) return existing;
  const raw = new Set<Socket>();
  const http1 = new Set<Socket>();
  /**
   * Responses in progress per HTTP/1 socket. An idle socket keeps its entry at 0 until it closes:
   * adding and deleting it per request churned the Map's table (a new backing store every few
   * requests, promoted and left to the next full collection).
   */
  const busy = new Map<Socket, number>();
  let draining = false;
  const release = (socket: Socket) => {
    if (draining && !busy.get(socket)) socket.end();
  };
  // On a TLS server requests arrive on the TLSSocket, not on the raw TCP socket under it.
  const secure = server instanceof TlsServer;
  server.on('connection', (socket: Socket) => {
    raw.add(socket);
    socket.once('close', () => raw.delete(socket));
    if (!secure) addHttp1(socket);
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol !== 'h2') addHttp1(socket);
  });
  function addHttp1(socket: Socket) {
    http1.add(socket);
    socket.once('close', () => {
      http1.delete(socket);
      busy.delete(socket);
    });
  }
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.httpVersionMajor !== 1) return;
    const socket = req.socket;
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    if (draining && !res.headersSent) res.setHeader('connection', 'close');
    // `on`: a response closes once (once() costs a wrapper and a removal per request).
    res.on('close', () => {
      const n = busy.get(socket);
      // Gone when the socket closed first: it is not added back.
      if (n !== undefined) busy.set(socket, n - 1);
      release(socket);
    });
  });
  const tracker: ConnectionTracker = {
    drain() {
      draining = true;
      for (const socket of http1) {
        // A response still to be written ends its connection (`Connection: close`): its client
        // learns not to send another request on it. `_httpMessage` is Node's current response on
        // an HTTP/1 socket (internal, but what its own server reads); the public API has no other.
        const res = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
        if (res && !res.headersSent) res.shouldKeepAlive = false;
        release(socket);
      }
    },
    destroyAll() {
      for (const socket of raw) socket.destroy();
    },
  };
  trackers.set(server, tracker);
  return tracker;
}

/**
 * WebSocket upgrades enter the lifecycle like any request (`dispatch`), so it answers or
 * refuses them as usual, and on an upstream 101 upstream/websocket.ts takes the stream over:
 * - HTTP/1.1: a GET with `Upgrade: websocket` (Node emits 'upgrade' for those only; other Upgrade
 *   requests stay ordinary requests), with a response bound to its socket, as @fastify/websocket does;
 * - HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` (the listener sends
 *   SETTINGS_ENABLE_CONNECT_PROTOCOL), routed as the GET it stands for. Any other CONNECT is routed
 *   as a CONNECT: no operation is one, so it gets a problem (404/405), never Node's bare 405.
 * Returns where `enter` finds each upgrade request's socket or stream.
 */
function acceptUpgrades(
  app: FastifyInstance,
  dispatch: (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void,
  websockets: WebSockets,
  http2: boolean,
  logger: Logger,
): WeakMap<IncomingMessage | Http2ServerRequest, Upgrade> {
  const upgrades = new WeakMap<IncomingMessage | Http2ServerRequest, Upgrade>();
  const server = app.server as unknown as {
    shouldUpgradeCallback: (req: IncomingMessage) => boolean;
    on(event: 'upgrade', listener: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): void;
    on(
      event: 'connect',
      listener: (req: IncomingMessage | Http2ServerRequest, res: Duplex | Http2ServerResponse) => void,
    ): void;
  };
  server.shouldUpgradeCallback = wantsWebSocket;
  const route = (req: IncomingMessage, res: ServerResponse, socket: Duplex) => {
    try {
      dispatch(req, res);
    } catch (err) {
      logger.warn({ err }, 'websocket upgrade failed');
      socket.destroy();
    }
  };
  server.on('upgrade', function acceptUpgrade(req, socket, head) {
    // Node leaves an upgraded socket without an error listener: one error must not end the process.
    socket.on('error', () => socket.destroy());
    // shouldUpgradeCallback (Node 22.21+, 24.9+) keeps every other upgrade an ordinary request.
    // Where it is not honoured, anything but a GET asking for a WebSocket is refused here, never
    // tunnelled.
    if (!wantsWebSocket(req)) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const upgrade = websockets.begin(socket, head, false);
    upgrades.set(req, upgrade);
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => {
      // As Node's server does at the end of a response (its 'close' ends the observation).
      res.detachSocket(socket as Socket);
      if (!upgrade.done) (socket as Socket).destroySoon();
      res.emit('close');
    });
    route(req, res, socket);
  });
  if (http2) {
    server.on('connect', function acceptConnect(req, res) {
      // An HTTP/1.1 CONNECT on the same listener: closed, as Node does without this listener.
      if (!(req instanceof Http2ServerRequest) || !(res instanceof Http2ServerResponse)) {
        (res as Duplex).destroy();
        return;
      }
      if (req.headers[':protocol'] !== 'websocket') {
        // A tunnel to somewhere (or another protocol): the gateway proxies operations, not CONNECT.
        writeProblem(
          res as unknown as ServerResponse,
          new ProblemError('PC_METHOD_NOT_ALLOWED', 'CONNECT is only accepted for WebSockets (RFC 8441)'),
          '',
        );
        return;
      }
      const upgrade = websockets.begin(res.stream, Buffer.alloc(0), true);
      upgrades.set(req, upgrade);
      // The upstream is spoken to in HTTP/1.1: its handshake needs a key, which h2 clients do not send.
      req.headers['sec-websocket-key'] = randomBytes(16).toString('base64');
      (req as { method: string }).method = 'GET';
      // What `enter` looks for (IncomingMessage.upgrade on HTTP/1.1).
      (req as { upgrade?: boolean }).upgrade = true;
      route(req as unknown as IncomingMessage, res as unknown as ServerResponse, res.stream);
    });
  }
  return upgrades;
}

/** What the live gateway.yaml fields shape; replaced as a whole (Object.assign) on a reload. */
interface LiveParts {
  trust: CidrMatcher;
  observer: Observer;
  /** Read per request by the lifecycle: its `forward` is swapped in place. */
  lifecycle: Lifecycle;
}

function liveParts(
  config: GatewayConfig,
  deps: { logger: Logger; metrics: Metrics; tracing?: Tracing; forward?: Forward },
  previous?: LiveParts,
): LiveParts {
  const trust = compileCidrs(config.trustProxy);
  const forward =
    deps.forward ??
    createForwarder({
      trustProxy: trust,
      hideUpstreamIdentity: config.headers.hideUpstreamIdentity,
      bodyBytes: config.limits.bodyBytes,
      logger: deps.logger,
    });
  const observer = createObserver({
    logger: deps.logger,
    metrics: deps.metrics,
    tracer: deps.tracing?.tracer,
    trustProxy: trust,
    accessLog: config.telemetry.accessLog,
    accessLogSample: config.telemetry.accessLogSample,
  });
  const lifecycle = previous?.lifecycle ?? { forward, logger: deps.logger };
  lifecycle.forward = forward;
  return { trust, observer, lifecycle };
}

/** Server timeouts from `limits`; also applied to a running server on reload (new requests get them). */
function applyServerLimits(server: FastifyInstance['server'], limits: GatewayConfig['limits']): void {
  const s = server as { headersTimeout?: number; requestTimeout?: number; keepAliveTimeout?: number };
  s.headersTimeout = limits.headersTimeoutMs;
  s.requestTimeout = limits.requestTimeoutMs;
  s.keepAliveTimeout = limits.keepAliveTimeoutMs;
}

/**
 * The answer to a request Node's HTTP/1.1 parser refuses (a method token it does not know, a
 * malformed request line or header field, header fields over `maxHeaderSize`, a request slower
 * than `limits.requestTimeoutMs`): problem+json like every other refusal (not Fastify's own
 * JSON), then the connection closes. Nothing of the request is echoed.
 */
function clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (socket.writable) {
    const problem =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? new ProblemError('PC_HEADERS_TOO_LARGE')
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? new ProblemError('PC_REQUEST_TIMEOUT')
          : new ProblemError('PC_BAD_REQUEST', 'The request could not be parsed as HTTP/1.1');
    const body = problemBody(problem, '');
    socket.write(
      `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status]}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Every request on the public listener goes to `dispatch` (the lifecycle), not through Fastify's
 * router: Fastify's own 'request' listener is taken off. Fastify keeps the server: listening,
 * timeouts, client errors, HTTP/2 sessions, and the graceful close.
 */
function takeRequests(
  app: FastifyInstance,
  dispatch: (req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void,
): void {
  const server = app.server;
  const routing = app.routing as (...args: unknown[]) => void;
  // Fastify's listener is its `routing`: if a Fastify version ever registers another, every request
  // would be answered twice, so the gateway refuses to start instead.
  if (!server.listeners('request').includes(routing))
    throw new Error(
      "Fastify's request listener is not app.routing: the public listener cannot take its requests",
    );
  server.removeListener('request', routing);
  server.on('request', dispatch);
}

interface PublicAppOptions {
  tls?: object;
  http2?: boolean;
  /** When set, every request is redirected to HTTPS on the port it returns. */
  redirectTo?: () => number;
  /** See GatewayOptions.offline. */
  onExchange?: (ex: Exchange) => void;
}

function buildPublicApp(
  config: GatewayConfig,
  runtime: Runtime,
  live: LiveParts,
  logger: Logger,
  websockets: WebSockets,
  opts: PublicAppOptions,
): FastifyInstance {
  const serverOptions = {
    loggerInstance: logger,
    // Per-request logs come from the access log, not Fastify's defaults.
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger: nothing logs through req.log (the observer writes the access
    // log), and creating one costs about 1 µs a request.
    childLoggerFactory: (parent: Logger) => parent,
    // Read per request, so a reloaded trustProxy applies to request.ip at once.
    trustProxy: function trustedProxy(address: string) {
      return live.trust(address);
    },
    bodyLimit: config.limits.bodyBytes,
    requestTimeout: config.limits.requestTimeoutMs,
    keepAliveTimeout: config.limits.keepAliveTimeoutMs,
    connectionTimeout: 0,
    return503OnClosing: true,
    forceCloseConnections: 'idle' as const,
    http2SessionTimeout: config.limits.keepAliveTimeoutMs,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 2048 },
    // A target Fastify's router cannot decode (`/items/%zz`) goes through the lifecycle like any
    // other: the canonical target rejects it with our problem, request id and access-log line.
    // What Node's HTTP/1.1 parser refuses never reaches a route: answered here, as problem+json.
    clientErrorHandler: clientError,
    frameworkErrors: function routeFrameworkError(err: Error, req: FastifyRequest, reply: FastifyReply) {
      if ((err as { code?: string }).code === 'FST_ERR_BAD_URL') return injected(req, reply);
      return sendProblem(req, reply, toProblem(err));
    },
    ...(opts.tls
      ? opts.http2
        ? // enableConnectProtocol: WebSockets over HTTP/2 (RFC 8441 extended CONNECT, see acceptUpgrades).
          { http2: true, https: { allowHTTP1: true, settings: { enableConnectProtocol: true }, ...opts.tls } }
        : { https: opts.tls }
      : {}),
  };
  // fastify()'s overloads pick a server type from literal options; these are built at run time.
  const app = fastify(serverOptions as Parameters<typeof fastify>[0]) as unknown as FastifyInstance;
  applyServerLimits(app.server, config.limits);
  trackConnections(app.server);

  // Bodies are never parsed here: they stream to the upstream untouched.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', function keepBodyStream(_req, _payload, done) {
    done(null, undefined);
  });

  const lifecycle = live.lifecycle;
  const redirectTo = opts.redirectTo;
  /**
   * Where every request starts: its request and reply (lifecycle/wire.ts), one Exchange observed
   * from its first moment, then the lifecycle. Any method token reaches it (HTTP/2 carries any).
   */
  const dispatch = (raw: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => {
    // A request read from an HTTP/1 connection the gateway already ended (a draining shutdown
    // closed it as idle while the client was sending) cannot be answered: it is dropped before
    // anything acts on it, so the client can safely send it again (RFC 9112 §9.3.1). Processing it
    // would forward it upstream and leave the client with a reset for a request that ran.
    if (raw.httpVersionMajor === 1 && raw.socket.writableEnded) {
      raw.socket.destroy();
      return;
    }
    try {
      const req = new PublicRequest(raw, live, logger);
      const reply = new PublicReply(res);
      const url = req.url;
      const q = url.indexOf('?');
      const rec = live.observer.begin(req, reply, q === -1 ? url : url.slice(0, q));
      reply.header(REQUEST_ID_HEADER, rec.id);
      const ex = new Exchange(req, reply, rec, runtime.snapshot);
      opts.onExchange?.(ex);
      if ((raw as { upgrade?: boolean }).upgrade) {
        ex.upgrade = upgrades.get(raw);
        if (ex.upgrade) rec.websocket = 'asked';
      }
      if (redirectTo) redirect(ex, redirectTo());
      else handle(ex, lifecycle);
    } catch (err) {
      // The lifecycle answers every failure itself; this is a bug, and it must not end the process.
      logger.error({ err, code: 'PC_INTERNAL' }, 'request failed');
      if (res.headersSent) res.destroy();
      else writeProblem(res as ServerResponse, new ProblemError('PC_INTERNAL'), '');
    }
  };
  const upgrades = acceptUpgrades(
    app,
    dispatch,
    websockets,
    opts.tls !== undefined && opts.http2 === true,
    logger,
  );
  takeRequests(app, dispatch);

  // Requests injected through Fastify (`app.inject`: `portcullis explain`, tests) take the same path.
  const injected = (req: FastifyRequest, reply: FastifyReply): void => {
    reply.hijack();
    dispatch(req.raw, reply.raw);
  };
  app.setErrorHandler(function renderError(err, req, reply) {
    const problem = toProblem(err);
    if (problem.status >= 500) logger.error({ err, code: problem.code }, 'request failed');
    return sendProblem(req, reply, problem);
  });
  app.setNotFoundHandler(injected);
  app.route({ method: [...METHODS], url: '/*', handler: injected });
  return app;
}
