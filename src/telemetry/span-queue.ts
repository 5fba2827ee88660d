/**
 * Batching and export of encoded spans (otlp-json.ts), with the BatchSpanProcessor's defaults:
 * a batch of at most 512 spans goes out when full or after at most a second. Sending is
 * OpenTelemetry's own OTLP/HTTP delegate (timeouts, retries with backoff on 429/502/503/504, a
 * bound on concurrent exports beyond which a batch is dropped, OTEL_EXPORTER_OTLP_* headers);
 * only the serializer is ours.
 *
 * Each span is written, as UTF-8, into the batch's request body as soon as it ends, so the body
 * is ready when the batch is: no span text stays on the JS heap for the garbage collector to
 * copy, and nothing is joined or re-encoded at export time. Memory is bounded by one body being
 * filled plus the exporter's concurrent exports.
 */
import { ExportResultCode } from '@opentelemetry/core';
import type { IOtlpExportDelegate } from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import type { Resource } from '@opentelemetry/resources';
import { ENVELOPE_TAIL, envelopeHead } from './otlp-json.ts';

/** Spans per export request (BatchSpanProcessor's maxExportBatchSize). */
export const BATCH_SIZE = 512;
/** Initial size of a request body; a body grows (doubling) when large spans need it. */
const BODY_BYTES = 1 << 20;

export interface SpanQueueOptions {
  /** The OTLP/HTTP traces URL (…/v1/traces). */
  url: string;
  /** The resource (service.name, host, process…), written once per export request. */
  resource: Resource;
  scope: { name: string; version: string };
  /** A non-full batch goes out after at most this long. */
  delayMs: number;
  /** Called when an export fails (spans dropped); the caller rate-limits its logging. */
  onError?: (message: string) => void;
}

export interface SpanQueueStats {
  /** Spans sent in successful exports. */
  exported: number;
  /** Spans dropped because their export failed (after retries) or too many were in flight. */
  dropped: number;
}

/** A request body being filled: the envelope's head, then comma-separated spans. */
interface Body {
  buf: Buffer;
  length: number;
  spans: number;
}

/** Spans waiting for export, already encoded into the next request body. */
export class SpanQueue {
  private body: Body | undefined;
  private timer: NodeJS.Timeout | undefined;
  private head: string | undefined;
  private readonly delegate: IOtlpExportDelegate<Body>;
  private readonly opts: SpanQueueOptions;
  private readonly pending = new Set<Promise<void>>();
  readonly stats: SpanQueueStats = { exported: 0, dropped: 0 };

  constructor(opts: SpanQueueOptions) {
    this.opts = opts;
    const serializer = {
      serializeRequest: (body: Body) => body.buf.subarray(0, body.length),
      // The collector's ExportTraceServiceResponse (partial success) is not acted upon.
      deserializeResponse: (data: Uint8Array) => data,
    };
    this.delegate = createOtlpHttpExportDelegate(
      convertLegacyHttpOptions({ url: opts.url }, 'TRACES', 'v1/traces', {
        'Content-Type': 'application/json',
      }),
      serializer,
      'portcullis_otlp_http_span_exporter',
      { name: 'span', countItems: (body: Body) => body.spans },
      undefined,
    );
  }

  /** Queue one encoded span (an OTLP/JSON Span object). */
  add(span: string): void {
    let body = this.body;
    if (body === undefined) {
      body = this.body = this.newBody();
      this.timer = setTimeout(() => this.exportBody(), this.opts.delayMs);
      this.timer.unref();
    }
    // Room for a comma, the span (UTF-8: at most 3 bytes per UTF-16 unit) and the tail.
    const need = body.length + 1 + span.length * 3 + ENVELOPE_TAIL.length;
    if (need > body.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, body.buf.length * 2));
      body.buf.copy(bigger, 0, 0, body.length);
      body.buf = bigger;
    }
    if (body.spans > 0) body.buf[body.length++] = 0x2c; // ','
    body.length += body.buf.write(span, body.length, 'utf8');
    body.spans++;
    if (body.spans >= BATCH_SIZE) this.exportBody();
  }

  /** Export what is queued and wait for every export in flight. */
  async flush(): Promise<void> {
    this.exportBody();
    await Promise.all([...this.pending]);
    await this.delegate.forceFlush();
  }

  /** Flush, then stop the exporter. */
  async shutdown(): Promise<void> {
    await this.flush();
    await this.delegate.shutdown();
  }

  /** A body with the envelope's head written; the head is kept once resource detection is done. */
  private newBody(): Body {
    const { resource } = this.opts;
    const head = this.head ?? envelopeHead(resource.attributes, this.opts.scope);
    if (!resource.asyncAttributesPending) this.head = head;
    const buf = Buffer.allocUnsafe(BODY_BYTES);
    return { buf, length: buf.write(head, 0, 'utf8'), spans: 0 };
  }

  /** Close the body being filled and hand it to the exporter. */
  private exportBody(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const body = this.body;
    if (body === undefined) return;
    this.body = undefined;
    body.length += body.buf.write(ENVELOPE_TAIL, body.length, 'latin1');
    const done = new Promise<void>((resolve) => {
      this.delegate.export(body, (result) => {
        if (result.code === ExportResultCode.SUCCESS) this.stats.exported += body.spans;
        else {
          this.stats.dropped += body.spans;
          this.opts.onError?.(
            `OTLP export of ${body.spans} spans failed: ${result.error?.message ?? 'unknown error'}`,
          );
        }
        resolve();
      });
    });
    this.pending.add(done);
    void done.then(() => this.pending.delete(done));
  }
}
