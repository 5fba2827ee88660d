/**
 * OTLP/JSON encoding of the gateway's own spans, written straight to text.
 *
 * The SDK's path (a Span object per span, then the OTLP transformer's object tree, then
 * JSON.stringify of the whole batch) cost about 20 µs per proxied request here, half the cost of
 * the proxying itself (bench: portcullis+telemetry). The gateway's spans have a fixed shape, so
 * each one is encoded once, when it ends, by concatenating pre-encoded keys and escaped values;
 * only client-controlled strings go through JSON.stringify. The output follows the OTLP/JSON
 * mapping of opentelemetry-proto (hex trace and span ids, enums as numbers, 64-bit nanosecond
 * times as decimal strings) and is checked against the SDK's own JSON serializer in
 * otlp-json.test.ts.
 */
import type { Attributes } from '@opentelemetry/api';

/** OTLP SpanKind values. */
export const KIND_SERVER = 2;
export const KIND_CLIENT = 3;
/** OTLP Status.code for ERROR. */
export const STATUS_ERROR = 2;
/** OTLP span flags: bit 8 says whether the parent is known to be remote (bit 9). */
const FLAG_HAS_IS_REMOTE = 0x100;
const FLAG_IS_REMOTE = 0x200;

// performance.now() is relative to timeOrigin (ms since the epoch, fractional). Splitting the
// origin keeps sub-microsecond precision when the two are added.
const ORIGIN_WHOLE_MS = Math.floor(performance.timeOrigin);
const ORIGIN_FRACTION_MS = performance.timeOrigin - ORIGIN_WHOLE_MS;

/** A `performance.now()` reading as OTLP's `...UnixNano` value (a decimal string, as the SDK writes it). */
export function unixNanos(now: number): string {
  const t = now + ORIGIN_FRACTION_MS;
  let whole = Math.floor(t);
  let ns = Math.round((t - whole) * 1e6);
  if (ns >= 1e6) {
    whole++;
    ns -= 1e6;
  }
  const sub = ns < 100_000 ? String(ns).padStart(6, '0') : String(ns);
  return `${ORIGIN_WHOLE_MS + whole}${sub}`;
}

/**
 * Attribute encoders: each returns one `KeyValue`, prefixed with a comma unless `first`. Keys
 * given as literals are the gateway's own and need no escaping; `anyKey` escapes.
 */
export function str(key: string, value: string): string {
  return `,{"key":"${key}","value":{"stringValue":${JSON.stringify(value)}}}`;
}
export function int(key: string, value: number): string {
  return `,{"key":"${key}","value":{"intValue":${value}}}`;
}

/** A scalar as an OTLP `AnyValue`: ints as intValue, other numbers as doubleValue. */
function anyValue(value: string | number | boolean): string {
  if (typeof value === 'string') return `{"stringValue":${JSON.stringify(value)}}`;
  if (typeof value === 'boolean') return `{"boolValue":${value}}`;
  if (Number.isInteger(value)) return `{"intValue":${value}}`;
  // JSON has no NaN or Infinity; OTLP/JSON spells them as strings.
  if (Number.isFinite(value)) return `{"doubleValue":${value}}`;
  return `{"doubleValue":"${Number.isNaN(value) ? 'NaN' : value > 0 ? 'Infinity' : '-Infinity'}"}`;
}

/** Any scalar attribute under any key (decision details), the key escaped. */
export function anyAttribute(key: string, value: string | number | boolean): string {
  return `,{"key":${JSON.stringify(key)},"value":${anyValue(value)}}`;
}

/** Resource attributes (the SDK's `Attributes`: scalars and arrays of scalars) as a JSON array. */
export function attributesArray(attributes: Attributes): string {
  let out = '';
  for (const key in attributes) {
    const v = attributes[key];
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out += anyAttribute(key, v);
    else if (Array.isArray(v)) {
      const values: string[] = [];
      for (const x of v) if (x !== null && x !== undefined) values.push(anyValue(x));
      out += `,{"key":${JSON.stringify(key)},"value":{"arrayValue":{"values":[${values.join(',')}]}}}`;
    }
  }
  return `[${out.slice(1)}]`;
}

/** One span event: a name, a time and attributes (already encoded by the encoders above). */
export function event(name: string, now: number, attributes: string): string {
  return `,{"timeUnixNano":"${unixNanos(now)}","name":${JSON.stringify(name)},"attributes":[${attributes.slice(1)}]}`;
}

/** What one span is made of, the attributes and events already encoded. */
export interface SpanFields {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  /** W3C tracestate, '' when none. */
  traceState: string;
  name: string;
  kind: number;
  /** `performance.now()` at start and end. */
  start: number;
  end: number;
  /** Comma-led KeyValue list (from `str`, `int`, `anyAttribute`). */
  attributes: string;
  /** Comma-led event list (from `event`); '' when none. */
  events: string;
  /** True when the span failed (Status ERROR). */
  error: boolean;
  /** W3C trace flags (1 = sampled). */
  traceFlags: number;
  /** Whether the parent came from another process (a SERVER span continuing a caller's trace). */
  remoteParent: boolean;
}

/** One span as an OTLP/JSON `Span` object. */
export function encodeSpan(s: SpanFields): string {
  const parent = s.parentSpanId ? `,"parentSpanId":"${s.parentSpanId}"` : '';
  const state = s.traceState ? `,"traceState":${JSON.stringify(s.traceState)}` : '';
  const events = s.events ? `,"events":[${s.events.slice(1)}]` : '';
  const status = s.error ? `{"code":${STATUS_ERROR}}` : '{}';
  const flags = s.traceFlags | FLAG_HAS_IS_REMOTE | (s.remoteParent ? FLAG_IS_REMOTE : 0);
  return (
    `{"traceId":"${s.traceId}","spanId":"${s.spanId}"${parent}${state},"name":${JSON.stringify(s.name)}` +
    `,"kind":${s.kind},"startTimeUnixNano":"${unixNanos(s.start)}","endTimeUnixNano":"${unixNanos(s.end)}"` +
    `,"attributes":[${s.attributes.slice(1)}]${events},"status":${status},"flags":${flags}}`
  );
}

/** The start of an export request, up to the first span: one resource, one scope. */
export function envelopeHead(resource: Attributes, scope: { name: string; version: string }): string {
  return (
    `{"resourceSpans":[{"resource":{"attributes":${attributesArray(resource)}},"scopeSpans":[` +
    `{"scope":{"name":${JSON.stringify(scope.name)},"version":${JSON.stringify(scope.version)}},"spans":[`
  );
}

/** The end of an export request, after the last span. */
export const ENVELOPE_TAIL = ']}]}]}';
