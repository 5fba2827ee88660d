/**
 * Password guessing vs everyone else: one gateway, a basic-auth route (bcrypt cost 10, the
 * htpasswd -B default) and a policy-free route of the same service. GUESSERS clients send wrong
 * passwords back to back for DURATION_MS while one client GETs the free route one request at a
 * time; the free route's latency (mean, p50/p99/max) is the figure. Everything on 127.0.0.1,
 * bounded in time. Run: `node bench/auth-guessing.ts` (the pinned Node); GUESSERS, DURATION_MS,
 * RATE_LIMIT (add a `key: ip` limit of that many per minute to the guessed route) tune it.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { spec, startGateway } from '../test/helpers/gateway.ts';
import { startUpstream } from '../test/helpers/upstream.ts';

/** bcrypt (cost 10) of "correct horse". */
const HASH = '$2b$10$2eEp.UrfIrwK./cJWE9F0u4AMbroMvZcx2p0iWJvuePyUfW2evHwm';
const GUESSERS = Number(process.env.GUESSERS ?? 20);
const DURATION_MS = Number(process.env.DURATION_MS ?? 5_000);

if (process.env.GUESS_URL) {
  // The guessing clients (child process): wrong passwords back to back until GUESS_UNTIL.
  const url = process.env.GUESS_URL;
  const until = Number(process.env.GUESS_UNTIL);
  const statuses: Record<string, number> = {};
  let guesses = 0;
  const guesser = async (g: number) => {
    for (let i = 0; Date.now() < until; i++) {
      const authorization = `Basic ${Buffer.from(`alice:guess-${g}-${i}`).toString('base64')}`;
      const res = await fetch(url, { headers: { authorization } });
      await res.arrayBuffer();
      guesses++;
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: GUESSERS }, (_, g) => guesser(g)));
  process.send?.({ guesses, statuses });
  process.exit(0);
}

const upstream = await startUpstream();
const gw = await startGateway(
  { svc: spec({ basePath: '/svc', upstreams: [upstream.url] }) },
  {},
  {
    files: { 'policies/users.htpasswd': `alice:${HASH}\n` },
    policies: {
      auth: [
        {
          match: { service: 'svc', operations: ['listItems'] },
          auth: { basic: { usersFile: 'users.htpasswd' } },
          // RATE_LIMIT=n: the route also has a `key: ip` limit of n per minute.
          ...(process.env.RATE_LIMIT
            ? { rateLimit: { limit: Number(process.env.RATE_LIMIT), window: '1m', key: 'ip' } }
            : {}),
        },
      ],
    },
  },
);

const end = Date.now() + DURATION_MS;
// The guessers run in a child process, so their client work does not share the gateway's event loop.
const child = fork(fileURLToPath(import.meta.url), [], {
  env: { ...process.env, GUESS_URL: `${gw.url}/svc/items`, GUESS_UNTIL: String(end) },
});
const guessed = new Promise<{ guesses: number; statuses: Record<string, number> }>((resolve) =>
  child.once('message', (m) => resolve(m as { guesses: number; statuses: Record<string, number> })),
);
const latencies: number[] = [];
const prober = async () => {
  await new Promise((r) => setTimeout(r, 200));
  while (Date.now() < end) {
    const t = performance.now();
    const res = await fetch(`${gw.url}/svc/items/1`);
    await res.arrayBuffer();
    latencies.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 10));
  }
};
await prober();
const { guesses, statuses } = await guessed;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  (latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(1);
console.log(
  JSON.stringify({
    guessers: GUESSERS,
    guessesPerSecond: Math.round(guesses / (DURATION_MS / 1000)),
    statuses,
    probe: {
      n: latencies.length,
      meanMs: (latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length)).toFixed(1),
      p50ms: at(0.5),
      p99ms: at(0.99),
      maxMs: at(1),
    },
  }),
);
await gw.close();
await upstream.close();
