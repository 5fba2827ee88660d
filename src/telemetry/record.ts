import type { ProblemError } from '../errors.ts';
import type { RouteChain } from '../pipeline/chain.ts';
import type { RequestContext } from '../pipeline/types.ts';
import { publicTemplate } from '../registry/load-service.ts';
import type { Route } from '../registry/types.ts';
import type { Upstream } from '../upstream/group.ts';
import type { RequestTracer, TraceSpan } from './types.ts';

/** The response header and upstream request header carrying the request id. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** Upstream-side hooks of the metrics (metrics.ts); the record calls them per attempt. */
export interface UpstreamObserver {
  /** One upstream attempt ended: `errorCode` set when no response came (undici / system code). */
  upstreamDone(service: string, upstream: Upstream, seconds: number, errorCode: string | undefined): void;
}

/**
 * What the gateway learns about one request while serving it; read once when the response
 * closes (metrics, access log, span end). One allocation per request; the forwarder fills the
 * upstream fields.
 */
export class RequestRecord {
  /** `X-Request-Id`: from a trusted peer, else generated. Returned to the client and sent upstream. */
  readonly id: string;
  /** performance.now() at arrival. */
  readonly start: number;
  readonly method: string;
  /** Request path without its query. */
  readonly path: string;
  readonly clientIp: string;
  /** The matched route; undefined for 404s and pass-through requests. */
  route: Route | undefined = undefined;
  /** The matched route's public template (`/petstore/pets/{petId}`). */
  template: string | undefined = undefined;
  /** Service of a pass-through request (no route). */
  passThrough: string | undefined = undefined;
  /** The policy context (decisions), on routes with policies. */
  ctx: RequestContext | undefined = undefined;
  /** The route's policy chain (which rule applied each policy), with `ctx`. */
  chain: RouteChain | undefined = undefined;
  /** The rejection sent, if any. */
  problem: ProblemError | undefined = undefined;
  /** URL of the upstream of the last attempt. */
  upstream: string | undefined = undefined;
  /** Upstream attempts made (retries = attempts - 1). */
  attempts = 0;
  /** Time spent in upstream attempts, ms. */
  upstreamMs = 0;
  /** Response body bytes the client got (after compression); 0 until counted, see the observer. */
  bytes = 0;
  /** A WebSocket upgrade request (counted and logged as one): 'asked', then 'upgraded' once the upstream said 101. */
  websocket: 'no' | 'asked' | 'upgraded' = 'no';
  /** The end-of-request accounting ran (metrics, access log, span end). */
  observed = false;
  /**
   * Run the end-of-request accounting now rather than when the response closes: for an HTTP/2
   * WebSocket, whose response stream stays open as the socket (the observer sets it).
   */
  observedNow: () => void = NOTHING;
  /** The SERVER span, when tracing is on. */
  span: TraceSpan | undefined;
  private clientSpan: TraceSpan | undefined = undefined;
  private attemptStart = 0;
  private readonly tracer: RequestTracer | undefined;
  private readonly metrics: UpstreamObserver;

  constructor(
    id: string,
    method: string,
    path: string,
    clientIp: string,
    metrics: UpstreamObserver,
    tracer: RequestTracer | undefined,
  ) {
    this.id = id;
    this.start = performance.now();
    this.method = method;
    this.path = path;
    this.clientIp = clientIp;
    this.metrics = metrics;
    this.tracer = tracer;
  }

  /** The request matched `route` of a service whose public prefix is `basePath`. */
  matched(route: Route, basePath: string): void {
    this.route = route;
    this.template = routeTemplate(route, basePath);
  }

  /**
   * An upstream attempt starts: adds the request id (and, with tracing, the CLIENT span's trace
   * context) to the headers about to be sent.
   */
  upstreamStart(upstream: Upstream, path: string, headers: Record<string, string | string[]>): void {
    this.attempts++;
    this.upstream = upstream.url;
    this.attemptStart = performance.now();
    headers[REQUEST_ID_HEADER] = this.id;
    if (this.span && this.tracer) {
      const q = path.indexOf('?');
      this.clientSpan = this.tracer.startClient(
        this.span,
        {
          start: this.attemptStart,
          method: this.method,
          name: this.route ? clientSpanName(this.method, upstream, this.route) : this.method,
          origin: upstream.origin,
          path: q === -1 ? path : path.slice(0, q),
          upstream: upstream.url,
          resendCount: this.attempts - 1,
        },
        headers,
      );
    }
  }

  /** The attempt ended: `statusCode` 0 and `errorCode` set when the upstream gave no response. */
  upstreamEnd(service: string, upstream: Upstream, statusCode: number, errorCode?: string): void {
    const end = performance.now();
    const ms = end - this.attemptStart;
    this.upstreamMs += ms;
    this.metrics.upstreamDone(service, upstream, ms / 1000, errorCode);
    if (this.clientSpan && this.tracer) {
      this.tracer.endClient(this.clientSpan, statusCode, errorCode, end);
      this.clientSpan = undefined;
    }
  }
}

function NOTHING(): void {}

/** Client span names per route and upstream (the same string every time: cheap to look up by). */
const clientNames = new WeakMap<Route, Map<Upstream, string>>();

/** `GET /v1/pets/{petId}`: the method and the upstream's path template. */
function clientSpanName(method: string, upstream: Upstream, route: Route): string {
  if (method !== route.method) return `${method} ${upstream.pathPrefix}${route.specPath}`;
  let byUpstream = clientNames.get(route);
  if (byUpstream === undefined) {
    byUpstream = new Map();
    clientNames.set(route, byUpstream);
  }
  let name = byUpstream.get(upstream);
  if (name === undefined) {
    name = `${method} ${upstream.pathPrefix}${route.specPath}`;
    byUpstream.set(upstream, name);
  }
  return name;
}

const templates = new WeakMap<Route, string>();

/**
 * The route's public path template in OpenAPI syntax (`/petstore/pets/{petId}`): `http.route`,
 * span names, the `route` metric label and the access log's `route`. Computed once per route.
 */
export function routeTemplate(route: Route, basePath: string): string {
  let t = templates.get(route);
  if (t === undefined) {
    t = publicTemplate(basePath, route.specPath);
    templates.set(route, t);
  }
  return t;
}
