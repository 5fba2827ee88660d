/**
 * OTLP/protobuf encoding of the gateway's own spans, written straight into the export body.
 *
 * The SDK's path — a Span object per span, the OTLP transformer's object tree, then serialising
 * the whole batch — cost about as much CPU as proxying the request itself (bench:
 * portcullis+telemetry). The gateway's spans have a fixed shape, so each is encoded once, field
 * by field, straight into the request body of its batch (span-queue.ts): no intermediate objects
 * or strings, nothing for the garbage collector, and about half the bytes of OTLP/JSON.
 *
 * Wire format: opentelemetry-proto `ExportTraceServiceRequest` (trace/v1/trace.proto, common/v1,
 * resource/v1), protobuf encoding as in https://protobuf.dev/programming-guides/encoding/.
 * Checked against the SDK's own protobuf serializer in otlp-proto.test.ts.
 */
import type { Attributes } from '@opentelemetry/api';

/** OTLP SpanKind values. */
export const KIND_SERVER = 2;
export const KIND_CLIENT = 3;
/** OTLP Status.code ERROR. */
const STATUS_ERROR = 2;
/** OTLP span flags: bit 8 says whether the parent is known to be remote (bit 9). */
const FLAG_HAS_IS_REMOTE = 0x100;
const FLAG_IS_REMOTE = 0x200;

// Field tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
const T = {
  request_resourceSpans: 0x0a, // ExportTraceServiceRequest.resource_spans = 1
  resourceSpans_resource: 0x0a, // ResourceSpans.resource = 1
  resourceSpans_scopeSpans: 0x12, // ResourceSpans.scope_spans = 2
  resource_attributes: 0x0a, // Resource.attributes = 1
  scopeSpans_scope: 0x0a, // ScopeSpans.scope = 1
  scopeSpans_spans: 0x12, // ScopeSpans.spans = 2
  scope_name: 0x0a, // InstrumentationScope.name = 1
  scope_version: 0x12, // InstrumentationScope.version = 2
  span_traceId: 0x0a, // Span.trace_id = 1 (bytes)
  span_spanId: 0x12, // Span.span_id = 2 (bytes)
  span_traceState: 0x1a, // Span.trace_state = 3
  span_parentSpanId: 0x22, // Span.parent_span_id = 4 (bytes)
  span_name: 0x2a, // Span.name = 5
  span_kind: 0x30, // Span.kind = 6 (enum)
  span_start: 0x39, // Span.start_time_unix_nano = 7 (fixed64)
  span_end: 0x41, // Span.end_time_unix_nano = 8 (fixed64)
  span_attributes: 0x4a, // Span.attributes = 9
  span_events: 0x5a, // Span.events = 11
  span_status: 0x7a, // Span.status = 15
  span_flags: [0x85, 0x01], // Span.flags = 16 (fixed32): a two-byte tag
  event_time: 0x09, // Event.time_unix_nano = 1 (fixed64)
  event_name: 0x12, // Event.name = 2
  event_attributes: 0x1a, // Event.attributes = 3
  status_code: 0x18, // Status.code = 3 (enum)
  kv_key: 0x0a, // KeyValue.key = 1
  kv_value: 0x12, // KeyValue.value = 2
  any_string: 0x0a, // AnyValue.string_value = 1
  any_bool: 0x10, // AnyValue.bool_value = 2
  any_int: 0x18, // AnyValue.int_value = 3 (int64)
  any_double: 0x21, // AnyValue.double_value = 4 (double)
  any_array: 0x2a, // AnyValue.array_value = 5
  array_values: 0x0a, // ArrayValue.values = 1
} as const;

// performance.now() is relative to timeOrigin (ms since the epoch, fractional). Splitting the
// origin keeps sub-microsecond precision when the two are added.
const ORIGIN_WHOLE_MS = Math.floor(performance.timeOrigin);
const ORIGIN_FRACTION_MS = performance.timeOrigin - ORIGIN_WHOLE_MS;
const TWO_32 = 2 ** 32;

