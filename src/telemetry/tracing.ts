/**
 * OpenTelemetry tracing: the NodeSDK (resource, parent-based ratio sampler, propagators, context
 * manager and an OTLP/HTTP exporter for any span made through the OTel API), plus the gateway's
 * own per-request spans. Imported dynamically and only when `telemetry.otlp` is set, so with
 * tracing off none of OpenTelemetry loads.
 *
 * The per-request spans (a SERVER span and one CLIENT span per upstream attempt) are not SDK Span
 * objects: the gateway knows their whole shape, so a span is a few fields until it ends, and is
 * then encoded to OTLP/protobuf straight into the body of its batch's export request
 * (otlp-proto.ts, span-queue.ts). Measured with `npm run bench` (portcullis+telemetry), the SDK
 * path — Span objects, the OTLP transformer, serialising each batch — cost about as much CPU again
 * as proxying the request. The rest is OpenTelemetry's: the sampler decides (parent-based), the
 * configured propagators extract the caller's context and inject ours, the resource is detected
 * as NodeSDK would, and OTel's OTLP HTTP delegate sends. Ids come from the CSPRNG (ids.ts).
 *
 * Two shortcuts keep the common case cheap, both exact: a request carrying none of the headers
 * the configured propagators read has no caller context, so extraction is skipped; and with only
 * W3C propagators and no caller context, the upstream's `traceparent` is written directly.
 *
 * Trace context travels explicitly (SERVER span → CLIENT span → upstream headers), so no async
 * context is needed on the hot path.
 */
import type { IncomingHttpHeaders } from 'node:http';
import {
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type SpanContext,
  SpanKind,
  type TextMapPropagator,
  type TraceState,
  trace,
} from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';
import { JaegerPropagator } from '@opentelemetry/propagator-jaeger';
import {
  defaultResource,
  detectResources,
  envDetector,
  hostDetector,
  osDetector,
  processDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  SamplingDecision,
  type SamplingResult,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { WORKER_SLOT } from '../cluster/identity.ts';
import type { GatewayConfig, TelemetryPropagator } from '../config/schema.ts';
import type { Decision } from '../pipeline/types.ts';
import type { Route } from '../registry/types.ts';
import { PooledIdGenerator } from './ids.ts';
import {
  anyAttr,
  beginEvent,
  beginSpan,
  EVENT_ATTRIBUTES,
  endEvent,
  endSpan,
  FieldBlocks,
  KIND_CLIENT,
  KIND_SERVER,
  key,
  type ProtoWriter,
  RepeatedAttr,
  SPAN_ATTRIBUTES,
  spanName,
  str2Attr,
  strAttr,
} from './otlp-proto.ts';
import { SpanQueue } from './span-queue.ts';
import type { ClientSpanStart, RequestTracer, ServerSpanStart, Tracing } from './types.ts';

/** Resource attribute naming the worker (1..N) with `workers: N`; absent in a single process. */
const WORKER_ATTRIBUTE = 'portcullis.worker';
/** Instrumentation scope of every span. */
const SCOPE = 'portcullis';
/** Spans are exported at least this often (Jaeger shows a request within about a second). */
const EXPORT_DELAY_MS = 1000;
/** Passed to the sampler: the ratio and parent-based samplers do not read attributes. */
const NO_ATTRIBUTES = Object.freeze({});
/**
 * The headers each propagator extracts a caller's context from (tracestate alone is ignored; B3
 * reads its single header or the multi-header trace id). Null: it reads more than a fixed list
 * (Jaeger's `uberctx-*` baggage), so extraction always runs.
 */
const EXTRACTED_FROM: Record<TelemetryPropagator, readonly string[] | null> = {
  tracecontext: ['traceparent'],
  baggage: ['baggage'],
  b3: ['b3', 'x-b3-traceid'],
  b3multi: ['b3', 'x-b3-traceid'],
  jaeger: null,
};

/** Attributes whose values repeat from request to request: each value is encoded once. */
const A = {
  method: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'http.request.method'),
  scheme: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'url.scheme'),
  clientAddress: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'client.address'),
  protocolVersion: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'network.protocol.version'),
  serverAddress: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'server.address'),
  serverPort: new RepeatedAttr<number>(SPAN_ATTRIBUTES, 'server.port'),
  userAgent: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'user_agent.original'),
  route: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'http.route'),
  status: new RepeatedAttr<number>(SPAN_ATTRIBUTES, 'http.response.status_code'),
  service: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'portcullis.service'),
  operationId: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'portcullis.operation_id'),
  upstream: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'portcullis.upstream'),
  retries: new RepeatedAttr<number>(SPAN_ATTRIBUTES, 'portcullis.retries'),
  problemCode: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'portcullis.problem.code'),
  errorType: new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'error.type'),
  resendCount: new RepeatedAttr<number>(SPAN_ATTRIBUTES, 'http.request.resend_count'),
  outcome: new RepeatedAttr<string>(EVENT_ATTRIBUTES, 'policy.outcome'),
  reason: new RepeatedAttr<string>(EVENT_ATTRIBUTES, 'policy.reason'),
};
/** Attributes whose values rarely repeat (paths, request ids): encoded each time. */
const K = {
  path: key('url.path'),
  requestId: key('portcullis.request_id'),
  urlFull: key('url.full'),
};

