import { type HrTime, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { describe, expect, test } from 'vitest';
import { decodeTraceRequest, type OtlpSpan, type OtlpTraceRequest } from '../../test/helpers/otlp-decode.ts';
import {
  anyAttr,
  beginEvent,
  beginSpan,
  EVENT_ATTRIBUTES,
  encodeResource,
  encodeScope,
  endEvent,
  endSpan,
  intAttr,
  KIND_CLIENT,
  KIND_SERVER,
  key,
  ProtoWriter,
  RepeatedAttr,
  requestHead,
  SPAN_ATTRIBUTES,
  strAttr,
} from './otlp-proto.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const PARENT_ID = 'a2fb4a1d1a96d312';
const LONG = 'x'.repeat(300); // lengths of 2-byte varints at three nesting levels
const HUGE = 'y'.repeat(20_000); // a 3-byte length
const UTF8 = 'café ☕ 𝄞 naïve'; // 2-, 3- and 4-byte UTF-8
const RESOURCE = {
  'service.name': 'portcullis',
  'process.pid': 4242,
  'process.command_args': ['node', 'main.ts'],
};

/** A request with our encoder: one SERVER span (with events) and one CLIENT span. */
function encodeOurs(start: number, end: number): Buffer {
  const resource = encodeResource(RESOURCE);
  const scope = encodeScope('portcullis', '1.2.3');
  const reserve = resource.length + scope.length + 24;
  const w = new ProtoWriter(64, reserve); // tiny on purpose: every write has to grow it
  const server = beginSpan(w, {
    traceId: TRACE_ID,
    spanId: SPAN_ID,
    parentSpanId: PARENT_ID,
    traceState: 'vendor=opaque',
    name: `GET /${UTF8}`,
    kind: KIND_SERVER,
    start,
    end,
  });
  strAttr(w, SPAN_ATTRIBUTES, key('http.request.method'), 'GET');
  strAttr(w, SPAN_ATTRIBUTES, key('url.path'), `/${UTF8}`);
  strAttr(w, SPAN_ATTRIBUTES, key('user_agent.original'), LONG);
  strAttr(w, SPAN_ATTRIBUTES, key('huge'), HUGE);
  intAttr(w, SPAN_ATTRIBUTES, key('http.response.status_code'), 503);
  intAttr(w, SPAN_ATTRIBUTES, key('big'), 2 ** 40 + 7);
  anyAttr(w, SPAN_ATTRIBUTES, 'negative', -42);
  anyAttr(w, SPAN_ATTRIBUTES, 'ratio', 0.25);
  anyAttr(w, SPAN_ATTRIBUTES, 'flag', true);
  anyAttr(w, SPAN_ATTRIBUTES, 'off', false);
  const repeated = new RepeatedAttr<string>(SPAN_ATTRIBUTES, 'portcullis.service');
  repeated.write(w, 'orders'); // encoded...
  const e = beginEvent(w, 'policy.rateLimit', end);
  anyAttr(w, EVENT_ATTRIBUTES, 'policy.outcome', 'deny');
  anyAttr(w, EVENT_ATTRIBUTES, 'policy.remaining', 0);
  endEvent(w, e);
  endSpan(w, server, true, 1, true);
  const client = beginSpan(w, {
    traceId: TRACE_ID,
    spanId: '1111111111111111',
    parentSpanId: SPAN_ID,
    traceState: '',
    name: 'GET /items',
    kind: KIND_CLIENT,
    start,
    end,
  });
  repeated.write(w, 'orders'); // ...and copied the second time
  endSpan(w, client, false, 1, false);
  const head = requestHead(resource, scope, w.pos - reserve);
  return Buffer.concat([head, w.buf.subarray(reserve, w.pos)]);
}

/** The same two spans as the SDK would record them. */
function sdkSpans(start: HrTime, end: HrTime): ReadableSpan[] {
  const resource = resourceFromAttributes(RESOURCE);
  const scope = { name: 'portcullis', version: '1.2.3' };
  const common = {
    links: [],
    duration: [0, 0] as HrTime,
    ended: true,
    resource,
    instrumentationScope: scope,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
    startTime: start,
    endTime: end,
  };
  const traceState = {
    serialize: () => 'vendor=opaque',
    get: () => undefined,
    set() {
      return this;
    },
    unset() {
      return this;
    },
  };
  return [
    {
      ...common,
      name: `GET /${UTF8}`,
      kind: SpanKind.SERVER,
      spanContext: () => ({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1, traceState }),
      parentSpanContext: { traceId: TRACE_ID, spanId: PARENT_ID, traceFlags: 1, isRemote: true },
      status: { code: SpanStatusCode.ERROR },
      attributes: {
        'http.request.method': 'GET',
        'url.path': `/${UTF8}`,
        'user_agent.original': LONG,
        huge: HUGE,
        'http.response.status_code': 503,
        big: 2 ** 40 + 7,
        negative: -42,
        ratio: 0.25,
        flag: true,
        off: false,
        'portcullis.service': 'orders',
      },
      events: [
        {
          name: 'policy.rateLimit',
          time: end,
          attributes: { 'policy.outcome': 'deny', 'policy.remaining': 0 },
        },
      ],
    },
    {
      ...common,
      name: 'GET /items',
      kind: SpanKind.CLIENT,
      spanContext: () => ({ traceId: TRACE_ID, spanId: '1111111111111111', traceFlags: 1 }),
      parentSpanContext: { traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1, isRemote: false },
      status: { code: SpanStatusCode.UNSET },
      attributes: { 'portcullis.service': 'orders' },
      events: [],
    },
  ];
}

/** Both encodings, decoded, with the times set aside (compared separately). */
function withoutTimes(req: OtlpTraceRequest): unknown {
  const strip = (s: OtlpSpan) => ({
    ...s,
    startTimeUnixNano: undefined,
    endTimeUnixNano: undefined,
    status: s.status?.code ? { code: s.status.code } : undefined,
    events: s.events.map((e) => ({ ...e, timeUnixNano: undefined })),
  });
  return req.resourceSpans.map((rs) => ({
    resource: rs.resource,
    scopeSpans: rs.scopeSpans.map((ss) => ({ scope: ss.scope, spans: ss.spans.map(strip) })),
  }));
}

/** A performance.now() reading's nanoseconds since the epoch, as the SDK's HrTime would have them. */
function hrTimeOf(now: number): HrTime {
  const ns = BigInt(Math.round(performance.timeOrigin * 1e3)) * 1000n + BigInt(Math.round(now * 1e6));
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

describe('OTLP/protobuf span encoding', () => {
  test('decodes to exactly what the SDK’s own protobuf serializer sends for the same spans', () => {
    const start = performance.now();
    const end = start + 12.345678;
    const ours = decodeTraceRequest(encodeOurs(start, end));
    const sdkBytes = ProtobufTraceSerializer.serializeRequest(sdkSpans(hrTimeOf(start), hrTimeOf(end)));
    const sdk = decodeTraceRequest(Buffer.from(sdkBytes as Uint8Array));
    expect(withoutTimes(ours)).toEqual(withoutTimes(sdk));
    // Spot checks, so a decoder bug that both sides share cannot pass unnoticed.
    const [server, client] = ours.resourceSpans[0]?.scopeSpans[0]?.spans ?? [];
    expect(server?.name).toBe(`GET /${UTF8}`);
    expect(server?.traceId).toBe(TRACE_ID);
    expect(server?.parentSpanId).toBe(PARENT_ID);
    expect(server?.traceState).toBe('vendor=opaque');
    expect(server?.flags).toBe(0x301);
    expect(client?.flags).toBe(0x101);
    const attrs = Object.fromEntries((server?.attributes ?? []).map((a) => [a.key, a.value]));
    expect(attrs.huge?.stringValue).toHaveLength(20_000);
    expect(attrs.big?.intValue).toBe(String(2 ** 40 + 7));
    expect(attrs.negative?.intValue).toBe('-42');
    expect(attrs.ratio?.doubleValue).toBe(0.25);
    expect(
      ours.resourceSpans[0]?.resource?.attributes.find((a) => a.key === 'process.command_args')?.value,
    ).toEqual({
      arrayValue: { values: [{ stringValue: 'node' }, { stringValue: 'main.ts' }] },
    });
  });

  test('times are nanoseconds since the epoch, within a microsecond of the SDK’s', () => {
    const start = performance.now();
    const end = start + 0.000_5; // half a microsecond later
    const [server] = decodeTraceRequest(encodeOurs(start, end)).resourceSpans[0]?.scopeSpans[0]?.spans ?? [];
    const [s, ns] = hrTimeOf(start);
    const expected = BigInt(s) * 1_000_000_000n + BigInt(ns);
    const got = BigInt(server?.startTimeUnixNano ?? '0');
    expect(got - expected).toBeGreaterThanOrEqual(-1000n);
    expect(got - expected).toBeLessThanOrEqual(1000n);
    expect(BigInt(server?.endTimeUnixNano ?? '0') - got).toBeGreaterThanOrEqual(0n);
    // Close to the wall clock (the process has not been running for days).
    expect(Number(got / 1_000_000n)).toBeGreaterThan(Date.now() - 86_400_000);
    expect(Number(got / 1_000_000n)).toBeLessThanOrEqual(Date.now() + 1000);
  });
});