/** Hex digit → value; 255 for anything else. */
const HEX = new Uint8Array(128).fill(255);
for (let i = 0; i < 16; i++) HEX['0123456789abcdef'.charCodeAt(i)] = i;
for (let i = 10; i < 16; i++) HEX['ABCDEF'.charCodeAt(i - 10)] = i;

/**
 * A growable protobuf writer. Length-delimited fields are written with one reserved length byte
 * and patched when they end (`open`/`close`); a body of 128 bytes or more is moved up to make
 * room for its longer length, so every length is the canonical varint.
 */
export class ProtoWriter {
  buf: Buffer;
  pos: number;

  /** A writer into a new buffer of `size` bytes, or into `buffer` (reused). */
  constructor(size: number | Buffer, start = 0) {
    this.buf = typeof size === 'number' ? Buffer.allocUnsafe(size) : size;
    this.pos = start;
  }

  /** Make room for `n` more bytes (doubling). */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.pos + n, this.buf.length * 2));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }

  byte(b: number): void {
    this.buf[this.pos++] = b;
  }

  /** A non-negative integer below 2^53 as a varint. */
  varint(n: number): void {
    const buf = this.buf;
    let pos = this.pos;
    while (n >= 0x80) {
      buf[pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    buf[pos++] = n;
    this.pos = pos;
  }

  /** Start a length-delimited value (after its tag); returns the mark `close` needs. */
  open(): number {
    return this.pos++;
  }

  /** End the length-delimited value started at `mark`: write its length there. */
  close(mark: number): void {
    const len = this.pos - mark - 1;
    if (len < 0x80) {
      this.buf[mark] = len;
      return;
    }
    const extra = varintSize(len) - 1;
    this.ensure(extra);
    this.buf.copyWithin(mark + 1 + extra, mark + 1, this.pos);
    this.pos += extra;
    const end = this.pos;
    this.pos = mark;
    this.varint(len);
    this.pos = end;
  }

  /** A string's UTF-8 bytes with their length (short ASCII strings without leaving JS). */
  string(s: string): void {
    const n = s.length;
    this.ensure(n * 3 + 5);
    if (n < 0x80) {
      const buf = this.buf;
      let pos = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        buf[pos++] = c;
      }
      if (i === n) {
        buf[this.pos] = n;
        this.pos = pos;
        return;
      }
    }
    const mark = this.open();
    this.pos += this.buf.write(s, this.pos, 'utf8');
    this.close(mark);
  }

  /** Bytes given as hex (trace and span ids), with their length. */
  hexBytes(hex: string): void {
    const n = hex.length >> 1;
    this.ensure(n + 1);
    const buf = this.buf;
    let pos = this.pos;
    buf[pos++] = n;
    for (let i = 0; i < hex.length; i += 2) {
      buf[pos++] = (HEX[hex.charCodeAt(i)] as number) * 16 + (HEX[hex.charCodeAt(i + 1)] as number);
    }
    this.pos = pos;
  }

  /** A `performance.now()` reading as fixed64 nanoseconds since the epoch. */
  time(now: number): void {
    const t = now + ORIGIN_FRACTION_MS;
    const wholeMs = ORIGIN_WHOLE_MS + Math.floor(t);
    const subNs = Math.round((t - Math.floor(t)) * 1e6);
    // ns = wholeMs * 1e6 + subNs, split into two 32-bit halves exactly in doubles.
    let lo = (wholeMs % TWO_32) * 1e6 + subNs;
    let hi = Math.floor(wholeMs / TWO_32) * 1e6;
    hi += Math.floor(lo / TWO_32);
    lo %= TWO_32;
    this.fixed32(lo);
    this.fixed32(hi);
  }

  /** A 32-bit unsigned integer, little-endian. */
  fixed32(n: number): void {
    const buf = this.buf;
    const pos = this.pos;
    buf[pos] = n & 0xff;
    buf[pos + 1] = (n >>> 8) & 0xff;
    buf[pos + 2] = (n >>> 16) & 0xff;
    buf[pos + 3] = (n >>> 24) & 0xff;
    this.pos = pos + 4;
  }

  /** A copy of what was written since `start` (to keep as a pre-encoded run; not a view of the buffer). */
  copySince(start: number): Uint8Array {
    return Uint8Array.prototype.slice.call(this.buf, start, this.pos);
  }

  /** Pre-encoded bytes (short runs copied in JS: cheaper than a native call). */
  raw(bytes: Uint8Array): void {
    const n = bytes.length;
    this.ensure(n);
    if (n > 64) {
      this.buf.set(bytes, this.pos);
      this.pos += n;
      return;
    }
    const buf = this.buf;
    let pos = this.pos;
    for (let i = 0; i < n; i++) buf[pos++] = bytes[i] as number;
    this.pos = pos;
  }
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

/** `KeyValue.key` of an attribute, encoded once: tag, length and UTF-8 bytes. */
export type Key = Uint8Array;

/** Encode an attribute key once (at load time). */
export function key(name: string): Key {
  const w = new ProtoWriter(name.length * 3 + 8);
  w.byte(T.kv_key);
  w.string(name);
  return w.buf.subarray(0, w.pos);
}

/** Room every attribute needs besides its key and value bytes (tags and lengths). */
const ATTRIBUTE_OVERHEAD = 16;

/** Attribute writers: a `KeyValue` into the attributes field `tag` of the enclosing message. */
export function strAttr(w: ProtoWriter, tag: number, k: Key, value: string): void {
  w.ensure(k.length + value.length * 3 + ATTRIBUTE_OVERHEAD);
  w.byte(tag);
  const kv = w.open();
  w.raw(k);
  w.byte(T.kv_value);
  const v = w.open();
  w.byte(T.any_string);
  w.string(value);
  w.close(v);
  w.close(kv);
}

/** A string attribute whose value is `a + b` (an origin and a path), written without joining them first. */
export function str2Attr(w: ProtoWriter, tag: number, k: Key, a: string, b: string): void {
  w.ensure(k.length + (a.length + b.length) * 3 + ATTRIBUTE_OVERHEAD);
  w.byte(tag);
  const kv = w.open();
  w.raw(k);
  w.byte(T.kv_value);
  const v = w.open();
  w.byte(T.any_string);
  const s = w.open();
  w.pos += w.buf.write(a, w.pos, 'utf8');
  w.pos += w.buf.write(b, w.pos, 'utf8');
  w.close(s);
  w.close(v);
  w.close(kv);
}

export function intAttr(w: ProtoWriter, tag: number, k: Key, value: number): void {
  w.ensure(k.length + ATTRIBUTE_OVERHEAD + 10);
  w.byte(tag);
  const kv = w.open();
  w.raw(k);
  w.byte(T.kv_value);
  const v = w.open();
  anyValue(w, value);
  w.close(v);
  w.close(kv);
}

/** The body of an `AnyValue` for a scalar: ints as int_value, other numbers as double_value. */
function anyValue(w: ProtoWriter, value: string | number | boolean): void {
  if (typeof value === 'string') {
    w.ensure(value.length * 3 + 6);
    w.byte(T.any_string);
    w.string(value);
  } else if (typeof value === 'boolean') {
    w.ensure(2);
    w.byte(T.any_bool);
    w.byte(value ? 1 : 0);
  } else if (Number.isSafeInteger(value)) {
    w.ensure(11);
    w.byte(T.any_int);
    if (value >= 0) w.varint(value);
    else {
      // int64: two's complement, ten bytes.
      let n = BigInt.asUintN(64, BigInt(value));
      for (let i = 0; i < 9; i++) {
        w.byte(Number(n & 0x7fn) | 0x80);
        n >>= 7n;
      }
      w.byte(Number(n));
    }
  } else {
    w.ensure(9);
    w.byte(T.any_double);
    w.buf.writeDoubleLE(value, w.pos);
    w.pos += 8;
  }
}

/** Any scalar attribute under any key (decision details, resource attributes). */
export function anyAttr(w: ProtoWriter, tag: number, name: string, value: string | number | boolean): void {
  w.ensure(name.length * 3 + ATTRIBUTE_OVERHEAD);
  w.byte(tag);
  const kv = w.open();
  w.byte(T.kv_key);
  w.string(name);
  w.byte(T.kv_value);
  const v = w.open();
  anyValue(w, value);
  w.close(v);
  w.close(kv);
}

/** Tags of the attributes fields, for the attribute writers. */
export const SPAN_ATTRIBUTES = T.span_attributes;
export const EVENT_ATTRIBUTES = T.event_attributes;

/** What a span starts with; attributes and events are written by the caller between `beginSpan` and `endSpan`. */
export interface SpanHead {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  /** W3C tracestate, '' when none. */
  traceState: string;
  /** Undefined: the caller writes it (`spanName`, or a cached block). */
  name: string | undefined;
  kind: number;
  /** `performance.now()` at start and end. */
  start: number;
  end: number;
}

/** Start a `ScopeSpans.spans` entry and write its fixed fields; returns the mark for `endSpan`. */
export function beginSpan(w: ProtoWriter, s: SpanHead): number {
  w.ensure((s.name?.length ?? 0) * 3 + s.traceState.length * 3 + 96);
  w.byte(T.scopeSpans_spans);
  const mark = w.open();
  w.byte(T.span_traceId);
  w.hexBytes(s.traceId);
  w.byte(T.span_spanId);
  w.hexBytes(s.spanId);
  if (s.traceState) {
    w.byte(T.span_traceState);
    w.string(s.traceState);
  }
  if (s.parentSpanId) {
    w.byte(T.span_parentSpanId);
    w.hexBytes(s.parentSpanId);
  }
  if (s.name !== undefined) {
    w.byte(T.span_name);
    w.string(s.name);
  }
  w.byte(T.span_kind);
  w.byte(s.kind);
  w.byte(T.span_start);
  w.time(s.start);
  w.byte(T.span_end);
  w.time(s.end);
  return mark;
}

/** Start a span event (its attributes follow, with EVENT_ATTRIBUTES); returns the mark for `endEvent`. */
export function beginEvent(w: ProtoWriter, name: string, now: number): number {
  w.ensure(name.length * 3 + 16);
  w.byte(T.span_events);
  const mark = w.open();
  w.byte(T.event_time);
  w.time(now);
  w.byte(T.event_name);
  w.string(name);
  return mark;
}

export function endEvent(w: ProtoWriter, mark: number): void {
  w.close(mark);
}

/** Finish a span: its status and flags. */
export function endSpan(
  w: ProtoWriter,
  mark: number,
  error: boolean,
  traceFlags: number,
  remoteParent: boolean,
): void {
  w.ensure(12);
  if (error) {
    w.byte(T.span_status);
    w.byte(2);
    w.byte(T.status_code);
    w.byte(STATUS_ERROR);
  }
  w.byte(T.span_flags[0]);
  w.byte(T.span_flags[1]);
  w.fixed32(traceFlags | FLAG_HAS_IS_REMOTE | (remoteParent ? FLAG_IS_REMOTE : 0));
  w.close(mark);
}

/**
 * The bytes of an export request before its spans: the request's and the ResourceSpans' tags and
 * lengths, the resource, and the ScopeSpans' tag, length and scope. `spansLength` is the encoded
 * size of all the spans (each with its tag and length).
 */
export function requestHead(resource: Uint8Array, scope: Uint8Array, spansLength: number): Uint8Array {
  const scopeSpansLen = scope.length + spansLength;
  const resourceSpansLen = resource.length + 1 + varintSize(scopeSpansLen) + scopeSpansLen;
  const w = new ProtoWriter(resource.length + scope.length + 24);
  w.byte(T.request_resourceSpans);
  w.varint(resourceSpansLen);
  w.raw(resource);
  w.byte(T.resourceSpans_scopeSpans);
  w.varint(scopeSpansLen);
  return Buffer.concat([w.buf.subarray(0, w.pos), scope]);
}

/** `ResourceSpans.resource` (tag included) for resource attributes: scalars and arrays of scalars. */
export function encodeResource(attributes: Attributes): Uint8Array {
  const w = new ProtoWriter(1024);
  w.byte(T.resourceSpans_resource);
  const mark = w.open();
  for (const name in attributes) {
    const v = attributes[name];
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      anyAttr(w, T.resource_attributes, name, v);
    } else if (Array.isArray(v)) {
      w.ensure(name.length * 3 + ATTRIBUTE_OVERHEAD);
      w.byte(T.resource_attributes);
      const kv = w.open();
      w.byte(T.kv_key);
      w.string(name);
      w.byte(T.kv_value);
      const av = w.open();
      w.byte(T.any_array);
      const arr = w.open();
      for (const x of v) {
        if (x === null || x === undefined) continue;
        w.ensure(4);
        w.byte(T.array_values);
        const item = w.open();
        anyValue(w, x as string | number | boolean);
        w.close(item);
      }
      w.close(arr);
      w.close(av);
      w.close(kv);
    }
  }
  w.close(mark);
  return w.buf.subarray(0, w.pos);
}

