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
import { createJwtVerifier } from './jwt.ts';

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