/**
 * A SERVER span. Unsampled ones only serve propagation. When it ends, what its encoding needs
 * from the request record is copied in (the record, its request and socket are not kept).
 */
interface ServerSpan {
  kind: typeof KIND_SERVER;
  traceId: string;
  spanId: string;
  /** The caller's span id, '' when the trace starts here. */
  parentSpanId: string;
  traceState: TraceState | undefined;
  /** 1 sampled (recorded and exported), 0 not. */
  traceFlags: number;
  /** The extracted context (the caller's span and baggage); ROOT_CONTEXT when there was none. */
  parent: Context;
  start: number;
  info: ServerSpanStart;
  end: number;
  status: number;
  template: string | undefined;
  route: Route | undefined;
  passThrough: string | undefined;
  attempts: number;
  problemCode: string | undefined;
  decisions: readonly Decision[];
}

/** A recorded CLIENT span; `end`, `status` and `errorType` are set when it ends. */
interface ClientSpan {
  kind: typeof KIND_CLIENT;
  server: ServerSpan;
  spanId: string;
  start: number;
  info: ClientSpanStart;
  end: number;
  status: number;
  errorType: string | undefined;
}

const NO_DECISIONS: readonly Decision[] = [];

/** Returned for CLIENT spans of unsampled traces: ending it does nothing. */
const UNRECORDED: object = Object.freeze({});

/** Build the propagator for `telemetry.propagators` (order = extraction priority). */
export function createPropagator(names: readonly TelemetryPropagator[]): TextMapPropagator {
  const make: Record<TelemetryPropagator, () => TextMapPropagator> = {
    tracecontext: () => new W3CTraceContextPropagator(),
    baggage: () => new W3CBaggagePropagator(),
    b3: () => new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER }),
    b3multi: () => new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER }),
    jaeger: () => new JaegerPropagator(),
  };
  return new CompositePropagator({ propagators: names.map((n) => make[n]()) });
}

/** The OTLP/HTTP traces URL for `telemetry.otlp`: a base endpoint gets `/v1/traces` appended. */
export function tracesUrl(otlp: string): string {
  return otlp.endsWith('/v1/traces') ? otlp : `${otlp.replace(/\/+$/, '')}/v1/traces`;
}

export interface TracingOptions {
  /** The gateway's version: `service.version` and the instrumentation scope's version. */
  version?: string;
}

/**
 * Start the OpenTelemetry SDK for `telemetry` (its `otlp` must be set) and return the gateway's
 * tracer. Registers the global tracer provider, propagator and context manager; `shutdown()`
 * unregisters them.
 */
