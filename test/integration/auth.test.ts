/**
 * Issue 3, auth through the whole gateway: policies/*.yaml attach `auth` to routes of real
 * services; tokens come from a real OpenID provider (oidc-provider: discovery, JWKS, RS256 access
 * tokens); every rejection is a problem+json with a WWW-Authenticate challenge and the upstream
 * receives nothing. API keys, basic and `fromSpec` (the spec's own security) briefly.
 */
import type { webcrypto } from 'node:crypto';
import { base64url, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { forge, OIDC_DEFAULT_AUDIENCE, startOidc, type TestOidc } from '../helpers/oidc.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

const AUDIENCE = OIDC_DEFAULT_AUDIENCE;
/** bcrypt of "open sesame" (cost 4: the test needs no real work factor). */
const ALICE_HASH = '$2b$04$MDf/fngxrZi5mk8x8SDIs./Jt3Fcj1cwBd3Yxc/ue6pXEUJCyazP6';
const API_KEY = 'k-test-0123456789abcdef';

const nowSec = () => Math.floor(Date.now() / 1000);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const basic = (user: string, password: string) => ({
  authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
});

/** A spec whose operations declare security: the document requires bearer pets:read. */
function securedSpec(upstream: string): Record<string, unknown> {
  const doc = spec({
    basePath: '/secured',
    upstreams: [upstream],
    operations: { 'GET /items': 'listItems', 'POST /items': 'createItem', 'GET /items/{id}': 'getItem' },
  }) as { paths: Record<string, Record<string, Record<string, unknown>>> } & Record<string, unknown>;
  doc.security = [{ bearer: ['pets:read'] }];
  doc.components = {
    securitySchemes: {
      bearer: { type: 'http', scheme: 'bearer' },
      key: { type: 'apiKey', in: 'header', name: 'x-api-key' },
    },
  };
  (doc.paths['/items']?.post as Record<string, unknown>).security = [{ key: [] }];
  (doc.paths['/items/{id}']?.get as Record<string, unknown>).security = [];
  return doc;
}

describe('auth policies through the gateway', () => {
  let oidc: TestOidc;
  let upstream: TestUpstream;
  let gw: TestGateway;
  let attackerKey: webcrypto.CryptoKey;

  beforeAll(async () => {
    oidc = await startOidc();
    upstream = await startUpstream({ name: 'u1' });
    attackerKey = (await generateKeyPair('RS256')).privateKey;
    gw = await startGateway(
      {
        jwt: spec({ basePath: '/jwt', upstreams: [upstream.url] }),
        keyed: spec({ basePath: '/keyed', upstreams: [upstream.url] }),
        basic: spec({ basePath: '/basic', upstreams: [upstream.url] }),
        secured: securedSpec(upstream.url),
      },
      {},
      {
        files: {
          'policies/secrets/keys.yaml': `ci-robot: ${API_KEY}\n`,
          'policies/secrets/users.htpasswd': `# test users\nalice:${ALICE_HASH}\n`,
        },
        policies: {
          auth: [
            {
              match: { service: 'jwt' },
              auth: {
                jwt: {
                  issuer: oidc.issuer,
                  audience: AUDIENCE,
                  scopes: ['pets:write'],
                  forwardClaims: { 'x-client-id': 'client_id', 'x-scopes': 'scope' },
                },
                forwardSubject: 'x-subject',
              },
            },
            {
              match: { service: 'keyed' },
              auth: {
                apiKey: { keysFile: 'secrets/keys.yaml' },
                stripCredentials: true,
                forwardSubject: 'x-caller',
              },
            },
            { match: { service: 'basic' }, auth: { basic: { usersFile: 'secrets/users.htpasswd' } } },
            {
              match: { service: 'secured' },
              auth: {
                fromSpec: true,
                jwt: { issuer: oidc.issuer, audience: AUDIENCE },
                apiKey: { keysFile: 'secrets/keys.yaml' },
              },
            },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
  });

  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${gw.url}${path}`, { headers });

  test('a provider-issued token with the scope passes: claims and subject forwarded, client copies replaced', async () => {
    const token = await oidc.token({ scope: 'pets:read pets:write' });
    const before = upstream.seen.length;
    const res = await get('/jwt/items', {
      ...bearer(token),
      'x-client-id': 'spoofed',
      'x-subject': 'admin',
      'x-scopes': 'admin',
    });
    expect(res.status).toBe(200);
    expect(upstream.seen.length).toBe(before + 1);
    const seen = upstream.seen.at(-1);
    expect(seen?.url).toBe('/items');
    expect(seen?.headers['x-client-id']).toBe('portcullis-test');
    expect(seen?.headers['x-subject']).toBe('portcullis-test');
    expect(seen?.headers['x-scopes']).toBe('pets:read pets:write');
    // Not stripped unless stripCredentials: the upstream may verify the token itself.
    expect(seen?.headers.authorization).toBe(`Bearer ${token}`);
  });

  test('no token: 401 Bearer challenge, upstream receives nothing', async () => {
    const before = upstream.seen.length;
    const res = await get('/jwt/items', { 'x-subject': 'admin' });
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="portcullis"/);
    expect(await res.json()).toMatchObject({ status: 401, code: 'PC_UNAUTHORIZED' });
    expect(upstream.seen.length).toBe(before);
  });

  const forged = (claims: Record<string, unknown>) =>
    oidc.sign({
      iss: oidc.issuer,
      aud: AUDIENCE,
      sub: 'c',
      scope: 'pets:write',
      exp: nowSec() + 600,
      ...claims,
    });

  const rejected: Array<{ name: string; token: () => Promise<string>; status: 401 | 403; reason: string }> = [
    {
      name: 'expired',
      token: () => forged({ iat: nowSec() - 600, exp: nowSec() - 60 }),
      status: 401,
      reason: 'expired',
    },
    {
      name: 'wrong iss',
      token: () => forged({ iss: 'https://evil.example' }),
      status: 401,
      reason: 'bad_issuer',
    },
    {
      name: 'wrong aud (a real token for another resource)',
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
      name: 'HS256 signed with the public key (PEM) as HMAC secret',
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
      name: 'tampered signature',
      token: async () => forge.tamperedSignature(await oidc.token({ scope: 'pets:write' })),
      status: 401,
      reason: 'bad_signature',
    },
    {
      name: 'tampered payload (scope widened after signing)',
      token: async () =>
        forge.tamperedPayload(await oidc.token({ scope: 'pets:read' }), { scope: 'pets:read pets:write' }),
      status: 401,
      reason: 'bad_signature',
    },
    {
      name: 'unknown kid',
      token: () =>
        new SignJWT({ iss: oidc.issuer, aud: AUDIENCE, sub: 'c', scope: 'pets:write', exp: nowSec() + 600 })
          .setProtectedHeader({ alg: 'RS256', kid: 'never-published' })
          .sign(attackerKey),
      status: 401,
      reason: 'unknown_key',
    },
  ];

  for (const c of rejected) {
    test(`rejects ${c.name}: ${c.status} problem+json, challenge, upstream receives nothing`, async () => {
      const token = await c.token();
      const before = upstream.seen.length;
      const res = await get('/jwt/items', bearer(token));
      expect(res.status).toBe(c.status);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const challenge = res.headers.get('www-authenticate') ?? '';
      if (c.status === 401) expect(challenge).toMatch(/^Bearer .*error="invalid_token"/);
      else expect(challenge).toMatch(/^Bearer .*error="insufficient_scope".*scope="pets:write"/);
      const body = await res.text();
      expect(JSON.parse(body)).toMatchObject({
        status: c.status,
        code: c.status === 401 ? 'PC_UNAUTHORIZED' : 'PC_FORBIDDEN',
        reason: c.reason,
      });
      expect(body).not.toContain(token);
      expect(upstream.seen.length).toBe(before);
    });
  }

  test('apiKey: the right key passes (name forwarded, key stripped); a wrong or missing key is 401', async () => {
    const before = upstream.seen.length;
    const ok = await get('/keyed/items', { 'x-api-key': API_KEY, 'x-caller': 'root' });
    expect(ok.status).toBe(200);
    const seen = upstream.seen.at(-1);
    expect(seen?.headers['x-caller']).toBe('ci-robot');
    expect(seen?.headers['x-api-key']).toBeUndefined();
    for (const headers of [{ 'x-api-key': `${API_KEY}x` }, {}] as Array<Record<string, string>>) {
      const res = await get('/keyed/items', headers);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBeTruthy();
      expect(await res.json()).toMatchObject({ code: 'PC_UNAUTHORIZED' });
    }
    expect(upstream.seen.length).toBe(before + 1);
  });

  test('basic: the right password passes; a wrong one is 401 with a Basic challenge', async () => {
    const before = upstream.seen.length;
    expect((await get('/basic/items', basic('alice', 'open sesame'))).status).toBe(200);
    const res = await get('/basic/items', basic('alice', 'guess'));
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="portcullis"/);
    expect(upstream.seen.length).toBe(before + 1);
  });

  test("fromSpec: the spec's security decides per operation (bearer with scope, apiKey, anonymous)", async () => {
    const before = upstream.seen.length;
    // Document-level requirement: bearer with pets:read.
    const none = await get('/secured/items');
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const weak = await get('/secured/items', bearer(await oidc.token({ scope: 'orders:read' })));
    expect(weak.status).toBe(403);
    expect(weak.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    expect(upstream.seen.length).toBe(before);
    expect((await get('/secured/items', bearer(await oidc.token({ scope: 'pets:read' })))).status).toBe(200);
    // createItem requires the API key instead; a token does not do.
    const post = (headers: Record<string, string>) =>
      fetch(`${gw.url}/secured/items`, { method: 'POST', headers, body: '{}' });
    expect((await post(bearer(await oidc.token({ scope: 'pets:read' })))).status).toBe(401);
    expect((await post({ 'x-api-key': API_KEY })).status).toBe(200);
    // getItem declares `security: []`: anonymous calls pass.
    expect((await get('/secured/items/7')).status).toBe(200);
    expect(upstream.seen.length).toBe(before + 3);
  });
});

describe('JWT key rotation through the gateway', () => {
  let oidc: TestOidc;
  let upstream: TestUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    oidc = await startOidc();
    upstream = await startUpstream();
    gw = await startGateway(
      { svc: spec({ upstreams: [upstream.url] }) },
      {},
      {
        policies: {
          auth: [{ match: { service: 'svc' }, auth: { jwt: { issuer: oidc.issuer, audience: AUDIENCE } } }],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.close();
    await oidc?.close();
  });

  test('the provider rotates its keys: new tokens keep working without a restart', async () => {
    const call = (token: string) => fetch(`${gw.url}/svc/items`, { headers: bearer(token) });
    const oldToken = await oidc.token();
    expect((await call(oldToken)).status).toBe(200);
    const fetchesBefore = oidc.jwksFetches();
    const key = await oidc.rotate();
    const newToken = await oidc.token();
    const header = JSON.parse(new TextDecoder().decode(base64url.decode(newToken.split('.')[0] as string)));
    expect(header.kid).toBe(key.kid);
    expect((await call(newToken)).status).toBe(200);
    // The new kid made the gateway refetch the provider's JWKS (no restart, no reload).
    expect(oidc.jwksFetches()).toBeGreaterThan(fetchesBefore);
    expect((await call(oldToken)).status).toBe(200);
    expect(upstream.seen.length).toBe(3);
  });
});
