/**
 * OpenTelemetry tracing: the NodeSDK with an OTLP/HTTP (JSON) exporter, a parent-based ratio
 * sampler and the configured propagators. Imported dynamically and only when `telemetry.otlp`
 * is set, so with tracing off none of the SDK loads.
 *
 * The spans are made here rather than by the http/undici auto-instrumentations: the gateway
 * knows the route template, the service, the operation, the policy decisions and each upstream
 * attempt, and making two spans directly costs less than the instrumentations' patching of every
 * request and response. Trace context travels explicitly (SERVER span → CLIENT span → upstream
 * headers), so no async context is needed on the hot path.
 */
import {
  type Attributes,
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  trace,
} from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';
import { JaegerPropagator } from '@opentelemetry/propagator-jaeger';
import { NodeSDK } from '@opentelemetry/sdk-node';
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import type { GatewayConfig, TelemetryPropagator } from '../config/schema.ts';
import type { Decision } from '../pipeline/types.ts';
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

/** A SERVER span and the context its children (the CLIENT spans) start from. */
interface ServerSpan {
  span: Span;
  ctx: Context;
}

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

/**
 * Start the OpenTelemetry SDK for `telemetry` (its `otlp` must be set) and return the gateway's
 * tracer. Registers the global tracer provider, propagator and context manager; `shutdown()`
 * unregisters them.
 */
export function startTracing(telemetry: GatewayConfig['telemetry'], version = '0.0.0'): Tracing {
  if (!telemetry.otlp) throw new Error('telemetry.otlp is not set');
  const propagator = createPropagator(telemetry.propagators);
  const processor = new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(telemetry.otlp) }), {
    scheduledDelayMillis: EXPORT_DELAY_MS,
  });
  const sdk = new NodeSDK({
    serviceName: telemetry.serviceName,
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(telemetry.sampleRatio) }),
    spanProcessors: [processor],
    textMapPropagator: propagator,
    // Traces only: no OTel metrics (Prometheus serves those) and no OTel logs (pino does).
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();
  const tracer = trace.getTracer(SCOPE, version);

  const requestTracer: RequestTracer = {
    startServer(info, headers) {
      const parent = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
      // One object built in place: spreads of optional parts cost a copy per request.
      const attributes: Attributes = {
        'http.request.method': info.method,
        'url.path': info.path,
        'url.scheme': info.scheme,
        'client.address': info.clientIp,
        'network.protocol.version': info.httpVersion,
        'portcullis.request_id': info.requestId,
      };
      if (info.host) {
        const host = hostOf(info.host);
        if (host) {
          attributes['server.address'] = host.address;
          if (host.port !== undefined) attributes['server.port'] = host.port;
        }
      }
      if (info.userAgent) attributes['user_agent.original'] = info.userAgent;
      const span = tracer.startSpan(info.method, { kind: SpanKind.SERVER, attributes }, parent);
      const server: ServerSpan = { span, ctx: trace.setSpan(parent, span) };
      return server;
    },
    startClient(parent, info, headers) {
      const { ctx } = parent as ServerSpan;
      const origin = originOf(info.origin);
      const attributes: Attributes = {
        'http.request.method': info.method,
        'server.address': origin.address,
        'server.port': origin.port,
        'url.full': info.origin + info.path,
        'portcullis.upstream': info.upstream,
      };
      if (info.resendCount > 0) attributes['http.request.resend_count'] = info.resendCount;
      const span = tracer.startSpan(info.name, { kind: SpanKind.CLIENT, attributes }, ctx);
      propagator.inject(trace.setSpan(ctx, span), headers, defaultTextMapSetter);
      return span;
    },
    endClient(s, statusCode, errorType) {
      const span = s as Span;
      if (statusCode > 0) span.setAttribute('http.response.status_code', statusCode);
      if (errorType !== undefined || statusCode >= 400) {
        span.setAttribute('error.type', errorType ?? String(statusCode));
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    },
    endServer(s, rec, statusCode) {
      const { span } = s as ServerSpan;
      if (rec.template) {
        span.updateName(`${rec.method} ${rec.template}`);
        span.setAttribute('http.route', rec.template);
      }
      span.setAttribute('http.response.status_code', statusCode);
      const route = rec.route;
      const service = route?.service ?? rec.passThrough;
      if (service) span.setAttribute('portcullis.service', service);
      if (route) span.setAttribute('portcullis.operation_id', route.operationId);
      if (rec.upstream) span.setAttribute('portcullis.upstream', rec.upstream);
      if (rec.attempts > 1) span.setAttribute('portcullis.retries', rec.attempts - 1);
      const decisions = rec.ctx?.decisions ?? [];
      for (const d of decisions) span.addEvent(`policy.${d.policy}`, decisionAttributes(d));
      const problem = rec.problem;
      if (problem) {
        span.setAttribute('portcullis.problem.code', problem.code);
        const policy = REJECTING_POLICY[problem.code];
        if (policy && !decisions.some((d) => d.policy === policy && d.outcome === 'deny')) {
          const reason = problem.extensions.reason;
          span.addEvent(`policy.${policy}`, {
            'policy.outcome': 'deny',
            'policy.reason': typeof reason === 'string' ? reason : problem.code,
          });
        }
      }
      if (statusCode >= 500) {
        span.setAttribute('error.type', problem?.code ?? String(statusCode));
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    },
    traceId(s) {
      return (s as ServerSpan).span.spanContext().traceId;
    },
  };

  return {
    tracer: requestTracer,
    forceFlush: () => processor.forceFlush(),
    async shutdown() {
      await sdk.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}

/** A decision as span-event attributes: outcome, reason and each scalar detail (`policy.<key>`). */
function decisionAttributes(d: Decision): Record<string, string | number | boolean> {
  const attrs: Record<string, string | number | boolean> = { 'policy.outcome': d.outcome };
  if (d.reason) attrs['policy.reason'] = d.reason;
  if (d.detail) {
    for (const key in d.detail) {
      const v = d.detail[key];
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')
        attrs[`policy.${key}`] = v;
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
