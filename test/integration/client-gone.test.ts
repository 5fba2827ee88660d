import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';

describe('a client that goes away while its request is upstream', () => {
  // A real upstream that never answers: it only reports each request, and when its connection ends.
  const arrived: Array<() => void> = [];
  const ended: Array<() => void> = [];
  const held: IncomingMessage[] = [];
  const upstream = createServer((req) => {
    held.push(req);
    arrived.shift()?.();
    req.socket.once('close', () => ended.shift()?.());
  });
  let gw: TestGateway;

  beforeAll(async () => {
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const { port } = upstream.address() as AddressInfo;
    // The upstream timeout is far away: only the client's leaving can end the attempt in time.
    gw = await startGateway({
      svc: spec({ basePath: '/svc', upstreams: [`http://127.0.0.1:${port}`], extra: { timeoutMs: 20_000 } }),
    });
  });
  afterAll(async () => {
    await gw?.close();
    for (const req of held) req.socket.destroy();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  });

  it('aborts the upstream request at once (its connection closes), not at the timeout', async () => {
    const reached = new Promise<void>((resolve) => arrived.push(resolve));
    const upstreamClosed = new Promise<void>((resolve) => ended.push(resolve));
    const { port } = new URL(gw.url);
    const client = connect(Number(port), '127.0.0.1');
    client.on('error', () => undefined);
    client.write('GET /svc/items/1 HTTP/1.1\r\nHost: x\r\n\r\n');
    await reached;
    const left = Date.now();
    client.destroy();
    const inTime = await Promise.race([
      upstreamClosed.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 3000).unref()),
    ]);
    expect(inTime).toBe(true);
    expect(Date.now() - left).toBeLessThan(3000);
  });
});
