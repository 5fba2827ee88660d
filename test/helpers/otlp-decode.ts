/**
 * A strict decoder of OTLP/protobuf trace export requests (opentelemetry-proto
 * ExportTraceServiceRequest) into the OTLP/JSON shape, for test receivers: what a collector or
 * Jaeger would parse. Every length is bounds-checked and an unknown wire type is an error, so a
 * malformed encoding fails the test instead of decoding to something plausible.
 */

export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  arrayValue?: { values: OtlpAnyValue[] };
}
export interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}
export interface OtlpEvent {
  timeUnixNano: string;
  name: string;
  attributes: OtlpKeyValue[];
}
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  traceState?: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpKeyValue[];
  events: OtlpEvent[];
  status?: { code?: number; message?: string };
  flags?: number;
}
export interface OtlpTraceRequest {
  resourceSpans: Array<{
    resource?: { attributes: OtlpKeyValue[] };
    scopeSpans: Array<{ scope?: { name: string; version?: string }; spans: OtlpSpan[] }>;
  }>;
}

/** A protobuf message being read: each `next()` yields one field. */
class Reader {
  private pos = 0;
  private readonly buf: Buffer;
  private readonly end: number;
  constructor(buf: Buffer) {
    this.buf = buf;
    this.end = buf.length;
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result;
      shift += 7n;
    }
    throw new Error('varint longer than 10 bytes');
  }

  /** The next field: its number, wire type, and a reader for it. */
  next(): { field: number; wire: number; value: FieldValue } {
    const tag = Number(this.varint());
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 0) throw new Error('field number 0');
    switch (wire) {
      case 0:
        return { field, wire, value: { varint: this.varint() } };
      case 1:
        return { field, wire, value: { bytes: this.take(8) } };
      case 5:
        return { field, wire, value: { bytes: this.take(4) } };
      case 2: {
        const len = Number(this.varint());
        return { field, wire, value: { bytes: this.take(len) } };
      }
      default:
        throw new Error(`unsupported wire type ${wire} (field ${field})`);
    }
  }

  private take(n: number): Buffer {
    if (this.pos + n > this.end) throw new Error(`field of ${n} bytes runs past its message`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

interface FieldValue {
  varint?: bigint;
  bytes?: Buffer;
}

/** Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/**
 * Read a message's fields. `wires` gives each known field's wire type (a mismatch is an error);
 * `each` sees known fields only.
 */
function fields(
  buf: Buffer,
  what: string,
  wires: Record<number, number>,
  each: (field: number, v: FieldValue) => void,
): void {
  const r = new Reader(buf);
  while (!r.done()) {
    const { field, wire, value } = r.next();
    const want = wires[field];
    if (want === undefined) continue;
    if (wire !== want) throw new Error(`${what}: field ${field} has wire type ${wire}, expected ${want}`);
    each(field, value);
  }
}

function str(v: FieldValue): string {
  return (v.bytes as Buffer).toString('utf8');
}

function anyValue(buf: Buffer): OtlpAnyValue {
  const out: OtlpAnyValue = {};
  fields(buf, 'AnyValue', { 1: LEN, 2: VARINT, 3: VARINT, 4: I64, 5: LEN }, (f, v) => {
    if (f === 1) out.stringValue = str(v);
    else if (f === 2) out.boolValue = v.varint === 1n;
    else if (f === 3) out.intValue = BigInt.asIntN(64, v.varint as bigint).toString();
    else if (f === 4) out.doubleValue = (v.bytes as Buffer).readDoubleLE(0);
    else {
      const values: OtlpAnyValue[] = [];
      fields(v.bytes as Buffer, 'ArrayValue', { 1: LEN }, (_f, av) => {
        values.push(anyValue(av.bytes as Buffer));
      });
      out.arrayValue = { values };
    }
  });
  return out;
}

function keyValue(buf: Buffer): OtlpKeyValue {
  let key = '';
  let value: OtlpAnyValue = {};
  fields(buf, 'KeyValue', { 1: LEN, 2: LEN }, (f, v) => {
    if (f === 1) key = str(v);
    else value = anyValue(v.bytes as Buffer);
  });
  return { key, value };
}

function nanos(v: FieldValue): string {
  return (v.bytes as Buffer).readBigUInt64LE(0).toString();
}

function event(buf: Buffer): OtlpEvent {
  const out: OtlpEvent = { timeUnixNano: '0', name: '', attributes: [] };
  fields(buf, 'Event', { 1: I64, 2: LEN, 3: LEN }, (f, v) => {
    if (f === 1) out.timeUnixNano = nanos(v);
    else if (f === 2) out.name = str(v);
    else out.attributes.push(keyValue(v.bytes as Buffer));
  });
  return out;
}

function span(buf: Buffer): OtlpSpan {
  const out: OtlpSpan = {
    traceId: '',
    spanId: '',
    name: '',
    kind: 0,
    startTimeUnixNano: '0',
    endTimeUnixNano: '0',
    attributes: [],
    events: [],
  };
  const wires = {
    1: LEN,
    2: LEN,
    3: LEN,
    4: LEN,
    5: LEN,
    6: VARINT,
    7: I64,
    8: I64,
    9: LEN,
    11: LEN,
    15: LEN,
    16: I32,
  };
  // dropped_*_count (10, 12, 14) and links (13) are not written by the gateway.
  fields(buf, 'Span', wires, (f, v) => {
    const hex = () => (v.bytes as Buffer).toString('hex');
    switch (f) {
      case 1:
        out.traceId = hex();
        break;
      case 2:
        out.spanId = hex();
        break;
      case 3:
        out.traceState = str(v);
        break;
      case 4:
        out.parentSpanId = hex();
        break;
      case 5:
        out.name = str(v);
        break;
      case 6:
        out.kind = Number(v.varint);
        break;
      case 7:
        out.startTimeUnixNano = nanos(v);
        break;
      case 8:
        out.endTimeUnixNano = nanos(v);
        break;
      case 9:
        out.attributes.push(keyValue(v.bytes as Buffer));
        break;
      case 11:
        out.events.push(event(v.bytes as Buffer));
        break;
      case 15: {
        const status: { code?: number; message?: string } = {};
        fields(v.bytes as Buffer, 'Status', { 2: LEN, 3: VARINT }, (sf, sv) => {
          if (sf === 3) status.code = Number(sv.varint);
          else status.message = str(sv);
        });
        out.status = status;
        break;
      }
      default:
        out.flags = (v.bytes as Buffer).readUInt32LE(0);
        break;
    }
  });
  return out;
}

/** Decode one OTLP/protobuf ExportTraceServiceRequest body. */
export function decodeTraceRequest(body: Buffer): OtlpTraceRequest {
  const request: OtlpTraceRequest = { resourceSpans: [] };
  fields(body, 'ExportTraceServiceRequest', { 1: LEN }, (_f, v) => {
    const rs: OtlpTraceRequest['resourceSpans'][number] = { scopeSpans: [] };
    fields(v.bytes as Buffer, 'ResourceSpans', { 1: LEN, 2: LEN }, (rf, rv) => {
      if (rf === 1) {
        const attributes: OtlpKeyValue[] = [];
        fields(rv.bytes as Buffer, 'Resource', { 1: LEN }, (_af, av) => {
          attributes.push(keyValue(av.bytes as Buffer));
        });
        rs.resource = { attributes };
        return;
      }
      const ss: OtlpTraceRequest['resourceSpans'][number]['scopeSpans'][number] = { spans: [] };
      fields(rv.bytes as Buffer, 'ScopeSpans', { 1: LEN, 2: LEN }, (sf, sv) => {
        if (sf === 2) {
          ss.spans.push(span(sv.bytes as Buffer));
          return;
        }
        const scope: { name: string; version?: string } = { name: '' };
        fields(sv.bytes as Buffer, 'InstrumentationScope', { 1: LEN, 2: LEN }, (cf, cv) => {
          if (cf === 1) scope.name = str(cv);
          else scope.version = str(cv);
        });
        ss.scope = scope;
      });
      rs.scopeSpans.push(ss);
    });
    request.resourceSpans.push(rs);
  });
  return request;
}
