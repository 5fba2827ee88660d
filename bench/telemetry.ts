/**
 * The `portcullis+telemetry` target's helper: a local OTLP/HTTP receiver (in this process, on
 * the load side's CPU) that the gateway exports every span to, at 100% sampling. It reads and
 * drops the exports, counting them, so the figure is the gateway's full tracing cost: two spans
 * per request, their attributes and events, batching, JSON encoding and the HTTP export.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PreparedTarget, TargetContext } from './targets.ts';

/** Start the receiver; the gateway is configured with `telemetry.otlp` pointing at it. */
export async function prepareTelemetry(_context: TargetContext): Promise<PreparedTarget> {
  let exports = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    req.on('end', () => {
      exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    gatewayYaml: `telemetry: { otlp: 'http://127.0.0.1:${port}', sampleRatio: 1 }`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      console.log(`  (otlp receiver: ${exports} exports, ${(bytes / 1e6).toFixed(1)} MB)`);
    },
  };
}
