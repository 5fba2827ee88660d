/**
 * The floor a Node proxy can reach: plain node:http in front of one undici Pool, no framework,
 * no routing beyond stripping the `/bench` prefix, hop-by-hop headers dropped both ways, bodies
 * streamed. What a team would write by hand for speed; Portcullis with its defaults is judged
 * against it (issue 14).
 *
 * Usage: node bench/plain-undici.ts <upstream-url>
 * Listens on 127.0.0.1, port 0, and prints one line `{"port":<n>}` when ready. Exits when its
 * stdin closes, so it cannot outlive the orchestrator.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { Writable } from 'node:stream';
import { Pool } from 'undici';

const upstream = process.argv[2];
if (!upstream) {
  console.error('usage: node bench/plain-undici.ts <upstream-url>');
  process.exit(2);
}
const PREFIX = '/bench';
/** RFC 9110 §7.6.1 connection-specific fields: never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

const pool = new Pool(upstream, { connections: 128 });

function forwardable(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>) {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  const path = url.startsWith(PREFIX) ? url.slice(PREFIX.length) || '/' : url;
  const hasBody =
    req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    {
      path,
      method: req.method as 'GET',
      headers: forwardable(req.headers),
      body: hasBody ? req : null,
    },
    ({ statusCode, headers }) => {
      res.writeHead(statusCode, forwardable(headers));
      return res as unknown as Writable;
    },
    (err) => {
      if (!err) return;
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway');
      else res.destroy();
    },
  );
});
server.keepAliveTimeout = 72_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
