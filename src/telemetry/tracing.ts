/**
 * OpenTelemetry tracing: the NodeSDK (resource, parent-based ratio sampler, propagators, context
 * manager and an OTLP/HTTP exporter for any span made through the OTel API), plus the gateway's
 * own per-request spans. Imported dynamically and only when `telemetry.otlp` is set, so with
 * tracing off none of OpenTelemetry loads.
 *
 * The per-request spans (a SERVER span and one CLIENT span per upstream attempt) are not SDK Span
 * objects: the gateway knows their whole shape, so they are recorded as a few fields and encoded
 * to OTLP/JSON once, when they end (otlp-json.ts), then batched and sent by OpenTelemetry's OTLP
 * HTTP delegate (span-queue.ts). Measured with `npm run bench` (portcullis+telemetry), the SDK
 * path — Span objects, the OTLP transformer and JSON.stringify of every batch — cost about as
 * much CPU again as proxying the request. Everything else is the SDK's: the sampler decides
 * (parent-based), the id generator makes the ids, the configured propagators extract the
 * caller's context and inject ours, and the resource is detected as NodeSDK would.
 *
 * Trace context travels explicitly (SERVER span → CLIENT span → upstream headers), so no async
 * context is needed on the hot path.
 */
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
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
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
  RandomIdGenerator,
  SamplingDecision,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { GatewayConfig, TelemetryPropagator } from '../config/schema.ts';
import type { Decision } from '../pipeline/types.ts';
import { anyAttribute, encodeSpan, event, int, KIND_CLIENT, KIND_SERVER, str } from './otlp-json.ts';
import { SpanQueue } from './span-queue.ts';
import type { RequestTracer, Tracing } from './types.ts';

/** Instrumentation scope of every span. */
const SCOPE = 'portcullis';
/** Spans are exported at least this often (Jaeger shows a request within about a second). */
const EXPORT_DELAY_MS = 1000;
/**
 * Which policy a rejection code comes from, for policies that reject by throwing without
 * recording a decision (auth): the span still gets that policy's `deny` event.
 */
const REJECTING_POLICY: Record<string, string> = {
  PC_UNAUTHORIZED: 'auth',
  PC_FORBIDDEN: 'auth',
  PC_IP_DENIED: 'ipFilter',
  PC_WAF_BLOCKED: 'waf',
  PC_RATE_LIMITED: 'rateLimit',
  PC_VALIDATION_FAILED: 'validate',
};
/** Passed to the sampler: the ratio and parent-based samplers do not read attributes. */
const NO_ATTRIBUTES = Object.freeze({});

/** A SERVER span in progress. Unsampled ones carry only what propagation needs. */
interface ServerSpan {
  traceId: string;
  spanId: string;
  /** The caller's span id, '' when the trace starts here. */
  parentSpanId: string;
  traceState: TraceState | undefined;
  /** 1 sampled (recorded and exported), 0 not. */
  traceFlags: number;
  /** The extracted context (the caller's span and baggage): CLIENT spans inject from it. */
  parent: Context;
  method: string;
  start: number;
  /** Encoded attributes known at the start (otlp-json.ts `str`/`int`). */
  attributes: string;
}

