import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type OtlpReceiver, startOtlpReceiver } from '../../test/helpers/otlp.ts';
import { beginSpan, endSpan, KIND_SERVER, type ProtoWriter } from './otlp-proto.ts';
import { BATCH_SIZE, SpanQueue } from './span-queue.ts';

/** A minimal span, named `span <i>` (the queue's encoder for these tests). */
function encodeMinimal(w: ProtoWriter, i: number): void {
  if (i < 0) throw new Error('cannot encode this one');
  const now = performance.now();
  const mark = beginSpan(w, {
    traceId: (i + 1).toString(16).padStart(32, '0'),
    spanId: (i + 1).toString(16).padStart(16, '0'),
    parentSpanId: '',
    traceState: '',
    name: `span ${i}`,
    kind: KIND_SERVER,
    start: now,
    end: now,
  });
  endSpan(w, mark, false, 1, false);
}

/** Queue `n` spans, numbered from `from`. */
function addSpans(queue: SpanQueue<number>, n: number, from = 0): void {
  for (let i = from; i < from + n; i++) queue.add(i);
}

describe('span queue: batching and export over OTLP/HTTP', () => {
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });
  afterAll(async () => {
    await receiver?.close();
  });

  test('full batches go out at once, the rest on flush; every span arrives once, as protobuf', async () => {
    const queue = new SpanQueue(
      {
        url: `${receiver.url}/v1/traces`,
        resource: resourceFromAttributes({ 'service.name': 'queue-test' }),
        scope: { name: 'portcullis', version: '9.9.9' },
        delayMs: 60_000, // only size and flush send here
      },
      encodeMinimal,
    );
    const total = BATCH_SIZE * 2 + 10;
    addSpans(queue, total);
    await expect.poll(() => receiver.spans.length, { timeout: 5000 }).toBe(BATCH_SIZE * 2);
    await queue.flush();
    expect(receiver.spans).toHaveLength(total);
    expect(new Set(receiver.spans.map((s) => s.name)).size).toBe(total);
    expect(receiver.spans[0]?.resource['service.name']).toBe('queue-test');
    expect([...receiver.contentTypes]).toEqual(['application/x-protobuf']);
    expect(receiver.rejected).toBe(0);
    expect(queue.stats).toEqual({ exported: total, dropped: 0 });
    await queue.shutdown();
  });

  test('a span that cannot be encoded is dropped and reported; the rest of its batch goes out', async () => {
    const before = receiver.spans.length;
    const errors: string[] = [];
    const queue = new SpanQueue(
      {
        url: `${receiver.url}/v1/traces`,
        resource: resourceFromAttributes({}),
        scope: { name: 'portcullis', version: '' },
        delayMs: 60_000,
        onError: (m) => errors.push(m),
      },
      encodeMinimal,
    );
    queue.add(7);
    queue.add(-1);
    queue.add(8);
    await queue.flush();
    expect(receiver.spans.slice(before).map((s) => s.name)).toEqual(['span 7', 'span 8']);
    expect(queue.stats).toEqual({ exported: 2, dropped: 1 });
    expect(errors).toEqual(['a span could not be encoded: cannot encode this one']);
    expect(receiver.rejected).toBe(0);
    await queue.shutdown();
  });

  test('a span is encoded when it is added: what it was then is what is exported', async () => {
    const before = receiver.spans.length;
    const queue = new SpanQueue<{ i: number }>(
      {
        url: `${receiver.url}/v1/traces`,
        resource: resourceFromAttributes({}),
        scope: { name: 'portcullis', version: '' },
        delayMs: 60_000,
      },
      (w, item) => encodeMinimal(w, item.i),
    );
    const item = { i: 41 };
    queue.add(item);
    // The queue keeps bytes, not the object: changing it afterwards changes nothing.
    item.i = 99;
    queue.add({ i: 42 });
    await queue.flush();
    expect(receiver.spans.slice(before).map((s) => s.name)).toEqual(['span 41', 'span 42']);
    expect(queue.stats).toEqual({ exported: 2, dropped: 0 });
    await queue.shutdown();
  });

  test('resource attributes detected while a batch fills go out with it, however long', async () => {
    const before = receiver.spans.length;
    let detected: (v: string) => void = () => {};
    const host = new Promise<string>((resolve) => {
      detected = resolve;
    });
    const resource = resourceFromAttributes({ 'service.name': 'late', 'host.name': host });
    const queue = new SpanQueue(
      {
        url: `${receiver.url}/v1/traces`,
        resource,
        scope: { name: 'portcullis', version: '' },
        delayMs: 60_000,
      },
      encodeMinimal,
    );
    queue.add(1);
    // Longer than the room the batch kept in front for a resource without it.
    detected('h'.repeat(300));
    await resource.waitForAsyncAttributes?.();
    queue.add(2);
    await queue.flush();
    const got = receiver.spans.slice(before);
    expect(got.map((s) => s.name)).toEqual(['span 1', 'span 2']);
    for (const span of got) expect(span.resource['host.name']).toBe('h'.repeat(300));
    await queue.shutdown();
  });

  test('a batch goes out by itself after the delay', async () => {
    const before = receiver.spans.length;
    const queue = new SpanQueue(
      {
        url: `${receiver.url}/v1/traces`,
        resource: resourceFromAttributes({}),
        scope: { name: 'portcullis', version: '' },
        delayMs: 50,
      },
      encodeMinimal,
    );
    addSpans(queue, 3);
    await expect.poll(() => receiver.spans.length - before, { timeout: 5000 }).toBe(3);
    await queue.shutdown();
  });
});

describe('span queue: a collector that refuses', () => {
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    // 400 is not retryable: the export fails at once (a dead port would be retried for seconds).
    const server = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(400).end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
    close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  });
  afterAll(async () => {
    await close?.();
  });

  test('failed exports are counted as dropped and reported', async () => {
    const errors: string[] = [];
    const queue = new SpanQueue(
      {
        url,
        resource: resourceFromAttributes({}),
        scope: { name: 'portcullis', version: '' },
        delayMs: 60_000,
        onError: (m) => errors.push(m),
      },
      encodeMinimal,
    );
    addSpans(queue, 5);
    await queue.flush();
    expect(queue.stats).toEqual({ exported: 0, dropped: 5 });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/OTLP export of 5 spans failed/);
    await queue.shutdown();
  });
});
