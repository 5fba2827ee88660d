import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a test upstream saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  bodyBytes: number;
  body: string;
}

export interface TestUpstream {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  name: string;
  seen: SeenRequest[];
  server: Server;
  /** TCP connections accepted so far. */
  connections(): number;
  /** Make /health answer this status (default 200). */
  setHealth(status: number): void;
  close(): Promise<void>;
}

export interface UpstreamOptions {
  name?: string;
  /** Fixed port (to restart a killed upstream on the same address); default 0. */
  port?: number;
  /** Keep only the first 64 KiB of bodies in `seen` (streaming tests send hundreds of MB). */
  keepBodies?: boolean;
  /** Delay every answer (except /health) by this many ms; default 0. */
  delayMs?: number;
}

/**
 * A real HTTP upstream on 127.0.0.1. Routes:
 * - `/health` → health status
 * - `/slow?ms=N` → answers after N ms
 * - `/bytes?n=N` → streams N bytes of 'x' (chunked)
 * - anything else → 200 JSON `{ upstream, method, url, headers, bodyBytes }`; the body is counted
 *   as it streams (never buffered whole) and echoed in `seen`.
 */
export async function startUpstream(opts: UpstreamOptions = {}): Promise<TestUpstream> {
  const name = opts.name ?? 'upstream';
  const seen: SeenRequest[] = [];
  let health = 200;
  let connections = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.endsWith('/health')) {
      res.writeHead(health, { 'content-type': 'text/plain' }).end(health === 200 ? 'ok' : 'down');
      return;
    }
    let bytes = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      if (opts.keepBodies !== false && bytes <= 65536) chunks.push(c);
    });
    req.on('end', () => {
      const entry = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        bodyBytes: bytes,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(entry);
      if (url.pathname.endsWith('/slow')) {
        const ms = Number(url.searchParams.get('ms') ?? '100');
        setTimeout(() => reply(), ms);
        return;
      }
      if (url.pathname.endsWith('/bytes')) {
        streamBytes(Number(url.searchParams.get('n') ?? '0'));
        return;
      }
      if (opts.delayMs) setTimeout(reply, opts.delayMs);
      else reply();
      function reply() {
        if (res.destroyed) return;
        const body = JSON.stringify({
          upstream: name,
          method: entry.method,
          url: entry.url,
          headers: req.headers,
          bodyBytes: bytes,
        });
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          server: 'test-upstream/1.0',
          'x-powered-by': 'node',
          'x-upstream': name,
        });
        res.end(body);
      }
    });
    function streamBytes(n: number) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-upstream': name });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let left = n;
      const pump = () => {
        while (left > 0) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= piece.length;
          if (!res.write(piece)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    }
  });
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    name,
    seen,
    server,
    connections: () => connections,
    setHealth(status) {
      health = status;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
