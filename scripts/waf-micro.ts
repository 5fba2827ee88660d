/**
 * Micro-benchmark of the WAF engine: CPU µs per request for typical small requests (no HTTP, no
 * Fastify — the engine's own cost, to compare with the per-request budget of the proxy). Each case
 * repeats one request, as a client does: repeated header values are served by the verdict cache,
 * query and body values are judged every time.
 *
 *   npx node scripts/waf-micro.ts
 */
import { compileEngine } from '../src/policies/waf/engine.ts';
import type { RequestParts } from '../src/policies/waf/types.ts';

const ITERATIONS = 100_000;
/** Rounds per case; the fastest is reported (the machine is shared, slower rounds are noise). */
const ROUNDS = 5;
const headers = {
  host: 'api.example.com',
  'user-agent':
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
  accept: 'application/json',
  'content-type': 'application/json',
  'content-length': '83',
  authorization: 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig',
  cookie: 'session=3f2a9c; theme=dark',
};

const cases: Record<string, RequestParts> = {
  'GET, no query': {
    method: 'GET',
    url: '/pets/42',
    headers: { host: 'api.example.com', 'user-agent': 'curl/8.5.0' },
  },
  'GET, 3 query params': {
    method: 'GET',
    url: '/pets?limit=20&offset=40&sort=-created_at',
    headers: { host: 'api.example.com', 'user-agent': 'curl/8.5.0' },
  },
  'POST, small JSON (5 fields)': {
    method: 'POST',
    url: '/orders',
    headers,
    body: Buffer.from(
      JSON.stringify({
        sku: 'A-100',
        qty: 2,
        note: "Leave at the door, it's fine",
        email: 'a.b@example.com',
        gift: true,
      }),
    ),
  },
  'POST, browser, small JSON (bench)': {
    method: 'POST',
    url: '/bench/echo',
    headers: {
      host: '127.0.0.1:8080',
      connection: 'keep-alive',
      'content-type': 'application/json',
      'content-length': '126',
      'user-agent':
        'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
      accept: 'application/json, text/plain, */*',
      'accept-language': 'en-GB,en;q=0.9',
      origin: 'https://shop.example.com',
      referer: 'https://shop.example.com/cart',
      'sec-fetch-mode': 'cors',
      'sec-fetch-site': 'same-site',
    },
    body: Buffer.from(
      JSON.stringify({
        sku: 'KB-2041',
        quantity: 2,
        note: "Please leave it at the door, it's fine",
        email: 'jane.doe@example.com',
        giftWrap: false,
      }),
    ),
  },
  'POST, 1 KiB JSON with prose': {
    method: 'POST',
    url: '/reviews',
    headers,
    body: Buffer.from(
      JSON.stringify({
        title: 'Great product',
        text: "I've used it for a month; it's solid & the support team (Sam) was quick. Would buy again — 5/5. ".repeat(
          10,
        ),
        tags: ['home', 'kitchen', 'gift'],
        author: { name: "Dana O'Neil", email: 'dana@example.org' },
      }),
    ),
  },
};

for (const paranoia of [1, 4]) {
  const engine = compileEngine({ paranoia });
  for (const [name, parts] of Object.entries(cases)) {
    for (let i = 0; i < 20_000; i++) engine.inspect(parts); // warm up the JIT
    let us = Number.POSITIVE_INFINITY;
    let score = 0;
    for (let round = 0; round < ROUNDS; round++) {
      score = 0;
      // CPU time, not wall time: other processes on a shared machine do not inflate it.
      const t0 = process.cpuUsage();
      for (let i = 0; i < ITERATIONS; i++) score += engine.inspect(parts).score;
      const cpu = process.cpuUsage(t0);
      us = Math.min(us, (cpu.user + cpu.system) / ITERATIONS);
    }
    console.log(
      `paranoia ${paranoia}  ${name.padEnd(36)} ${us.toFixed(2).padStart(7)} CPU µs/request${score ? `  (score ${score / ITERATIONS})` : ''}`,
    );
  }
}
