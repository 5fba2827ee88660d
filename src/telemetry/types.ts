/**
 * The seam between the gateway's hot path and OpenTelemetry. Only types live here: the gateway
 * imports this file, never the SDK, so with `telemetry.otlp` unset no OpenTelemetry module loads
 * and nothing OTel-related runs per request (`RequestRecord.span` stays undefined).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestRecord } from './record.ts';

/** An open span, opaque to the gateway (tracing.ts knows what it holds). */
export type TraceSpan = object;

/** What the SERVER span starts with (known before the route is matched). */
export interface ServerSpanStart {
  /** performance.now() when the request arrived. */
  start: number;
  method: string;
  path: string;
  scheme: 'http' | 'https';
  clientIp: string;
  host: string | undefined;
  userAgent: string | undefined;
  httpVersion: string;
  requestId: string;
}

/** One upstream attempt (CLIENT span). */
export interface ClientSpanStart {
  /** performance.now() when the attempt started. */
  start: number;
  method: string;
  /** Span name, e.g. `GET /pets/{petId}` (the upstream path template) or `GET`. */
  name: string;
  /** The upstream's origin, e.g. `http://10.0.0.7:4001`. */
  origin: string;
  /** Path sent upstream, without its query (a query may carry credentials). */
  path: string;
  /** The upstream as configured (`x-portcullis.upstreams[].url`). */
  upstream: string;
  /** 0 for the first attempt, 1 for the first retry... (`http.request.resend_count`). */
  resendCount: number;
}

/** Per-request tracing, implemented by tracing.ts. */
export interface RequestTracer {
  /** Start the SERVER span; its parent is read from the request's trace headers (W3C, B3, Jaeger). */
  startServer(info: ServerSpanStart, headers: IncomingHttpHeaders): TraceSpan;
  /** Start a CLIENT span, child of `parent`, and write its trace context into `headers` (sent upstream). */
  startClient(
    parent: TraceSpan,
    info: ClientSpanStart,
    headers: Record<string, string | string[]>,
  ): TraceSpan;
  /**
   * End a CLIENT span at `end` (performance.now()): `statusCode` 0 when no response came,
   * `errorType` then says why.
   */
  endClient(span: TraceSpan, statusCode: number, errorType: string | undefined, end: number): void;
  /** End the SERVER span at `end`: name and attributes from the route, policy decisions as events. */
  endServer(span: TraceSpan, rec: RequestRecord, statusCode: number, end: number): void;
  /** The span's trace id (32 hex digits), for the access log. */
  traceId(span: TraceSpan): string;
}

/** A started tracing pipeline (SDK, exporter, propagators). */
export interface Tracing {
  readonly tracer: RequestTracer;
  /** Export every ended span now (tests; shutdown does it too). */
  forceFlush(): Promise<void>;
  /** Spans exported and dropped (queue full or export failed) so far. */
  readonly stats: { readonly exported: number; readonly dropped: number };
  /** Told about failed exports and dropped spans; the gateway sets it to a rate-limited warning. */
  onError: ((message: string) => void) | undefined;
  /** Sample new traces at this ratio from now on (gateway.yaml reload of telemetry.sampleRatio). */
  setSampleRatio?(ratio: number): void;
  /** Flush, stop exporting and unregister the global providers (a later start works again). */
  shutdown(): Promise<void>;
}
