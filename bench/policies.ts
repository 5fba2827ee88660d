/**
 * Setup of the `portcullis+policies` target: the bench route with the full chain, auth.jwt,
 * rateLimit (Redis), ipFilter, validate and waf (paranoia 1), so the table shows what a realistic
 * policy chain costs per request.
 *
 * - JWT without an IdP: an RS256 key pair generated here, its JWKS served by a tiny node:http
 *   server in this (orchestrator) process on 127.0.0.1, one long-lived token sent by the load as
 *   `Authorization: Bearer`. The gateway fetches the JWKS once (it caches keys and tokens).
 * - Redis: a redis-server of its own, pinned to the load CPU with the upstream, no persistence,
 *   stopped by PID when the target stops.
 * - The limit is far above what the run can send (10^9 per minute), so every request pays for
 *   a real Redis decision and none is refused: the figure is the cost, not 429s.
 * - validate checks the `name` query parameter of GET /hello against the spec.
 * - BENCH_POLICIES_OMIT=<kind,...> (e.g. `waf,rateLimit`) leaves those policies out of the chain,
 *   to attribute the chain's cost per policy (`ipFilter`, `auth`, `rateLimit`, `validate`, `waf`).
 */
import { generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { type Child, freePort, hasExited, startProcess, stopChild } from './processes.ts';
import type { PreparedTarget, TargetContext } from './targets.ts';

/** The binary: REDIS_SERVER overrides, as in the tests. */
const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
/** How long redis-server gets to say it is ready. */
const REDIS_READY_TIMEOUT_MS = 10_000;
const REDIS_READY_LINE = 'Ready to accept connections';
const ISSUER = 'https://issuer.bench.invalid';
const AUDIENCE = 'portcullis-bench';
/** Per minute: never reached in a bench run, so nothing is refused. */
const RATE_LIMIT = 1_000_000_000;
/** The policies of the chain, as the YAML lines of one rule; BENCH_POLICIES_OMIT drops some. */
const POLICY_KINDS = ['ipFilter', 'auth', 'rateLimit', 'validate', 'waf'] as const;

/** The kinds BENCH_POLICIES_OMIT names; an unknown name is an error, not a silently full chain. */
function omittedKinds(): Set<string> {
  const names = (process.env.BENCH_POLICIES_OMIT ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!(POLICY_KINDS as readonly string[]).includes(name))
      throw new Error(`BENCH_POLICIES_OMIT: unknown policy ${name} (one of ${POLICY_KINDS.join(', ')})`);
  }
  return new Set(names);
}

/** Start Redis and the JWKS server, sign the token; the policy file and the load's headers. */
export async function preparePolicies(context: TargetContext): Promise<PreparedTarget> {
  const redis = await startRedisServer(context.loadCpu);
  let jwks: Awaited<ReturnType<typeof serveJwks>> | undefined;
  try {
    jwks = await serveJwks();
    const lines: Record<(typeof POLICY_KINDS)[number], string> = {
      ipFilter: `  ipFilter: { allow: [127.0.0.0/8, '::1'] }`,
      auth: `  auth:\n    jwt: { jwksUri: '${jwks.url}', issuer: '${ISSUER}', audience: ${AUDIENCE} }`,
      rateLimit: `  rateLimit: { limit: ${RATE_LIMIT}, window: 1m, key: subject }`,
      validate: '  validate: {}',
      waf: '  waf: { mode: block, paranoia: 1 }',
    };
    const omit = omittedKinds();
    const kept = POLICY_KINDS.filter((kind) => !omit.has(kind)).map((kind) => `${lines[kind]}\n`);
    if (kept.length === 0) throw new Error('BENCH_POLICIES_OMIT: leaves no policy');
    const policy = `- match: { service: bench, operations: [hello] }\n${kept.join('')}`;
    const server = jwks;
    return {
      policies: { 'bench-policies.yaml': policy },
      gatewayYaml: `state: { redis: 'redis://127.0.0.1:${redis.port}' }`,
      request: { headers: { authorization: `Bearer ${jwks.token}` } },
      async stop() {
        await server.close();
        await stopChild(redis.child);
      },
    };
  } catch (err) {
    await jwks?.close();
    await stopChild(redis.child);
    throw err;
  }
}

/** redis-server on a free port, pinned to `cpu`; resolves once it logged it is ready. */
export async function startRedisServer(cpu: number | null): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const child = startProcess('redis-server', REDIS_SERVER, args, cpu);
  const deadline = Date.now() + REDIS_READY_TIMEOUT_MS;
  // redis-server says nothing machine-readable; its log line is the readiness event.
  while (!child.outputTail().includes(REDIS_READY_LINE)) {
    if (hasExited(child) || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`${REDIS_SERVER} on port ${port} did not start:\n${child.outputTail()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { child, port };
}

/** An RS256 key, its JWKS on 127.0.0.1, and a token signed with it valid for a day. */
export async function serveJwks(): Promise<{ url: string; token: string; close(): Promise<void> }> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  const body = JSON.stringify({
    keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }],
  });
  const server = createServer((req, res) => {
    if (req.url === '/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const token = await signBenchToken(privateKey, kid);
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The bench's token: RS256, the claims the policy checks, valid for a day. */
function signBenchToken(privateKey: KeyObject, kid: string): Promise<string> {
  return new SignJWT({ scope: 'bench' })
    .setProtectedHeader({ alg: 'RS256', kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject('bench-client')
    .setIssuedAt()
    .setExpirationTime('1d')
    .sign(privateKey);
}

/**
 * The control of `portcullis+policies`: the very same request (query string and a Bearer token of
 * the same size and shape) through a gateway without policies, so the ratio of the two is the cost
 * of the policies alone.
 */
export async function prepareSameRequest(): Promise<PreparedTarget> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const token = await signBenchToken(privateKey, randomUUID());
  return { request: { headers: { authorization: `Bearer ${token}` } }, async stop() {} };
}
