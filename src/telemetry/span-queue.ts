/**
 * Batching and export of the gateway's spans: a batch of at most 2048 spans goes out when full
 * or after at most a second. Sending is OpenTelemetry's own
 * OTLP/HTTP delegate (timeouts, retries with backoff on 429/502/503/504, a bound on concurrent
 * exports beyond which a batch is dropped, OTEL_EXPORTER_OTLP_* headers); only the serializer is
 * ours.
 *
 * A span is encoded (otlp-proto.ts) into the request body of its batch as soon as it ends, so
 * what waits for export is bytes, not objects. Memory is bounded by one batch being filled plus
 * the exporter's concurrent exports (request bodies are reused).
 */
import { ExportResultCode } from '@opentelemetry/core';
import type { IOtlpExportDelegate } from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import type { Resource } from '@opentelemetry/resources';
import { encodeResource, encodeScope, ProtoWriter, requestHead } from './otlp-proto.ts';

/**
 * Spans per export request: four times BatchSpanProcessor's default (512), about 1 MB of
 * protobuf. Each export request costs about as much CPU as encoding a few hundred spans, so
 * under load fewer, larger requests are cheaper (bench: 256 spans a request cost twice what 2048
 * did); OTLP receivers accept far larger bodies (the collector's default limit is 20 MiB).
 */
export const BATCH_SIZE = 2048;
/** Initial size of a request body; it grows (doubling) when large spans need it. */
const BODY_BYTES = 1024 * 1024;
/** Body buffers kept for reuse once their export is done (a fresh megabyte per batch costs page faults). */
const SPARE_BODIES = 4;
/** Room kept in front of the spans for the request head (tags and lengths around resource and scope). */
const HEAD_SLACK = 24;

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

/** A request body being filled: room for the head, then the spans. */
interface Body {
  writer: ProtoWriter;
  /** Where the spans start. */
  spansStart: number;
  resource: Uint8Array;
  spans: number;
}

/**
 * Ended spans waiting for export, already encoded into the body of their batch. Keeping the
 * spans as objects until the batch went out (up to 2048 of them, up to a second) made every one
 * of them survive several young-generation collections and reach the old generation: with tracing
 * on at 50 connections, 265 scavenges (540-570 ms) and 3-4 mark-compacts per 40,000 requests
 * against 198-200 (122-142 ms) and 1 with it off, V8's GC threads busy 18 µs a request against 4,
 * and an RSS of 243 MB at the end against 124-132 (bench/README.md, issue 14). Encoded at once, a
 * span's objects die young.
 */
export class SpanQueue<T> {
  /** The batch being filled; undefined when nothing waits. */
  private body: Body | undefined = undefined;
  private timer: NodeJS.Timeout | undefined;
  private resource: Uint8Array | undefined;
  private readonly scope: Uint8Array;
  private readonly delegate: IOtlpExportDelegate<Body>;
  private readonly opts: SpanQueueOptions;
  private readonly encode: (w: ProtoWriter, item: T) => void;
  private readonly pending = new Set<Promise<void>>();
  private readonly spare: Buffer[] = [];
  readonly stats: SpanQueueStats = { exported: 0, dropped: 0 };

  /** `encode` writes one item as a `ScopeSpans.spans` entry (otlp-proto.ts `beginSpan`…`endSpan`). */
  constructor(opts: SpanQueueOptions, encode: (w: ProtoWriter, item: T) => void) {
    this.opts = opts;
    this.encode = encode;
    this.scope = encodeScope(opts.scope.name, opts.scope.version);
    const serializer = {
      serializeRequest: (body: Body) => this.serialize(body),
      // The collector's ExportTraceServiceResponse (partial success) is not acted upon.
      deserializeResponse: (data: Uint8Array) => data,
    };
    this.delegate = createOtlpHttpExportDelegate(
      convertLegacyHttpOptions({ url: opts.url }, 'TRACES', 'v1/traces', {
        'Content-Type': 'application/x-protobuf',
      }),
      serializer,
      'portcullis_otlp_http_span_exporter',
      { name: 'span', countItems: (body: Body) => body.spans },
      undefined,
    );
  }

  /** Encode one ended span into the batch being filled; a full batch goes out at once. */
  add(item: T): void {
    let body = this.body;
    if (body === undefined) {
      body = this.newBody();
      this.body = body;
    }
    const mark = body.writer.pos;
    try {
      this.encode(body.writer, item);
      body.spans++;
    } catch (err) {
      // A span that cannot be encoded is dropped, not the batch.
      body.writer.pos = mark;
      this.stats.dropped++;
      this.opts.onError?.(`a span could not be encoded: ${(err as Error).message}`);
      return;
    }
    if (body.spans >= BATCH_SIZE) this.exportBody();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => this.exportBody(), this.opts.delayMs);
      this.timer.unref();
    }
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

  /** The resource, encoded; kept once its detection is done (until then each batch encodes it again). */
  private encodedResource(): Uint8Array {
    if (this.resource !== undefined) return this.resource;
    const { resource } = this.opts;
    const encoded = encodeResource(resource.attributes);
    if (!resource.asyncAttributesPending) this.resource = encoded;
    return encoded;
  }

  /** A body with room in front for the head (resource, scope, tags and lengths). */
  private newBody(): Body {
    const encoded = this.encodedResource();
    const spansStart = encoded.length + this.scope.length + HEAD_SLACK;
    const writer = new ProtoWriter(this.spare.pop() ?? BODY_BYTES, spansStart);
    return { writer, spansStart, resource: encoded, spans: 0 };
  }

  /** The request: its head written just in front of the spans. */
  private serialize(body: Body): Uint8Array {
    const { writer, spansStart } = body;
    const head = requestHead(body.resource, this.scope, writer.pos - spansStart);
    const start = spansStart - head.length;
    writer.buf.set(head, start);
    return writer.buf.subarray(start, writer.pos);
  }

  /** Hand the batch being filled to the exporter. */
  private exportBody(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    let body = this.body;
    if (body === undefined) return;
    this.body = undefined;
    if (body.spans === 0) {
      this.keepSpare(body.writer.buf);
      return;
    }
    // The resource as it is now: detection may have finished while the batch filled. When it no
    // longer fits the room kept in front, the spans move to a body that has it.
    if (body.resource !== this.resource) {
      const encoded = this.encodedResource();
      if (encoded.length + this.scope.length + HEAD_SLACK <= body.spansStart) body.resource = encoded;
      else {
        const moved = this.newBody();
        moved.writer.raw(body.writer.buf.subarray(body.spansStart, body.writer.pos));
        moved.spans = body.spans;
        this.keepSpare(body.writer.buf);
        body = moved;
      }
    }
    const exported = body;
    const done = new Promise<void>((resolve) => {
      this.delegate.export(exported, (result) => {
        if (result.code === ExportResultCode.SUCCESS) this.stats.exported += exported.spans;
        else {
          this.stats.dropped += exported.spans;
          this.opts.onError?.(
            `OTLP export of ${exported.spans} spans failed: ${result.error?.message ?? 'unknown error'}`,
          );
        }
        // Done with, retries included: the buffer can take another batch.
        this.keepSpare(exported.writer.buf);
        resolve();
      });
    });
    this.pending.add(done);
    void done.then(() => this.pending.delete(done));
  }

  /** Keep a body's buffer for a later batch, when it is not oversized and fewer than SPARE_BODIES wait. */
  private keepSpare(buf: Buffer): void {
    if (buf.length <= 4 * BODY_BYTES && this.spare.length < SPARE_BODIES) this.spare.push(buf);
  }
}