export function startTracing(telemetry: GatewayConfig['telemetry'], options: TracingOptions = {}): Tracing {
  if (!telemetry.otlp) throw new Error('telemetry.otlp is not set');
  const url = tracesUrl(telemetry.otlp);
  const names = telemetry.propagators;
  const propagator = createPropagator(names);
  // Replaced by setSampleRatio (a gateway.yaml reload); the parent-based sampler delegates to it.
  let rootSampler = new TraceIdRatioBasedSampler(telemetry.sampleRatio);
  let fixedRootDecision = fixedDecision(telemetry.sampleRatio);
  const sampler = new ParentBasedSampler({
    root: {
      shouldSample: (...args: Parameters<TraceIdRatioBasedSampler['shouldSample']>) =>
        rootSampler.shouldSample(...args),
      toString: () => rootSampler.toString(),
    },
  });
  const ids = new PooledIdGenerator();
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector, hostDetector, osDetector, processDetector] }))
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: telemetry.serviceName,
        ...(options.version ? { [ATTR_SERVICE_VERSION]: options.version } : {}),
        ...(WORKER_SLOT === undefined ? {} : { [WORKER_ATTRIBUTE]: WORKER_SLOT }),
      }),
    );
  void resource.waitForAsyncAttributes?.();
  /** A CLIENT span, as the queue encodes it when it ends. */
  const encodeClient = (w: ProtoWriter, span: ClientSpan): void => {
    const { server, spanId, start, info, end, status: statusCode, errorType } = span;
    const mark = beginSpan(w, {
      traceId: server.traceId,
      spanId,
      parentSpanId: server.spanId,
      traceState: server.traceState?.serialize() ?? '',
      name: undefined,
      kind: KIND_CLIENT,
      start,
      end,
    });
    // Name, method, server address and port and upstream: fixed per upstream and route.
    const block = clientBlocks.get(info.upstream, info.name);
    if (block !== undefined) w.raw(block);
    else {
      const from = w.pos;
      const origin = originOf(info.origin);
      spanName(w, info.name);
      A.method.write(w, info.method);
      A.serverAddress.write(w, origin.address);
      A.serverPort.write(w, origin.port);
      A.upstream.write(w, info.upstream);
      clientBlocks.keep(info.upstream, info.name, w, from);
    }
    str2Attr(w, SPAN_ATTRIBUTES, K.urlFull, info.origin, info.path);
    if (info.resendCount > 0) A.resendCount.write(w, info.resendCount);
    if (statusCode > 0) A.status.write(w, statusCode);
    const error = errorType !== undefined || statusCode >= 400;
    if (error) A.errorType.write(w, errorType ?? String(statusCode));
    endSpan(w, mark, error, server.traceFlags, false);
  };
  /** A SERVER span, as the queue encodes it when it ends. */
  const encodeServer = (w: ProtoWriter, span: ServerSpan): void => {
    const { info, end, status: statusCode } = span;
    const mark = beginSpan(w, {
      traceId: span.traceId,
      spanId: span.spanId,
      parentSpanId: span.parentSpanId,
      traceState: span.traceState?.serialize() ?? '',
      name: span.template ? undefined : info.method,
      kind: KIND_SERVER,
      start: span.start,
      end,
    });
    const route = span.route;
    if (span.template && route) {
      // Name, http.route, service and operation: fixed per route (of this config) and method.
      const block = serverBlocks.get(route, info.method);
      if (block !== undefined) w.raw(block);
      else {
        const from = w.pos;
        spanName(w, `${info.method} ${span.template}`);
        A.route.write(w, span.template);
        A.service.write(w, route.service);
        A.operationId.write(w, route.operationId);
        serverBlocks.keep(route, info.method, w, from);
      }
    } else {
      if (span.template) {
        spanName(w, `${info.method} ${span.template}`);
        A.route.write(w, span.template);
      }
      if (span.passThrough) A.service.write(w, span.passThrough);
    }
    A.method.write(w, info.method);
    strAttr(w, SPAN_ATTRIBUTES, K.path, info.path);
    A.scheme.write(w, info.scheme);
    A.clientAddress.write(w, info.clientIp);
    A.protocolVersion.write(w, info.httpVersion);
    strAttr(w, SPAN_ATTRIBUTES, K.requestId, info.requestId);
    if (info.host) {
      const host = hostOf(info.host);
      if (host) {
        A.serverAddress.write(w, host.address);
        if (host.port !== undefined) A.serverPort.write(w, host.port);
      }
    }
    if (info.userAgent) A.userAgent.write(w, info.userAgent);
    A.status.write(w, statusCode);
    if (span.attempts > 1) A.retries.write(w, span.attempts - 1);
    const problemCode = span.problemCode;
    if (problemCode) A.problemCode.write(w, problemCode);
    const error = statusCode >= 500;
    if (error) A.errorType.write(w, problemCode ?? String(statusCode));
    // The chain records a decision for every hook that rejected (runChain): no code → policy map.
    for (const d of span.decisions) decisionEvent(w, d, end);
    endSpan(w, mark, error, span.traceFlags, span.parentSpanId !== '');
  };

  const serverBlocks = new FieldBlocks<Route>();
  const clientBlocks = new FieldBlocks<string>();
  const queue = new SpanQueue<ServerSpan | ClientSpan>(
    {
      url,
      resource,
      scope: { name: SCOPE, version: options.version ?? '' },
      delayMs: EXPORT_DELAY_MS,
      onError: (message) => tracing.onError?.(message),
    },
    (w, span) => (span.kind === KIND_CLIENT ? encodeClient(w, span) : encodeServer(w, span)),
  );
  // Spans made through the OTel API by anything else in the process go the standard way.
  const processor = new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
    scheduledDelayMillis: EXPORT_DELAY_MS,
  });
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    sampler,
    idGenerator: ids,
    spanProcessors: [processor],
    textMapPropagator: propagator,
    // Traces only: no OTel metrics (Prometheus serves those) and no OTel logs (pino does).
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();

  // The shortcuts (see the top of this file): which headers betray a caller's context, and
  // whether `traceparent` alone carries ours.
  const extractedFrom = names.every((n) => EXTRACTED_FROM[n] !== null)
    ? [...new Set(names.flatMap((n) => EXTRACTED_FROM[n] ?? []))]
    : null;
  const w3cOnly =
    names.includes('tracecontext') && names.every((n) => n === 'tracecontext' || n === 'baggage');
  const hasCallerContext = (headers: IncomingHttpHeaders): boolean => {
    if (extractedFrom === null) return true;
    for (const h of extractedFrom) if (headers[h] !== undefined) return true;
    return false;
  };

  const requestTracer: RequestTracer = {
    startServer(info, headers) {
      let parent = ROOT_CONTEXT;
      let caller: SpanContext | undefined;
      if (hasCallerContext(headers)) {
        parent = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
        caller = trace.getSpanContext(parent);
        if (caller !== undefined && !isSpanContextValid(caller)) caller = undefined;
      }
      const traceId = caller ? caller.traceId : ids.generateTraceId();
      // A new trace at ratio 1 (or 0) is always (never) sampled: what the ratio sampler answers.
      const sampling =
        caller === undefined && fixedRootDecision !== undefined
          ? fixedRootDecision
          : (caller ? sampler : rootSampler).shouldSample(
              parent,
              traceId,
              info.method,
              SpanKind.SERVER,
              NO_ATTRIBUTES,
              [],
            );
      const span: ServerSpan = {
        kind: KIND_SERVER,
        traceId,
        spanId: ids.generateSpanId(),
        parentSpanId: caller ? caller.spanId : '',
        traceState: sampling.traceState ?? caller?.traceState,
        traceFlags: sampling.decision === SamplingDecision.RECORD_AND_SAMPLED ? 1 : 0,
        parent,
        start: info.start,
        info,
        end: 0,
        status: 0,
        template: undefined,
        route: undefined,
        passThrough: undefined,
        attempts: 0,
        problemCode: undefined,
        decisions: NO_DECISIONS,
      };
      return span;
    },
    startClient(parent, info, headers) {
      const server = parent as ServerSpan;
      const spanId = ids.generateSpanId();
      if (w3cOnly && server.parent === ROOT_CONTEXT && server.traceState === undefined) {
        headers.traceparent = `00-${server.traceId}-${spanId}-0${server.traceFlags}`;
      } else {
        const sc: SpanContext = {
          traceId: server.traceId,
          spanId,
          traceFlags: server.traceFlags,
          traceState: server.traceState,
          isRemote: false,
        };
        propagator.inject(trace.setSpanContext(server.parent, sc), headers, defaultTextMapSetter);
      }
      if (server.traceFlags === 0) return UNRECORDED;
      const span: ClientSpan = {
        kind: KIND_CLIENT,
        server,
        spanId,
        start: info.start,
        info,
        end: 0,
        status: 0,
        errorType: undefined,
      };
      return span;
    },
    endClient(s, statusCode, errorType, end) {
      if (s === UNRECORDED) return;
      const span = s as ClientSpan;
      span.end = end;
      span.status = statusCode;
      span.errorType = errorType;
      queue.add(span);
    },
    endServer(s, rec, statusCode, end) {
      const span = s as ServerSpan;
      if (span.traceFlags === 0) return;
      span.end = end;
      span.status = statusCode;
      span.template = rec.template;
      span.route = rec.route;
      span.passThrough = rec.passThrough;
      span.attempts = rec.attempts;
      span.problemCode = rec.problem?.code;
      span.decisions = rec.ctx?.decisions ?? NO_DECISIONS;
      queue.add(span);
    },
    traceId(s) {
      return (s as ServerSpan).traceId;
    },
  };

  const tracing: Tracing = {
    setSampleRatio(ratio) {
      rootSampler = new TraceIdRatioBasedSampler(ratio);
      fixedRootDecision = fixedDecision(ratio);
    },
    tracer: requestTracer,
    stats: queue.stats,
    onError: undefined,
    async forceFlush() {
      await queue.flush();
      await processor.forceFlush();
    },
    async shutdown() {
      await queue.shutdown();
      await sdk.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
  return tracing;
}

/** A decision as a span event `policy.<kind>`: outcome, reason and each scalar detail (`policy.<key>`). */
function decisionEvent(w: ProtoWriter, d: Decision, now: number): void {
  const e = beginEvent(w, `policy.${d.policy}`, now);
  A.outcome.write(w, d.outcome);
  if (d.reason) A.reason.write(w, d.reason);
  if (d.detail) {
    for (const name in d.detail) {
      const v = d.detail[name];
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
        anyAttr(w, EVENT_ATTRIBUTES, `policy.${name}`, v);
    }
  }
  endEvent(w, e);
}

/** At most this many Host values and upstream origins are remembered (Host is client-controlled). */
const PARSED_CACHE_SIZE = 256;

/** `server.address` / `server.port` of a Host header or origin. */
interface HostPort {
  address: string;
  port: number | undefined;
}

const hosts = new Map<string, HostPort | null>();
const origins = new Map<string, { address: string; port: number }>();

/** Set in a bounded map: full, it starts afresh (the hot values come straight back). */
function remember<V>(map: Map<string, V>, key: string, value: V): V {
  if (map.size >= PARSED_CACHE_SIZE) map.clear();
  map.set(key, value);
  return value;
}

/** `server.address` / `server.port` from a Host header (`[::1]:8080`, `example.com`); null: unusable. */
function hostOf(host: string): HostPort | null {
  const known = hosts.get(host);
  if (known !== undefined) return known;
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
  const parsed = m?.[1] ? { address: m[1], port: m[2] ? Number(m[2]) : undefined } : null;
  return remember(hosts, host, parsed);
}

/** `server.address` / `server.port` of an upstream origin (`http://10.0.0.7:4001`). */
function originOf(origin: string): { address: string; port: number } {
  const known = origins.get(origin);
  if (known) return known;
  const url = new URL(origin);
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  return remember(origins, origin, { address: url.hostname, port });
}

/** A new trace at ratio 1 (or 0) is always (never) sampled, without asking the ratio sampler. */
function fixedDecision(ratio: number): SamplingResult | undefined {
  if (ratio >= 1) return { decision: SamplingDecision.RECORD_AND_SAMPLED };
  if (ratio <= 0) return { decision: SamplingDecision.NOT_RECORD };
  return undefined;
}
