/**
 * WebSockets and SIGTERM, on a real `portcullis start` process: every open socket gets a close
 * frame 1001 ("going away") from the gateway, the client on its side and the upstream on its side,
 * within the grace period, even with a message in flight; then the process exits 0. With
 * `workers: 2` the sockets are spread over two worker processes, each drained by the primary.
 */
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { spec } from '../helpers/gateway.ts';
import { startWsUpstream, type WsUpstream } from '../helpers/ws-upstream.ts';

function connect(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

describe('WebSockets on SIGTERM', () => {
  let up: WsUpstream;
  let gw: CliGateway | undefined;

  beforeAll(async () => {
    up = await startWsUpstream();
  });
  afterAll(async () => {
    if (gw && gw.child.exitCode === null && gw.child.signalCode === null) await gw.stop();
    await up?.close();
  });

  it.each([1, 2])(
    'sends close 1001 to every client and its upstream, then exits 0 (workers: %i)',
    async (workers) => {
      gw = await startCliGateway({
        specs: { svc: spec({ basePath: '/svc', upstreams: [up.url], operations: { 'GET /echo': 'echo' } }) },
        config: { workers, limits: { shutdownGraceMs: 8000 } },
      });
      const upstreamSides: WebSocket[] = [];
      const clients: WebSocket[] = [];
      for (let i = 0; i < 4; i++) {
        const opened = up.nextConnection();
        clients.push(await connect(`${gw.url}/svc/echo`));
        upstreamSides.push(await opened);
      }
      // One of them in the middle of an exchange: a message echoed just before the signal.
      const first = clients[0] as WebSocket;
      const echoed = once(first, 'message');
      first.send(Buffer.alloc(256 * 1024, 7));
      const [message] = (await echoed) as [Buffer];
      expect(message.length).toBe(256 * 1024);

      const clientCloses = clients.map((ws) =>
        once(ws, 'close').then(([code, reason]) => ({ code, reason: String(reason) })),
      );
      const upstreamCloses = upstreamSides.map((ws) => once(ws, 'close').then(([code]) => code));
      const exited = gw.stop(); // SIGTERM
      expect(await Promise.all(clientCloses)).toEqual(
        clients.map(() => ({ code: 1001, reason: 'gateway shutting down' })),
      );
      expect(await Promise.all(upstreamCloses)).toEqual(clients.map(() => 1001));
      expect(await exited).toBe(0);
      expect(gw.logs.filter((l) => l.msg === 'websocket closed' && l.end === 'shutdown')).toHaveLength(4);
    },
  );
});
