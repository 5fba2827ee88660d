// A tiny example upstream for docker-compose.yml (and tests): plain node:http, no dependencies.
// Run: NAME=a PORT=4001 node examples/upstream.js
//   GET /health        -> 200 ok
//   anything else      -> 200 JSON { upstream, method, path, requestId, traceparent }
// Prints one JSON line { "listening": <port> } once it accepts connections (PORT=0: any port).
import { createServer } from 'node:http';

const name = process.env.NAME ?? 'upstream';
const port = Number(process.env.PORT ?? 4001);

const server = createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    return;
  }
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({
      upstream: name,
      method: req.method,
      path: req.url,
      requestId: req.headers['x-request-id'] ?? null,
      traceparent: req.headers.traceparent ?? null,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});

server.listen(port, process.env.HOST ?? '0.0.0.0', () => {
  console.log(JSON.stringify({ listening: server.address().port, name }));
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
