/**
 * A real WebSocket upstream (the `ws` package) on 127.0.0.1, port 0. By path (any prefix):
 * - `.../echo`: echoes every message as it came (text as text, binary as binary); a close from
 *   the client is recorded in `closes` and answered with the same code and reason;
 * - `.../close?code=N&reason=R`: closes at once with that code and reason;
 * - `.../refuse`: answers the upgrade 403 (plain HTTP, a JSON body);
 * - `.../plain`: answers 200 without upgrading;
 * - `.../bad-accept`: answers 101 with a Sec-WebSocket-Accept that is not the key's;
 * - `.../bad-protocol`: answers 101 choosing a subprotocol the client did not offer.
 * Every upgrade request's headers are kept in `seen`; `connections` counts open sockets.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';

export interface WsUpstream {
  url: string;
  /** Upgrade requests received: path and headers. */
  seen: Array<{ url: string; headers: IncomingHttpHeaders }>;
  /** Close frames received from the (gateway's) client side: code and reason. */
  closes: Array<{ code: number; reason: string }>;
  /** Sockets open now. */
  readonly open: number;
  /** Resolves when the next socket opens. */
  nextConnection(): Promise<WebSocket>;
  close(): Promise<void>;
}

export async function startWsUpstream(opts: { protocols?: string[] } = {}): Promise<WsUpstream> {
  const seen: WsUpstream['seen'] = [];
  const closes: WsUpstream['closes'] = [];
  const sockets = new Set<WebSocket>();
  const raw = new Set<Duplex>();
  let waiting: Array<(ws: WebSocket) => void> = [];
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: true,
    maxPayload: 64 * 1024 * 1024,
    handleProtocols: (offered) => opts.protocols?.find((p) => offered.has(p)) ?? false,
  });
  // Every 101 names one of its own fields hop-by-hop (Connection: Upgrade, X-Hop) and carries one
  // end-to-end field: a proxy must drop the first and pass the second.
  wss.on('headers', (headers) => {
    const i = headers.findIndex((h) => /^connection:/i.test(h));
    if (i >= 0) headers[i] = 'Connection: Upgrade, X-Hop';
    headers.push('X-Hop: upstream-only', 'X-Upstream-Note: kept');
  });
  const server: Server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`plain ${req.url}`);
  });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.endsWith('/refuse')) {
      const body = JSON.stringify({ refused: true });
      socket.end(
        `HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
      );
      return;
    }
    if (url.pathname.endsWith('/plain')) {
      socket.end(
        'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain',
      );
      return;
    }
    if (url.pathname.endsWith('/bad-accept') || url.pathname.endsWith('/bad-protocol')) {
      const key = String(req.headers['sec-websocket-key']);
      const accept = url.pathname.endsWith('/bad-accept')
        ? createHash('sha1').update('not the key').digest('base64')
        : createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const protocol = url.pathname.endsWith('/bad-protocol') ? 'sec-websocket-protocol: evil\r\n' : '';
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n${protocol}\r\n`,
      );
      socket.on('error', () => socket.destroy());
      raw.add(socket);
      socket.once('close', () => raw.delete(socket));
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.once('close', () => sockets.delete(ws));
      const resolvers = waiting;
      waiting = [];
      for (const r of resolvers) r(ws);
      if (url.pathname.endsWith('/close')) {
        ws.close(Number(url.searchParams.get('code') ?? 1000), url.searchParams.get('reason') ?? '');
        return;
      }
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('close', (code, reason) => closes.push({ code, reason: reason.toString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    closes,
    get open() {
      return sockets.size;
    },
    nextConnection: () => new Promise((resolve) => waiting.push(resolve)),
    async close() {
      for (const ws of sockets) ws.terminate();
      for (const socket of raw) socket.destroy();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
