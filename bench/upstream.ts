/**
 * The bench upstream: a plain node:http server, as cheap as a server can be, so that the
 * figures measure the proxy in front of it. Started by run.ts in its own process.
 *
 *   GET  /hello  a fixed ~100-byte JSON body (any query string)
 *   GET  /json10k  a 10 KB JSON list (34 product records), for compression on against off
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
/** A 10 KB JSON document: the kind of list answer an API compresses (repetitive keys, varied values). */
const JSON10K_BODY = Buffer.from(
  JSON.stringify(
    Array.from({ length: 34 }, (_, i) => ({
      id: 1000 + i,
      sku: `KB-${(2041 + i * 37) % 9973}`,
      name: `Mechanical keyboard model ${i} (${['red', 'brown', 'blue'][i % 3]} switches)`,
      price: { amount: 49 + ((i * 13) % 150), currency: 'EUR' },
      stock: (i * 17) % 42,
      tags: ['keyboard', i % 2 === 0 ? 'wired' : 'wireless', `layout-${['uk', 'us', 'de', 'fr'][i % 4]}`],
      updatedAt: new Date(Date.UTC(2026, 0, 1 + i, i % 24, (i * 7) % 60)).toISOString(),
      description: `A compact board with hot-swap sockets, PBT keycaps and ${60 + (i % 5) * 5}% layout.`,
    })),
  ),
);
const JSON10K_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(JSON10K_BODY.length),
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
  if (req.method === 'GET' && req.url === '/json10k') {
    res.writeHead(200, JSON10K_HEADERS);
    res.end(JSON10K_BODY);
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