/** `ScopeSpans.scope` (tag included). */
export function encodeScope(name: string, version: string): Uint8Array {
  const w = new ProtoWriter(name.length * 3 + version.length * 3 + 16);
  w.byte(T.scopeSpans_scope);
  const mark = w.open();
  w.byte(T.scope_name);
  w.string(name);
  if (version) {
    w.byte(T.scope_version);
    w.string(version);
  }
  w.close(mark);
  return w.buf.subarray(0, w.pos);
}

/** Values remembered per attribute at most; a full cache starts afresh (the hot values come straight back). */
const CACHED_VALUES = 256;

/**
 * One attribute (key and tag fixed) whose values repeat from request to request — the method,
 * route, service, upstream, status: each value's whole `KeyValue` is encoded once and then copied.
 */
export class RepeatedAttr<V extends string | number> {
  private readonly tag: number;
  private readonly key: Key;
  private readonly values = new Map<V, Uint8Array>();

  constructor(tag: number, name: string) {
    this.tag = tag;
    this.key = key(name);
  }

  write(w: ProtoWriter, value: V): void {
    const known = this.values.get(value);
    if (known !== undefined) {
      w.raw(known);
      return;
    }
    const start = w.pos;
    if (typeof value === 'string') strAttr(w, this.tag, this.key, value);
    else intAttr(w, this.tag, this.key, value);
    if (this.values.size >= CACHED_VALUES) this.values.clear();
    this.values.set(value, w.copySince(start));
  }
}

