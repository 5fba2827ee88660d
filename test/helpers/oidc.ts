import type { webcrypto } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  base64url,
  calculateJwkThumbprint,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWSHeaderParameters,
  type JWTPayload,
  SignJWT,
} from 'jose';
import Provider from 'oidc-provider';

/** Client registered in every test provider (client_credentials only). */
export const OIDC_CLIENT = { id: 'portcullis-test', secret: 'portcullis-test-secret' } as const;
/** Resource (the JWT `aud`) tokens are issued for when `token()` names none. */
export const OIDC_DEFAULT_AUDIENCE = 'https://api.portcullis.test';
/** Scopes the provider grants on any resource. */
export const OIDC_SCOPES = ['pets:read', 'pets:write', 'orders:read', 'admin'] as const;

export interface TokenOptions {
  /** Space-separated scopes to request; default none. */
  scope?: string;
  /** Resource indicator, becomes `aud`; default OIDC_DEFAULT_AUDIENCE. */
  resource?: string;
  /** Access token lifetime in seconds; default 300. */
  ttl?: number;
}

export interface SigningKey {
  kid: string;
  privateJwk: JWK;
  publicJwk: JWK;
}

export interface TestOidc {
  /** `http://127.0.0.1:<port>`: discovery at `/.well-known/openid-configuration`. */
  issuer: string;
  /** JWKS URI the provider advertises. */
  jwksUri: string;
  /** A real client_credentials access token (RS256 JWT) from the token endpoint. */
  token(opts?: TokenOptions): Promise<string>;
  /**
   * Rotate the signing key: a new key signs from now on; the old one stays published unless
   * `dropOld`. Returns the new key.
   */
  rotate(opts?: { dropOld?: boolean }): Promise<SigningKey>;
  /** The key that signs new tokens (to forge tokens the provider would not issue). */
  currentKey(): SigningKey;
  /** Sign arbitrary claims with the current key (RS256, its kid), e.g. a wrong `iss`. */
  sign(claims: JWTPayload, header?: Partial<JWSHeaderParameters>): Promise<string>;
  /** JWKS / discovery requests the provider answered so far. */
  jwksFetches(): number;
  close(): Promise<void>;
}

async function newKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return {
    kid,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' },
    publicJwk: { ...publicJwk, kid, alg: 'RS256', use: 'sig' },
  };
}

function buildProvider(issuer: string, keys: SigningKey[], ttl: () => number): Provider {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: OIDC_CLIENT.id,
        client_secret: OIDC_CLIENT.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys: keys.map((k) => k.privateJwk) },
    scopes: ['openid', ...OIDC_SCOPES],
    ttl: { ClientCredentials: ttl },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // JWT access tokens are only issued for a resource server (RFC 8707 resource indicators).
      resourceIndicators: {
        enabled: true,
        defaultResource: () => OIDC_DEFAULT_AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          scope: OIDC_SCOPES.join(' '),
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
  // The provider logs every error it answers; tests provoke some on purpose.
  provider.on('server_error', () => {});
  return provider;
}

/**
 * Start a real OpenID provider (oidc-provider) on 127.0.0.1, port 0, with a client_credentials
 * client issuing RS256 JWT access tokens. Rotation swaps the provider behind the same listener,
 * so issuer, discovery and JWKS URLs stay the same while the keys change.
 */
export async function startOidc(): Promise<TestOidc> {
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  let fetches = 0;
  // The token endpoint takes no lifetime parameter: token() sets this, one request at a time.
  let ttl = 300;
  let queue: Promise<unknown> = Promise.resolve();
  const server = createServer((req, res) => {
    if (req.url?.startsWith('/jwks') || req.url?.startsWith('/.well-known/')) fetches++;
    if (!handler) {
      res.writeHead(503).end();
      return;
    }
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let keys = [await newKey()];
  const install = () => {
    handler = buildProvider(issuer, keys, () => ttl).callback();
  };
  install();

  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    token(opts = {}) {
      const issue = async () => {
        ttl = opts.ttl ?? 300;
        return requestToken(issuer, opts);
      };
      const next = queue.then(issue, issue);
      queue = next.catch(() => {});
      return next;
    },
    async rotate(opts = {}) {
      const key = await newKey();
      keys = opts.dropOld ? [key] : [key, ...keys];
      install();
      return key;
    },
    currentKey: () => keys[0] as SigningKey,
    async sign(claims, header = {}) {
      const key = keys[0] as SigningKey;
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, ...header })
        .sign(await importJWK(key.privateJwk, 'RS256'));
    },
    jwksFetches: () => fetches,
    async close() {
      handler = undefined;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function requestToken(issuer: string, opts: TokenOptions): Promise<string> {
  const body = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: OIDC_CLIENT.id,
    client_secret: OIDC_CLIENT.secret,
    resource: opts.resource ?? OIDC_DEFAULT_AUDIENCE,
  });
  if (opts.scope) body.set('scope', opts.scope);
  const res = await fetch(`${issuer}/token`, { method: 'POST', body });
  const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
  if (!res.ok || !json.access_token) {
    throw new Error(`token endpoint answered ${res.status}: ${json.error} ${json.error_description}`);
  }
  return json.access_token;
}

/**
 * Tokens an attacker forges against a JWKS-backed verifier, shared by the policy-level and the
 * whole-gateway JWT tests. Each keeps otherwise valid claims so only the forgery is rejected.
 */
export const forge = {
  /** An unsigned token (`alg: none`). */
  algNone(claims: JWTPayload): string {
    const enc = (o: unknown) => base64url.encode(JSON.stringify(o));
    return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(claims)}.`;
  },

  /** HS256 with the provider's public key as the HMAC secret (the classic key-confusion attack). */
  async hmacWithPublicKey(oidc: TestOidc, claims: JWTPayload, form: 'jwk' | 'pem'): Promise<string> {
    const { publicJwk, kid } = oidc.currentKey();
    const secret =
      form === 'jwk'
        ? JSON.stringify(publicJwk)
        : await exportSPKI(
            (await importJWK(publicJwk, 'RS256', { extractable: true })) as webcrypto.CryptoKey,
          );
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid })
      .sign(new TextEncoder().encode(secret));
  },

  /** A real token with one signature character changed. */
  tamperedSignature(token: string): string {
    const [h, p, s] = token.split('.') as [string, string, string];
    return `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
  },

  /** A real token whose payload was edited after signing. */
  tamperedPayload(token: string, patch: JWTPayload): string {
    const [h, p, s] = token.split('.') as [string, string, string];
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload;
    return `${h}.${base64url.encode(JSON.stringify({ ...claims, ...patch }))}.${s}`;
  },
};
