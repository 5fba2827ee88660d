import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startOidc, type TestOidc } from '../../../test/helpers/oidc.ts';
import { ConfigError, ProblemError } from '../../errors.ts';
import type { PolicyDeps, RequestContext } from '../../pipeline/types.ts';
import type { Route, Service } from '../../registry/types.ts';
import { type AuthConfig, authPolicy } from './auth.ts';

const SECRET = 'a-shared-hmac-secret-of-32-bytes!!';
const API_KEY = 'ci-key-0123456789abcdef';
const nowSec = () => Math.floor(Date.now() / 1000);

const hs256 = (claims: Record<string, unknown>) =>
  new SignJWT({ sub: 'user-1', exp: nowSec() + 300, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(SECRET));

// A minimal hand-built context (not a real FastifyRequest): auth reads only headers and query.
function ctxWith(headers: Record<string, string> = {}): RequestContext {
  return {
    req: { headers, query: {} },
    setUpstreamHeaders: {},
    removeUpstreamHeaders: new Set<string>(),
    decisions: [],
  } as unknown as RequestContext;
}

async function run(
  hook: (ctx: RequestContext) => unknown,
  ctx: RequestContext,
): Promise<ProblemError | undefined> {
  try {
    await hook(ctx);
    return undefined;
  } catch (err) {
    if (err instanceof ProblemError) return err;
    throw err;
  }
}

/** The ConfigError a load step throws (fails the test when it throws nothing or something else). */
async function configErrorOf(load: () => unknown): Promise<ConfigError> {
  try {
    await load();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('auth policy', () => {
  let dir: string;
  const depsFor = (doc: Record<string, unknown> = {}, operation: Record<string, unknown> = {}) =>
    ({
      baseDir: dir,
      route: { operationId: 'op', operation } as unknown as Route,
      service: { name: 'svc', document: { openapi: '3.1.0', ...doc } } as unknown as Service,
    }) as unknown as PolicyDeps;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-auth-'));
    await writeFile(join(dir, 'keys.yaml'), `ci: ${API_KEY}\n`);
    await writeFile(join(dir, 'users'), `alice:${bcrypt.hashSync('wonderland', 4)}\n`);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('several methods on one route: any of them', () => {
    const config: AuthConfig = {
      jwt: { secret: SECRET, audience: 'any', scopes: ['write'], forwardClaims: { 'x-user': 'sub' } },
      apiKey: { keysFile: 'keys.yaml' },
      forwardSubject: 'x-subject',
    };

    test('an API key alone passes, and forwarded-claim headers sent by the client are stripped', async () => {
      const hook = await authPolicy.create(config, depsFor());
      const ctx = ctxWith({ 'x-api-key': API_KEY, 'x-user': 'admin', 'x-subject': 'admin' });
      expect(await run(hook, ctx)).toBeUndefined();
      expect(ctx.identity).toEqual({ method: 'apiKey', subject: 'ci' });
      expect(ctx.setUpstreamHeaders).toEqual({ 'x-subject': 'ci' });
      expect([...ctx.removeUpstreamHeaders].sort()).toEqual(['x-subject', 'x-user']);
    });

    test('an HS256 token alone passes and its claims are forwarded', async () => {
      const hook = await authPolicy.create(config, depsFor());
      const ctx = ctxWith({ authorization: `Bearer ${await hs256({ scope: 'read write' })}` });
      expect(await run(hook, ctx)).toBeUndefined();
      expect(ctx.identity?.subject).toBe('user-1');
      expect(ctx.setUpstreamHeaders).toEqual({ 'x-user': 'user-1', 'x-subject': 'user-1' });
      expect(ctx.decisions).toEqual([
        { policy: 'auth', outcome: 'allow', detail: { method: 'jwt', subject: 'user-1' } },
      ]);
    });

    test('no credentials: 401 listing a challenge per method', async () => {
      const err = await run(await authPolicy.create(config, depsFor()), ctxWith());
      expect(err?.code).toBe('PC_UNAUTHORIZED');
      expect(err?.headers['www-authenticate']).toBe(
        'Bearer realm="portcullis", ApiKey realm="portcullis", header="x-api-key"',
      );
    });

    test('a valid token lacking a scope is 403 even when another method saw nothing', async () => {
      const err = await run(
        await authPolicy.create(config, depsFor()),
        ctxWith({ authorization: `Bearer ${await hs256({ scope: 'read' })}` }),
      );
      expect(err?.code).toBe('PC_FORBIDDEN');
      expect(err?.status).toBe(403);
      expect(err?.extensions).toEqual({ reason: 'insufficient_scope' });
      expect(err?.headers['www-authenticate']).toContain('error="insufficient_scope"');
    });

    test('an HS256 token signed with another secret is 401 invalid_token', async () => {
      const forged = await new SignJWT({ sub: 'x', exp: nowSec() + 60, scope: 'write' })
        .setProtectedHeader({ alg: 'HS256' })
        .sign(new TextEncoder().encode('another-secret-that-is-32-bytes-long'));
      const err = await run(
        await authPolicy.create(config, depsFor()),
        ctxWith({ authorization: `Bearer ${forged}` }),
      );
      expect(err?.code).toBe('PC_UNAUTHORIZED');
      expect(err?.extensions).toEqual({ reason: 'bad_signature' });
    });
  });

  test('claim conditions: a mismatching claim is 403 claim_mismatch; arrays match on any element', async () => {
    const hook = await authPolicy.create(
      {
        jwt: { secret: SECRET, audience: 'any', claims: { tenant: 'acme', 'realm.roles': ['admin', 'ops'] } },
      },
      depsFor(),
    );
    const ok = ctxWith({
      authorization: `Bearer ${await hs256({ tenant: 'acme', realm: { roles: ['dev', 'ops'] } })}`,
    });
    expect(await run(hook, ok)).toBeUndefined();
    const bad = ctxWith({
      authorization: `Bearer ${await hs256({ tenant: 'evil', realm: { roles: ['ops'] } })}`,
    });
    expect((await run(hook, bad))?.extensions).toEqual({ reason: 'claim_mismatch' });
  });

  test('stripCredentials removes Authorization and the API key header from the upstream request', async () => {
    const hook = await authPolicy.create(
      { jwt: { secret: SECRET, audience: 'any' }, apiKey: { keysFile: 'keys.yaml' }, stripCredentials: true },
      depsFor(),
    );
    const ctx = ctxWith({ 'x-api-key': API_KEY });
    await run(hook, ctx);
    expect([...ctx.removeUpstreamHeaders].sort()).toEqual(['authorization', 'x-api-key']);
  });

  test('by default the Authorization header is kept for the upstream', async () => {
    const hook = await authPolicy.create({ jwt: { secret: SECRET, audience: 'any' } }, depsFor());
    const ctx = ctxWith({ authorization: `Bearer ${await hs256({})}` });
    await run(hook, ctx);
    expect(ctx.removeUpstreamHeaders.has('authorization')).toBe(false);
  });

  const badConfigs: Array<{ name: string; config: AuthConfig }> = [
    { name: 'no method at all', config: {} },
    { name: 'HMAC secret shorter than 32 bytes', config: { jwt: { secret: 'short', audience: 'api' } } },
    {
      name: 'HS256 allowed against a JWKS',
      config: { jwt: { issuer: 'https://idp.test', audience: 'api', algorithms: ['HS256'] } },
    },
    {
      name: 'alg none allowed',
      config: { jwt: { jwksUri: 'https://idp.test/jwks', audience: 'api', algorithms: ['none'] } },
    },
    {
      name: 'a secret and a JWKS together',
      config: { jwt: { secret: SECRET, audience: 'api', jwksUri: 'https://idp.test/jwks' } },
    },
    { name: 'jwt without any key source', config: { jwt: { audience: 'x' } } },
    { name: 'missing users file', config: { basic: { usersFile: 'nope' } } },
    {
      name: 'jwt without audience (a config built in code; files fail the schema)',
      config: { jwt: { secret: SECRET } } as unknown as AuthConfig,
    },
  ];
  for (const c of badConfigs) {
    test(`config error at load: ${c.name}`, async () => {
      await expect(authPolicy.create(c.config, depsFor())).rejects.toBeInstanceOf(ConfigError);
    });
  }

  describe('audience: required, `any` only as an explicit opt-out', () => {
    test('a token for another audience is rejected with 401 bad_audience', async () => {
      const hook = await authPolicy.create({ jwt: { secret: SECRET, audience: 'orders-api' } }, depsFor());
      const ours = ctxWith({ authorization: `Bearer ${await hs256({ aud: 'orders-api' })}` });
      expect(await run(hook, ours)).toBeUndefined();
      const other = await run(
        hook,
        ctxWith({ authorization: `Bearer ${await hs256({ aud: 'billing-app' })}` }),
      );
      expect(other?.code).toBe('PC_UNAUTHORIZED');
      expect(other?.extensions).toEqual({ reason: 'bad_audience' });
      const none = await run(hook, ctxWith({ authorization: `Bearer ${await hs256({})}` }));
      expect(none?.extensions).toEqual({ reason: 'bad_audience' });
    });

    test('`audience: any` accepts every audience, and a token without one', async () => {
      const hook = await authPolicy.create({ jwt: { secret: SECRET, audience: 'any' } }, depsFor());
      for (const claims of [{ aud: 'billing-app' }, {}]) {
        expect(await run(hook, ctxWith({ authorization: `Bearer ${await hs256(claims)}` }))).toBeUndefined();
      }
    });

    test('the error names the audience field and the opt-out', async () => {
      const err = await configErrorOf(() =>
        authPolicy.create({ jwt: { issuer: 'https://idp.test' } } as unknown as AuthConfig, depsFor()),
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]?.path).toBe('/jwt/audience');
      expect((err as ConfigError).issues[0]?.message).toMatch(/audience: any/);
    });
  });

  describe('fromSpec: the spec security drives auth', () => {
    const components = {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
        key: { type: 'apiKey', in: 'header', name: 'X-Team-Key' },
        basicAuth: { type: 'http', scheme: 'basic' },
        cookieKey: { type: 'apiKey', in: 'cookie', name: 'k' },
      },
    };
    const config: AuthConfig = {
      fromSpec: true,
      jwt: { secret: SECRET, audience: 'any' },
      apiKey: { keysFile: 'keys.yaml' },
      basic: { usersFile: 'users' },
    };

    test("operation security wins over the document's; its scopes are required", async () => {
      const hook = await authPolicy.create(
        config,
        depsFor({ components, security: [{ key: [] }] }, { security: [{ bearer: ['pets:write'] }] }),
      );
      const scoped = ctxWith({ authorization: `Bearer ${await hs256({ scope: 'pets:write' })}` });
      expect(await run(hook, scoped)).toBeUndefined();
      const unscoped = ctxWith({ authorization: `Bearer ${await hs256({ scope: 'pets:read' })}` });
      expect((await run(hook, unscoped))?.code).toBe('PC_FORBIDDEN');
      // The document-level API key does not apply to this operation.
      expect((await run(hook, ctxWith({ 'x-team-key': API_KEY })))?.code).toBe('PC_UNAUTHORIZED');
    });

    test("the document's apiKey and basic schemes, with the scheme's own header name", async () => {
      const hook = await authPolicy.create(
        config,
        depsFor({ components, security: [{ key: [] }, { basicAuth: [] }] }),
      );
      const keyed = ctxWith({ 'x-team-key': API_KEY });
      expect(await run(hook, keyed)).toBeUndefined();
      expect(keyed.identity).toEqual({ method: 'apiKey', subject: 'ci' });
      const user = ctxWith({ authorization: `Basic ${Buffer.from('alice:wonderland').toString('base64')}` });
      expect(await run(hook, user)).toBeUndefined();
      expect(user.identity).toEqual({ method: 'basic', subject: 'alice' });
      expect((await run(hook, ctxWith({ 'x-api-key': API_KEY })))?.code).toBe('PC_UNAUTHORIZED');
    });

    test('schemes in one requirement are all required', async () => {
      const hook = await authPolicy.create(
        config,
        depsFor({ components, security: [{ bearer: [], key: [] }] }),
      );
      const both = ctxWith({ authorization: `Bearer ${await hs256({})}`, 'x-team-key': API_KEY });
      expect(await run(hook, both)).toBeUndefined();
      expect(both.identity?.method).toBe('jwt');
      expect((await run(hook, ctxWith({ 'x-team-key': API_KEY })))?.code).toBe('PC_UNAUTHORIZED');
    });

    test('an empty requirement allows anonymous calls, but bad credentials are still rejected', async () => {
      const hook = await authPolicy.create(config, depsFor({ components, security: [{ key: [] }, {}] }));
      const anonymous = ctxWith();
      expect(await run(hook, anonymous)).toBeUndefined();
      expect(anonymous.identity).toBeUndefined();
      expect((await run(hook, ctxWith({ 'x-team-key': 'wrong-key-0123456789' })))?.code).toBe(
        'PC_UNAUTHORIZED',
      );
    });

    test('a spec without security lets every call through', async () => {
      expect(await run(await authPolicy.create(config, depsFor({ components })), ctxWith())).toBeUndefined();
    });

    test('unsupported or unconfigured schemes are config errors', async () => {
      await expect(
        authPolicy.create(config, depsFor({ components, security: [{ cookieKey: [] }] })),
      ).rejects.toBeInstanceOf(ConfigError);
      await expect(
        authPolicy.create({ fromSpec: true }, depsFor({ components, security: [{ bearer: [] }] })),
      ).rejects.toBeInstanceOf(ConfigError);
      await expect(
        authPolicy.create(config, depsFor({ components, security: [{ undefinedScheme: [] }] })),
      ).rejects.toBeInstanceOf(ConfigError);
    });

    describe('openIdConnect with its URL (real provider)', () => {
      let oidc: TestOidc;
      beforeAll(async () => {
        oidc = await startOidc();
      });
      afterAll(async () => {
        await oidc?.close();
      });

      test('discovery from openIdConnectUrl; issuer derived from it; audience from the policy', async () => {
        const doc = {
          components: {
            securitySchemes: {
              oidc: {
                type: 'openIdConnect',
                openIdConnectUrl: `${oidc.issuer}/.well-known/openid-configuration`,
              },
            },
          },
          security: [{ oidc: ['orders:read'] }],
        };
        const hook = await authPolicy.create(
          { fromSpec: true, jwt: { audience: 'https://api.portcullis.test' } },
          depsFor(doc),
        );
        const ok = ctxWith({ authorization: `Bearer ${await oidc.token({ scope: 'orders:read' })}` });
        expect(await run(hook, ok)).toBeUndefined();
        expect(ok.identity?.subject).toBe('portcullis-test');
        const noScope = ctxWith({ authorization: `Bearer ${await oidc.token({ scope: 'pets:read' })}` });
        expect((await run(hook, noScope))?.code).toBe('PC_FORBIDDEN');
        const wrongIss = ctxWith({
          authorization: `Bearer ${await oidc.sign({ iss: 'https://evil.test', aud: 'https://api.portcullis.test', scope: 'orders:read', exp: nowSec() + 60 })}`,
        });
        expect((await run(hook, wrongIss))?.extensions).toEqual({ reason: 'bad_issuer' });
      });

      test('a real token the same IdP minted for another client (audience) is rejected with 401', async () => {
        const hook = await authPolicy.create(
          { fromSpec: true, jwt: { audience: 'https://api.portcullis.test' } },
          depsFor(oidcDoc()),
        );
        const other = await oidc.token({ scope: 'orders:read', resource: 'https://billing.portcullis.test' });
        const rejected = await run(hook, ctxWith({ authorization: `Bearer ${other}` }));
        expect(rejected?.code).toBe('PC_UNAUTHORIZED');
        expect(rejected?.extensions).toEqual({ reason: 'bad_audience' });
      });

      test('openIdConnect without a jwt audience is a config error; `audience: any` opts out', async () => {
        const err = await configErrorOf(() => authPolicy.create({ fromSpec: true }, depsFor(oidcDoc())));
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).issues[0]?.message).toMatch(/openIdConnect: set auth.jwt.audience/);
        const hook = await authPolicy.create(
          { fromSpec: true, jwt: { audience: 'any' } },
          depsFor(oidcDoc()),
        );
        const other = await oidc.token({ scope: 'orders:read', resource: 'https://billing.portcullis.test' });
        expect(await run(hook, ctxWith({ authorization: `Bearer ${other}` }))).toBeUndefined();
      });

      test('oauth2 needs the policy jwt (and so its audience)', async () => {
        const doc = {
          components: {
            securitySchemes: {
              oauth: {
                type: 'oauth2',
                flows: { clientCredentials: { tokenUrl: `${oidc.issuer}/token`, scopes: {} } },
              },
            },
          },
          security: [{ oauth: [] }],
        };
        await expect(authPolicy.create({ fromSpec: true }, depsFor(doc))).rejects.toBeInstanceOf(ConfigError);
        const hook = await authPolicy.create(
          { fromSpec: true, jwt: { issuer: oidc.issuer, audience: 'https://api.portcullis.test' } },
          depsFor(doc),
        );
        const ours = await oidc.token({ scope: 'orders:read' });
        expect(await run(hook, ctxWith({ authorization: `Bearer ${ours}` }))).toBeUndefined();
        const other = await oidc.token({ resource: 'https://billing.portcullis.test' });
        expect((await run(hook, ctxWith({ authorization: `Bearer ${other}` })))?.extensions).toEqual({
          reason: 'bad_audience',
        });
      });

      function oidcDoc() {
        return {
          components: {
            securitySchemes: {
              oidc: {
                type: 'openIdConnect',
                openIdConnectUrl: `${oidc.issuer}/.well-known/openid-configuration`,
              },
            },
          },
          security: [{ oidc: ['orders:read'] }],
        };
      }
    });
  });
});