/**
 * Runs of span fields fixed by two keys — e.g. an upstream's and a route's span name, method,
 * address and port — encoded once and then copied. The first key is a string, or an object
 * (weakly held: a route replaced by a reload takes its blocks with it). Keys should be the same
 * objects from request to request (route templates, configured URLs) so lookups are cheap.
 * Bounded.
 */
export class FieldBlocks<A extends string | object> {
  private readonly byString = new Map<A, Map<string, Uint8Array>>();
  private readonly byObject = new WeakMap<object, Map<string, Uint8Array>>();

  /** The block for (a, b), or undefined: then write the fields and call `keep`. */
  get(a: A, b: string): Uint8Array | undefined {
    return (typeof a === 'string' ? this.byString.get(a) : this.byObject.get(a))?.get(b);
  }

  /** Keep what was written into `w` since `start` as the block for (a, b). */
  keep(a: A, b: string, w: ProtoWriter, start: number): void {
    let inner = typeof a === 'string' ? this.byString.get(a) : this.byObject.get(a);
    if (inner === undefined) {
      inner = new Map();
      if (typeof a === 'string') {
        if (this.byString.size >= CACHED_VALUES) this.byString.clear();
        this.byString.set(a, inner);
      } else this.byObject.set(a, inner);
    }
    if (inner.size >= CACHED_VALUES) inner.clear();
    inner.set(b, w.copySince(start));
  }
}

/** `Span.name` (for spans begun without one: protobuf fields may come in any order). */
export function spanName(w: ProtoWriter, name: string): void {
  w.ensure(name.length * 3 + 6);
  w.byte(T.span_name);
  w.string(name);
}
