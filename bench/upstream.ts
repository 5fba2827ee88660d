/**
 * The bench upstream: a plain node:http server, as cheap as a server can be, so that the
 * figures measure the proxy in front of it. Started by run.ts in its own process.
 *
 *   GET  /hello  a fixed ~100-byte JSON body (any query string)
 *   POST /echo   the request body back, with its content-type
 *
 * Listens on 127.0.0.1, port 0, and prints one line `{"port":<n>}` when ready. Exits when its
 * stdin closes, so it cannot outlive the orchestrator even if that one is killed hard.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const HELLO_BODY = Buffer.from(
  JSON.stringify({ message: 'hello from the portcullis bench upstream', service: 'bench', ok: true, n: 42 }),
);
const HELLO_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(HELLO_BODY.length),
};
// Longer than any proxy's idle pool timeout, so the upstream never closes a pooled socket mid-run.
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

const server = createServer((req, res) => {
  // A query string is the gateway's business (validate); the upstream answers /hello alike.
  if (req.method === 'GET' && (req.url === '/hello' || req.url?.startsWith('/hello?'))) {
    res.writeHead(200, HELLO_HEADERS);
    res.end(HELLO_BODY);
    return;
  }
  if (req.method === 'POST' && req.url === '/echo') {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(200, {
        'content-type': req.headers['content-type'] ?? 'application/octet-stream',
        'content-length': String(body.length),
      });
      res.end(body);
    });
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain', 'content-length': '9' });
  res.end('not found');
});
server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
