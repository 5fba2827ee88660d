import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeTraceRequest, type OtlpKeyValue, type OtlpTraceRequest } from './otlp-decode.ts';

/** A span as an OTLP/HTTP exporter sends it (protobuf or JSON), flattened for assertions. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** 1 internal, 2 server, 3 client (OTLP SpanKind). */
  kind: number;
  attributes: Record<string, string | number | boolean>;
  events: Array<{ name: string; attributes: Record<string, string | number | boolean> }>;
  /** 0 unset, 1 ok, 2 error. */
  status: number;
  /** W3C tracestate, '' when none. */
  traceState: string;
  /** Resource attributes of the batch the span came in (service.name...). */
  resource: Record<string, string | number | boolean>;
}

export interface OtlpReceiver {
  /** `http://127.0.0.1:<port>`: what `telemetry.otlp` is set to. */
  url: string;
  spans: ReceivedSpan[];
  /** Export requests that were not OTLP traces, or did not decode (should stay 0). */
  rejected: number;
  /** Why requests were rejected as undecodable. */
  errors: string[];
  /** Content-Types of the accepted exports. */
  contentTypes: Set<string>;
  close(): Promise<void>;
}

type OtlpAttributes = OtlpKeyValue[] | undefined;

/**
 * A local OTLP/HTTP traces receiver (protobuf, which the gateway sends, or JSON) on 127.0.0.1,
 * port 0: what Jaeger's OTLP port would receive from the gateway.
 */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const receiver = { spans, rejected: 0, errors: [] as string[], contentTypes: new Set<string>() };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const type = req.headers['content-type'] ?? '';
      const isJson = type.startsWith('application/json');
      const isProtobuf = type.startsWith('application/x-protobuf');
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !(isJson || isProtobuf)) {
        receiver.rejected++;
        res.writeHead(415).end();
        return;
      }
      const raw = Buffer.concat(chunks);
      let body: OtlpTraceRequest;
      try {
        body = isJson ? (JSON.parse(raw.toString('utf8')) as OtlpTraceRequest) : decodeTraceRequest(raw);
      } catch (err) {
        receiver.rejected++;
        receiver.errors.push(String(err));
        res.writeHead(400).end();
        return;
      }
      receiver.contentTypes.add(type);
      for (const rs of body.resourceSpans ?? []) {
        const resource = attributes(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              traceId: String(s.traceId),
              spanId: String(s.spanId),
              parentSpanId: String(s.parentSpanId ?? ''),
              name: String(s.name),
              kind: Number(s.kind),
              attributes: attributes(s.attributes as OtlpAttributes),
              events: ((s.events as Array<{ name: string; attributes?: OtlpAttributes }>) ?? []).map((e) => ({
                name: e.name,
                attributes: attributes(e.attributes),
              })),
              status: Number((s.status as { code?: number } | undefined)?.code ?? 0),
              traceState: s.traceState ?? '',
              resource,
            });
          }
        }
      }
      // An empty ExportTraceServiceResponse: full success.
      if (isJson) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      else res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

function attributes(list: OtlpAttributes): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of list ?? []) {
    if (value.stringValue !== undefined) out[key] = value.stringValue;
    else if (value.intValue !== undefined) out[key] = Number(value.intValue);
    else if (value.doubleValue !== undefined) out[key] = value.doubleValue;
    else if (value.boolValue !== undefined) out[key] = value.boolValue;
  }
  return out;
}
