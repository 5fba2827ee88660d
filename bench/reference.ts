/**
 * The reference proxy: plain Fastify + @fastify/http-proxy with default options, what a team
 * would write by hand instead of a gateway. Portcullis is judged against it.
 *
 * Usage: node bench/reference.ts <upstream-url>
 * Listens on 127.0.0.1, port 0, and prints one line `{"port":<n>}` when ready. Exits when its
 * stdin closes, so it cannot outlive the orchestrator.
 */
import fastifyHttpProxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const upstream = process.argv[2];
if (!upstream) {
  console.error('usage: node bench/reference.ts <upstream-url>');
  process.exit(2);
}

const app = Fastify({ logger: false });
await app.register(fastifyHttpProxy, { upstream, prefix: '/bench' });
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : 0;
process.stdout.write(`${JSON.stringify({ port })}\n`);

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