/** A recorded CLIENT span in progress. */
interface ClientSpan {
  server: ServerSpan;
  spanId: string;
  name: string;
  start: number;
  attributes: string;
}

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
  const propagator = createPropagator(telemetry.propagators);
  const sampler = new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(telemetry.sampleRatio) });
  const ids = new RandomIdGenerator();
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector, hostDetector, osDetector, processDetector] }))
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: telemetry.serviceName,
        ...(options.version ? { [ATTR_SERVICE_VERSION]: options.version } : {}),
      }),
    );
  void resource.waitForAsyncAttributes?.();
  const queue = new SpanQueue({
    url,
    resource,
    scope: { name: SCOPE, version: options.version ?? '' },
    delayMs: EXPORT_DELAY_MS,
    onError: (message) => tracing.onError?.(message),
  });
  // Spans made through the OTel API by anything else in the process go the standard way.
  const processor = new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
    scheduledDelayMillis: EXPORT_DELAY_MS,
  });
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    sampler,
    spanProcessors: [processor],
    textMapPropagator: propagator,
    // Traces only: no OTel metrics (Prometheus serves those) and no OTel logs (pino does).
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();

  const requestTracer: RequestTracer = {
    startServer(info, headers) {
      const parent = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
      const caller = trace.getSpanContext(parent);
      const continued = caller !== undefined && isSpanContextValid(caller);
      const traceId = continued ? caller.traceId : ids.generateTraceId();
      const sampling = sampler.shouldSample(parent, traceId, info.method, SpanKind.SERVER, NO_ATTRIBUTES, []);
      const sampled = sampling.decision === SamplingDecision.RECORD_AND_SAMPLED;
      const span: ServerSpan = {
        traceId,
        spanId: ids.generateSpanId(),
        parentSpanId: continued ? caller.spanId : '',
        traceState: sampling.traceState ?? caller?.traceState,
        traceFlags: sampled ? 1 : 0,
        parent,
        method: info.method,
        start: performance.now(),
        attributes: '',
      };
      if (!sampled) return span;
      let attributes =
        str('http.request.method', info.method) +
        str('url.path', info.path) +
        str('url.scheme', info.scheme) +
        str('client.address', info.clientIp) +
        str('network.protocol.version', info.httpVersion) +
        str('portcullis.request_id', info.requestId);
      if (info.host) {
        const host = hostOf(info.host);
        if (host) {
          attributes += str('server.address', host.address);
          if (host.port !== undefined) attributes += int('server.port', host.port);
        }
      }
      if (info.userAgent) attributes += str('user_agent.original', info.userAgent);
      span.attributes = attributes;
      return span;
    },
    startClient(parent, info, headers) {
      const server = parent as ServerSpan;
      const spanId = ids.generateSpanId();
      const sc: SpanContext = {
        traceId: server.traceId,
        spanId,
        traceFlags: server.traceFlags,
        traceState: server.traceState,
        isRemote: false,
      };
      propagator.inject(trace.setSpanContext(server.parent, sc), headers, defaultTextMapSetter);
      if (server.traceFlags === 0) return UNRECORDED;
      const origin = originOf(info.origin);
      let attributes =
        str('http.request.method', info.method) +
        str('server.address', origin.address) +
        int('server.port', origin.port) +
        str('url.full', info.origin + info.path) +
        str('portcullis.upstream', info.upstream);
      if (info.resendCount > 0) attributes += int('http.request.resend_count', info.resendCount);
      const span: ClientSpan = { server, spanId, name: info.name, start: performance.now(), attributes };
      return span;
    },
    endClient(s, statusCode, errorType) {
      if (s === UNRECORDED) return;
      const span = s as ClientSpan;
      let attributes = span.attributes;
      if (statusCode > 0) attributes += int('http.response.status_code', statusCode);
      const error = errorType !== undefined || statusCode >= 400;
      if (error) attributes += str('error.type', errorType ?? String(statusCode));
      const { server } = span;
      queue.add(
        encodeSpan({
          traceId: server.traceId,
          spanId: span.spanId,
          parentSpanId: server.spanId,
          traceState: server.traceState?.serialize() ?? '',
          name: span.name,
          kind: KIND_CLIENT,
          start: span.start,
          end: performance.now(),
          attributes,
          events: '',
          error,
          traceFlags: server.traceFlags,
          remoteParent: false,
        }),
      );
    },
    endServer(s, rec, statusCode) {
      const span = s as ServerSpan;
      if (span.traceFlags === 0) return;
      const end = performance.now();
      let attributes = span.attributes;
      if (rec.template) attributes += str('http.route', rec.template);
      attributes += int('http.response.status_code', statusCode);
      const route = rec.route;
      const service = route?.service ?? rec.passThrough;
      if (service) attributes += str('portcullis.service', service);
      if (route) attributes += str('portcullis.operation_id', route.operationId);
      if (rec.upstream) attributes += str('portcullis.upstream', rec.upstream);
      if (rec.attempts > 1) attributes += int('portcullis.retries', rec.attempts - 1);
      let events = '';
      const decisions = rec.ctx?.decisions ?? [];
      for (const d of decisions) events += event(`policy.${d.policy}`, end, decisionAttributes(d));
      const problem = rec.problem;
      if (problem) {
        attributes += str('portcullis.problem.code', problem.code);
        const policy = REJECTING_POLICY[problem.code];
        if (policy && !decisions.some((d) => d.policy === policy && d.outcome === 'deny')) {
          const reason = problem.extensions.reason;
          events += event(
            `policy.${policy}`,
            end,
            str('policy.outcome', 'deny') +
              str('policy.reason', typeof reason === 'string' ? reason : problem.code),
          );
        }
      }
      const error = statusCode >= 500;
      if (error) attributes += str('error.type', problem?.code ?? String(statusCode));
      queue.add(
        encodeSpan({
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId,
          traceState: span.traceState?.serialize() ?? '',
          name: rec.template ? `${span.method} ${rec.template}` : span.method,
          kind: KIND_SERVER,
          start: span.start,
          end,
          attributes,
          events,
          error,
          traceFlags: span.traceFlags,
          remoteParent: span.parentSpanId !== '',
        }),
      );
    },
    traceId(s) {
      return (s as ServerSpan).traceId;
    },
  };

  const tracing: Tracing = {
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

/** A decision as encoded span-event attributes: outcome, reason and each scalar detail (`policy.<key>`). */
function decisionAttributes(d: Decision): string {
  let attrs = str('policy.outcome', d.outcome);
  if (d.reason) attrs += str('policy.reason', d.reason);
  if (d.detail) {
    for (const key in d.detail) {
      const v = d.detail[key];
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
        attrs += anyAttribute(`policy.${key}`, v);
    }
  }
  return attrs;
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
