import type { webcrypto } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { base64url, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { forge, startOidc, type TestOidc } from '../../../test/helpers/oidc.ts';
import { ProblemError } from '../../errors.ts';
import { buildChain, createContext, runChain } from '../../pipeline/chain.ts';
import type { PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import { sendProblem } from '../../problem.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type AuthConfig, authPolicy } from './auth.ts';
import { createJwtVerifier, jwtCacheStats } from './jwt.ts';

const AUDIENCE = 'https://api.portcullis.test';
const service = { name: 'svc', document: { openapi: '3.1.0' } } as unknown as Service;
const routeFor = (operationId: string) =>
  ({ service: 'svc', operationId, method: 'GET', specPath: '/x', operation: {} }) as unknown as Route;

/**
 * A real Fastify app running one auth chain in front of a stand-in upstream: `forwarded` lists
 * what would have been sent upstream (only requests the chain let through reach it).
 */
interface App {
  app: FastifyInstance;
  forwarded: Array<{ headers: Record<string, string>; removed: string[]; subject?: string }>;
  decisions: RequestContext['decisions'][];
}

async function appFor(config: AuthConfig, operationId = 'op'): Promise<App> {
  const route = routeFor(operationId);
  const deps = { route, service, logger: { info() {} } } as unknown as Omit<PolicyDeps, 'baseDir'>;
  const chain = await buildChain(
    [{ kind: authPolicy, config, rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' } }],
    deps,
  );
  const result: App = { app: Fastify(), forwarded: [], decisions: [] };
  result.app.get('/*', async (req, reply) => {
    const ctx = createContext(req, reply, route, service);
    try {
      await runChain(chain, ctx);
    } catch (err) {
      if (err instanceof ProblemError) return sendProblem(req, reply, err);
      throw err;
    }
    result.decisions.push(ctx.decisions);
    result.forwarded.push({
      headers: { ...ctx.setUpstreamHeaders },
      removed: [...ctx.removeUpstreamHeaders],
      subject: ctx.identity?.subject,
    });
    return { ok: true };
  });
  await result.app.ready();
  return result;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const nowSec = () => Math.floor(Date.now() / 1000);

describe('auth.jwt against a real OpenID provider', () => {
  let oidc: TestOidc;
  let app: App;
  let dryRun: App;
  let attacker: Server;
  let attackerHits = 0;
  let attackerJwksUrl: string;
  let attackerKey: webcrypto.CryptoKey;
  const attackerKid = 'attacker-key';

  beforeAll(async () => {
    oidc = await startOidc();
    const config: AuthConfig = {
      jwt: {
        issuer: oidc.issuer,
        audience: AUDIENCE,
        scopes: ['pets:write'],
        forwardClaims: { 'x-client-id': 'client_id', 'x-scopes': 'scope' },
      },
    };
    app = await appFor(config);
    dryRun = await appFor({ ...config, mode: 'dry-run' });
    // An attacker's JWKS, named by `jku` headers: the gateway must never fetch it.
    const pair = await generateKeyPair('RS256', { extractable: true });
    attackerKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: attackerKid, alg: 'RS256', use: 'sig' };
    attacker = createServer((_req, res) => {
      attackerHits++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    attackerJwksUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}/jwks`;
  });
  afterAll(async () => {
    await app?.app.close();
    await dryRun?.app.close();
    await oidc?.close();
    attacker?.closeAllConnections();
    await new Promise<void>((resolve) => (attacker ? attacker.close(() => resolve()) : resolve()));
  });

  const call = (a: App, headers: Record<string, string> = {}) =>
    a.app.inject({ method: 'GET', url: '/x', headers });

  test('a provider-issued token with the required scope passes; claims are forwarded, client copies stripped', async () => {
    const token = await oidc.token({ scope: 'pets:read pets:write' });
    const before = app.forwarded.length;
    const res = await call(app, { ...bearer(token), 'x-client-id': 'spoofed' });
    expect(res.statusCode).toBe(200);
    const seen = app.forwarded[before];
    expect(seen?.subject).toBe('portcullis-test');
    expect(seen?.headers).toEqual({ 'x-client-id': 'portcullis-test', 'x-scopes': 'pets:read pets:write' });
    expect(seen?.removed).toEqual(expect.arrayContaining(['x-client-id', 'x-scopes']));
    expect(app.decisions.at(-1)).toContainEqual({
      policy: 'auth',
      outcome: 'allow',
      detail: { method: 'jwt', subject: 'portcullis-test' },
    });
  });

  test('no token: 401 with a Bearer challenge and nothing forwarded', async () => {
    const before = app.forwarded.length;
    const res = await call(app);
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="portcullis"');
    expect(res.json()).toMatchObject({ code: 'PC_UNAUTHORIZED', reason: 'missing_credentials' });
    expect(app.forwarded.length).toBe(before);
  });

  const rejected: Array<{ name: string; token: () => Promise<string>; status: number; reason: string }> = [
    {
      name: 'expired token',
      token: () =>
        oidc.sign({
          iss: oidc.issuer,
          aud: AUDIENCE,
          sub: 'c',
          scope: 'pets:write',
          iat: nowSec() - 600,
          exp: nowSec() - 60,
        }),
      status: 401,
      reason: 'expired',
    },
    {
      name: 'token not valid yet (nbf beyond the tolerance)',
      token: () =>
        oidc.sign({
          iss: oidc.issuer,
          aud: AUDIENCE,
          sub: 'c',
          scope: 'pets:write',
          nbf: nowSec() + 120,
          exp: nowSec() + 600,
        }),
      status: 401,
      reason: 'not_yet_valid',
    },
    {
      name: 'wrong issuer (signed with the real key)',
      token: () =>
        oidc.sign({
          iss: 'https://evil.example',
          aud: AUDIENCE,
          sub: 'c',
          scope: 'pets:write',
          exp: nowSec() + 600,
        }),
      status: 401,
      reason: 'bad_issuer',
    },
    {
      name: 'wrong audience (real token for another resource)',
      token: () => oidc.token({ scope: 'pets:write', resource: 'https://other.portcullis.test' }),
      status: 401,
      reason: 'bad_audience',
    },
    {
      name: 'missing scope',
      token: () => oidc.token({ scope: 'pets:read' }),
      status: 403,
      reason: 'insufficient_scope',
    },
    {
      name: 'alg none',
      token: async () =>
        forge.algNone({
          iss: oidc.issuer,
          aud: AUDIENCE,
          sub: 'c',
          scope: 'pets:write',
          exp: nowSec() + 600,
        }),
      status: 401,
      reason: 'alg_not_allowed',
    },
    {
      name: 'HS256 signed with the public JWK as the HMAC secret',
      token: () =>
        forge.hmacWithPublicKey(
          oidc,
          { iss: oidc.issuer, aud: AUDIENCE, sub: 'c', scope: 'pets:write', exp: nowSec() + 600 },
          'jwk',
        ),
      status: 401,
      reason: 'alg_not_allowed',
    },
    {
      name: 'HS256 signed with the public key PEM as the HMAC secret',
      token: () =>
        forge.hmacWithPublicKey(
          oidc,
          { iss: oidc.issuer, aud: AUDIENCE, sub: 'c', scope: 'pets:write', exp: nowSec() + 600 },
          'pem',
        ),
      status: 401,
      reason: 'alg_not_allowed',
    },
    {
      name: 'tampered payload (scope widened after signing)',
      token: async () =>
        forge.tamperedPayload(await oidc.token({ scope: 'pets:read' }), { scope: 'pets:read pets:write' }),
      status: 401,
      reason: 'bad_signature',
    },
    {
      name: 'unknown kid (a key the provider never published)',
      token: () =>
        new SignJWT({ iss: oidc.issuer, aud: AUDIENCE, sub: 'c', scope: 'pets:write', exp: nowSec() + 600 })
          .setProtectedHeader({ alg: 'RS256', kid: attackerKid })
          .sign(attackerKey),
      status: 401,
      reason: 'unknown_key',
    },
    {
      name: 'jku header pointing at an attacker JWKS is ignored',
      token: () =>
        new SignJWT({ iss: oidc.issuer, aud: AUDIENCE, sub: 'c', scope: 'pets:write', exp: nowSec() + 600 })
          .setProtectedHeader({ alg: 'RS256', kid: attackerKid, jku: attackerJwksUrl })
          .sign(attackerKey),
      status: 401,
      reason: 'unknown_key',
    },
  ];

  for (const c of rejected) {
    test(`rejects: ${c.name} → ${c.status} ${c.reason}, upstream receives nothing`, async () => {
      const token = await c.token();
      const before = app.forwarded.length;
      const res = await call(app, bearer(token));
      expect(res.statusCode).toBe(c.status);
      expect(res.json()).toMatchObject({
        code: c.status === 401 ? 'PC_UNAUTHORIZED' : 'PC_FORBIDDEN',
        reason: c.reason,
      });
      const challenge = res.headers['www-authenticate'];
      expect(challenge).toContain(c.status === 401 ? 'error="invalid_token"' : 'error="insufficient_scope"');
      if (c.status === 403) expect(challenge).toContain('scope="pets:write"');
      expect(res.body).not.toContain(token);
      expect(app.forwarded.length).toBe(before);
    });
  }

  test('the attacker JWKS named by jku was never fetched', () => {
    expect(attackerHits).toBe(0);
  });

  test('unknown kids refetch the JWKS at most once per cooldown', async () => {
    const forge = (kid: string) =>
      new SignJWT({ iss: oidc.issuer, aud: AUDIENCE, sub: 'c', exp: nowSec() + 600 })
        .setProtectedHeader({ alg: 'RS256', kid })
        .sign(attackerKey);
    await call(app, bearer(await forge('kid-a')));
    const fetches = oidc.jwksFetches();
    for (const kid of ['kid-b', 'kid-c', 'kid-d']) {
      expect((await call(app, bearer(await forge(kid)))).statusCode).toBe(401);
    }
    expect(oidc.jwksFetches()).toBe(fetches);
  });

  test('dry-run lets an invalid token through and records the would-deny', async () => {
    const before = dryRun.forwarded.length;
    const res = await call(dryRun, bearer(await oidc.token({ scope: 'pets:read' })));
    expect(res.statusCode).toBe(200);
    expect(dryRun.forwarded.length).toBe(before + 1);
    expect(dryRun.forwarded.at(-1)?.subject).toBeUndefined();
    expect(dryRun.decisions.at(-1)).toContainEqual(
      expect.objectContaining({
        policy: 'auth',
        outcome: 'would-deny',
        detail: { reason: 'insufficient_scope' },
      }),
    );
  });
});

describe('auth.jwt key rotation and sharing', () => {
  let oidc: TestOidc;
  const apps: App[] = [];
  beforeAll(async () => {
    oidc = await startOidc();
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.app.close()));
    await oidc?.close();
  });

  test('routes naming one issuer share one discovery and one JWKS fetch', async () => {
    const config: AuthConfig = { jwt: { issuer: oidc.issuer, audience: AUDIENCE } };
    for (const op of ['a', 'b', 'c']) apps.push(await appFor(config, op));
    const token = await oidc.token();
    for (const a of apps)
      expect((await a.app.inject({ url: '/x', headers: bearer(token) })).statusCode).toBe(200);
    expect(oidc.jwksFetches()).toBe(2);
  });

  test('the provider rotates its keys: new tokens keep working without a restart, old ones until dropped', async () => {
    const a = apps[0] as App;
    const oldToken = await oidc.token();
    expect((await a.app.inject({ url: '/x', headers: bearer(oldToken) })).statusCode).toBe(200);
    const key = await oidc.rotate();
    const newToken = await oidc.token();
    expect(JSON.parse(new TextDecoder().decode(base64url.decode(newToken.split('.')[0] as string))).kid).toBe(
      key.kid,
    );
    expect((await a.app.inject({ url: '/x', headers: bearer(newToken) })).statusCode).toBe(200);
    expect((await a.app.inject({ url: '/x', headers: bearer(oldToken) })).statusCode).toBe(200);
  });

  test('after a rotation that drops the old key, tokens signed by a dropped key fail once refetched', async () => {
    // A route of its own with no cooldown, so the second rotation is picked up at once.
    const a = await appFor({
      jwt: { issuer: oidc.issuer, audience: AUDIENCE, jwksCooldownMs: 0, cacheSize: 0 },
    });
    apps.push(a);
    const before = await oidc.token();
    expect((await a.app.inject({ url: '/x', headers: bearer(before) })).statusCode).toBe(200);
    await oidc.rotate({ dropOld: true });
    const after = await oidc.token();
    expect((await a.app.inject({ url: '/x', headers: bearer(after) })).statusCode).toBe(200);
    const res = await a.app.inject({ url: '/x', headers: bearer(before) });
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ reason: 'unknown_key' });
  });
});

describe('auth.jwt verified-token cache', () => {
  let oidc: TestOidc;
  const apps: App[] = [];
  beforeAll(async () => {
    oidc = await startOidc();
  });
  afterAll(async () => {
    await Promise.all(apps.map((a) => a.app.close()));
    await oidc?.close();
  });
  const open = async (config: AuthConfig, op: string) => {
    const a = await appFor(config, op);
    apps.push(a);
    return a;
  };
  const get = (a: App, token: string) => a.app.inject({ url: '/x', headers: bearer(token) });

  test('a repeated token is answered from the cache', async () => {
    const a = await open({ jwt: { issuer: oidc.issuer, audience: AUDIENCE } }, 'hits');
    const token = await oidc.token();
    expect((await get(a, token)).statusCode).toBe(200);
    const hits = jwtCacheStats.hits;
    const misses = jwtCacheStats.misses;
    expect((await get(a, token)).statusCode).toBe(200);
    expect((await get(a, token)).statusCode).toBe(200);
    expect(jwtCacheStats.hits).toBe(hits + 2);
    expect(jwtCacheStats.misses).toBe(misses);
  });

  test('a cached token whose key a rotation dropped is refused once the JWKS is refetched', async () => {
    // No cooldown: the first token with the new kid refetches the key set at once.
    const a = await open({ jwt: { issuer: oidc.issuer, audience: AUDIENCE, jwksCooldownMs: 0 } }, 'rotation');
    const before = await oidc.token();
    expect((await get(a, before)).statusCode).toBe(200);
    expect((await get(a, before)).statusCode).toBe(200);
    // A rotation that keeps the old key published keeps the cached token (same kid, same key).
    await oidc.rotate();
    const kept = await oidc.token();
    expect((await get(a, kept)).statusCode).toBe(200);
    const hits = jwtCacheStats.hits;
    expect((await get(a, before)).statusCode).toBe(200);
    expect(jwtCacheStats.hits).toBe(hits + 1);
    // Now the old key leaves the set: the next refetch (here: the new kid) invalidates the entry.
    await oidc.rotate({ dropOld: true });
    const after = await oidc.token();
    expect((await get(a, after)).statusCode).toBe(200);
    const res = await get(a, before);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ reason: 'unknown_key' });
    // The token signed by the key kept one rotation ago is gone with it too.
    expect((await get(a, kept)).statusCode).toBe(401);
  });

  test('a key set past jwksMaxAgeMs is refetched before a cached token is accepted', async () => {
    const own = await startOidc();
    let now = Date.now();
    const verifier = createJwtVerifier(
      { issuer: own.issuer, audience: AUDIENCE, jwksMaxAgeMs: 60_000, jwksCooldownMs: 0 },
      { now: () => now },
    );
    try {
      const token = await own.token({ ttl: 3600 });
      expect((await verifier.verify(token)).ok).toBe(true);
      expect(verifier.cached(token)).toMatchObject({ ok: true });
      await own.rotate({ dropOld: true });
      // Within maxAge the held keys are used: the cache answers.
      expect(verifier.cached(token)).toMatchObject({ ok: true });
      now += 61_000;
      // Past it the cache does not answer; verify refetches and finds the key gone.
      expect(verifier.cached(token)).toBeUndefined();
      expect(await verifier.verify(token)).toMatchObject({ ok: false, reason: 'unknown_key' });
      expect(verifier.cached(token)).toBeUndefined();
    } finally {
      await own.close();
    }
  });

  test("a token cached for route A's audience is refused on route B with another audience", async () => {
    const other = 'https://other.portcullis.test';
    const a = await open({ jwt: { issuer: oidc.issuer, audience: AUDIENCE } }, 'aud-a');
    const b = await open({ jwt: { issuer: oidc.issuer, audience: other } }, 'aud-b');
    const token = await oidc.token();
    expect((await get(a, token)).statusCode).toBe(200);
    expect((await get(a, token)).statusCode).toBe(200);
    const res = await get(b, token);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ reason: 'bad_audience' });
    // And the other way round: B's token is cached on B, refused on A.
    const forB = await oidc.token({ resource: other });
    expect((await get(b, forB)).statusCode).toBe(200);
    expect((await get(a, forB)).statusCode).toBe(401);
  });

  test("a cached token is still held to each route's scopes and claims", async () => {
    const base = { issuer: oidc.issuer, audience: AUDIENCE };
    const open1 = await open({ jwt: base }, 'scopes-none');
    const admin = await open({ jwt: { ...base, scopes: ['admin'] } }, 'scopes-admin');
    const client = await open({ jwt: { ...base, claims: { client_id: 'someone-else' } } }, 'claims');
    const token = await oidc.token({ scope: 'pets:read' });
    expect((await get(open1, token)).statusCode).toBe(200);
    const hits = jwtCacheStats.hits;
    const denied = await get(admin, token);
    expect(denied.statusCode).toBe(403);
    expect(denied.json()).toMatchObject({ reason: 'insufficient_scope' });
    expect((await get(client, token)).json()).toMatchObject({ reason: 'claim_mismatch' });
    // Both answered from the one cache the three routes share.
    expect(jwtCacheStats.hits).toBe(hits + 2);
  });

  test('an expired cached token is refused, to the millisecond of exp + clock tolerance', async () => {
    let now = Date.now();
    const verifier = createJwtVerifier(
      { issuer: oidc.issuer, audience: AUDIENCE, clockToleranceSec: 5 },
      { now: () => now },
    );
    const token = await oidc.token({ ttl: 60 });
    const exp = JSON.parse(new TextDecoder().decode(base64url.decode(token.split('.')[1] as string))).exp;
    expect((await verifier.verify(token)).ok).toBe(true);
    now = (exp + 5) * 1000 - 1;
    expect(verifier.cached(token)).toMatchObject({ ok: true });
    expect((await verifier.verify(token)).ok).toBe(true);
    now = (exp + 5) * 1000;
    expect(verifier.cached(token)).toBeUndefined();
    expect(await verifier.verify(token)).toMatchObject({ ok: false, reason: 'expired' });
  });

  test('bounded by cacheSize: the least recently used token goes first', async () => {
    const verifier = createJwtVerifier({ issuer: oidc.issuer, audience: AUDIENCE, cacheSize: 3 });
    const [t1, t2, t3, t4] = [await oidc.token(), await oidc.token(), await oidc.token(), await oidc.token()];
    for (const t of [t1, t2, t3]) expect((await verifier.verify(t as string)).ok).toBe(true);
    // t1 is used again: t2 is now the least recently used.
    expect(verifier.cached(t1 as string)).toMatchObject({ ok: true });
    expect((await verifier.verify(t4 as string)).ok).toBe(true);
    expect(verifier.cached(t2 as string)).toBeUndefined();
    for (const t of [t1, t3, t4]) expect(verifier.cached(t as string)).toMatchObject({ ok: true });
  });

  test('bounded by cacheMaxBytes (twice the token length plus 512 per entry)', async () => {
    const tokens = [await oidc.token(), await oidc.token(), await oidc.token()];
    const size = Math.max(...tokens.map((t) => 2 * t.length + 512));
    const verifier = createJwtVerifier({
      issuer: oidc.issuer,
      audience: AUDIENCE,
      cacheMaxBytes: 2 * size + 1,
    });
    for (const t of tokens) expect((await verifier.verify(t)).ok).toBe(true);
    expect(verifier.cached(tokens[0] as string)).toBeUndefined();
    expect(verifier.cached(tokens[1] as string)).toMatchObject({ ok: true });
    expect(verifier.cached(tokens[2] as string)).toMatchObject({ ok: true });
    // A bound below one entry caches nothing.
    const none = createJwtVerifier({ issuer: oidc.issuer, audience: AUDIENCE, cacheMaxBytes: 100 });
    expect((await none.verify(tokens[0] as string)).ok).toBe(true);
    expect(none.cached(tokens[0] as string)).toBeUndefined();
  });
});

describe('auth.jwt when the IdP is down (onJwksError)', () => {
  test('deny (default): no keys could ever be fetched → 401 jwks_unavailable', async () => {
    const oidc = await startOidc();
    const token = await oidc.token();
    await oidc.close();
    const a = await appFor({ jwt: { issuer: oidc.issuer, audience: AUDIENCE, fetchTimeoutMs: 2000 } });
    try {
      const res = await a.app.inject({ url: '/x', headers: bearer(token) });
      expect(res.statusCode).toBe(401);
      expect(res.json()).toMatchObject({ code: 'PC_UNAUTHORIZED', reason: 'jwks_unavailable' });
      expect(res.headers['www-authenticate']).toContain('error="invalid_token"');
    } finally {
      await a.app.close();
    }
  });

  test('deny rejects once the key set is older than jwksMaxAgeMs; use-cached keeps verifying', async () => {
    const oidc = await startOidc();
    let now = Date.now();
    const clock = () => now;
    const base = { issuer: oidc.issuer, audience: AUDIENCE, jwksMaxAgeMs: 60_000 };
    const deny = createJwtVerifier(base, { now: clock });
    const cached = createJwtVerifier({ ...base, onJwksError: 'use-cached', cacheSize: 0 }, { now: clock });
    try {
      const token = await oidc.token({ ttl: 3600 });
      const other = await oidc.token({ ttl: 3600, scope: 'pets:read' });
      expect((await deny.verify(token)).ok).toBe(true);
      expect((await cached.verify(token)).ok).toBe(true);
      await oidc.close();
      now += 61_000;
      // `deny` verifies `other` for the first time, so its token cache cannot answer.
      expect(await deny.verify(other)).toMatchObject({ ok: false, reason: 'jwks_unavailable' });
      expect(await cached.verify(other)).toMatchObject({ ok: true });
      // Nor does it for `token`, cached before: past jwksMaxAgeMs it is verified (and refused) again.
      expect(deny.cached(token)).toBeUndefined();
      expect(await deny.verify(token)).toMatchObject({ ok: false, reason: 'jwks_unavailable' });
    } finally {
      await oidc.close().catch(() => {});
    }
  });

  test('a token ending like a cached one (same signature, tampered payload) is verified, not answered from the cache', async () => {
    const oidc = await startOidc();
    const verifier = createJwtVerifier({ issuer: oidc.issuer, audience: AUDIENCE });
    try {
      const token = await oidc.token({ scope: 'pets:read' });
      expect((await verifier.verify(token)).ok).toBe(true);
      expect(verifier.cached(token)).toMatchObject({ ok: true });
      const tampered = forge.tamperedPayload(token, { scope: 'pets:read pets:write' });
      expect(tampered.slice(-64)).toBe(token.slice(-64));
      expect(verifier.cached(tampered)).toBeUndefined();
      expect(await verifier.verify(tampered)).toMatchObject({ ok: false });
      expect(verifier.cached(token)).toMatchObject({ ok: true });
    } finally {
      await oidc.close();
    }
  });

  test('a cached verified token is not accepted past its exp', async () => {
    const oidc = await startOidc();
    let now = Date.now();
    const verifier = createJwtVerifier({ issuer: oidc.issuer, audience: AUDIENCE }, { now: () => now });
    try {
      const token = await oidc.token({ ttl: 60 });
      expect((await verifier.verify(token)).ok).toBe(true);
      now += 60_000 + 5_000 + 1_000;
      expect(await verifier.verify(token)).toMatchObject({ ok: false, reason: 'expired' });
    } finally {
      await oidc.close();
    }
  });
});
