import { createHash } from 'node:crypto';
import { type Static, Type } from '@sinclair/typebox';
import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import { lazyModule } from '../../lazy.ts';
import type { RequestContext } from '../../pipeline/types.ts';
import { type HeldKeys, JwksClient, JwksUnavailableError, sharedJwksClient } from './jwks.ts';
import { type AuthMethod, type AuthOutcome, configError, quote } from './method.ts';

/** jose, loaded when the first JWT verifier is built. */
const jose = lazyModule<typeof import('jose')>('jose');

/** Algorithms accepted against a JWKS when `algorithms` is not set: asymmetric only. */
export const DEFAULT_ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
const HMAC_ALGORITHMS = new Set(['HS256', 'HS384', 'HS512']);
/** RFC 7518 §3.2: an HMAC key must be at least as long as the hash output. */
const MIN_SECRET_BYTES = 32;
/** `audience: any`: the explicit opt-out of the `aud` check. */
export const ANY_AUDIENCE = 'any';
/** Default bound of the verified-token cache (per verifier): tokens... */
const DEFAULT_CACHE_SIZE = 10_000;
/** ...and their estimated bytes (see entryBytes). */
const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
/**
 * Estimated memory of a cache entry besides its token's characters: the decoded claims (about
 * as long as the token's payload part, counted as the token length again), the result, scope
 * set and the Map slot.
 */
const ENTRY_OVERHEAD_BYTES = 512;
const BEARER = /^bearer +/i;

/** `jwt:` of an auth policy. */
export const JwtConfigSchema = Type.Object(
  {
    issuer: Type.Optional(
      Type.String({
        description:
          'Expected `iss`. Unless jwksUri or secret is set, keys come from OIDC discovery at ' +
          '`<issuer>/.well-known/openid-configuration`. No default.',
      }),
    ),
    jwksUri: Type.Optional(
      Type.String({ description: 'JWKS URL to take keys from instead of discovery. No default.' }),
    ),
    discoveryUrl: Type.Optional(
      Type.String({
        description:
          'Explicit discovery document URL (what an OpenAPI openIdConnectUrl names). Default: derived from issuer.',
      }),
    ),
    audience: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })], {
      description:
        'Accepted `aud` value(s); the token must name one. Required: without it a token the same IdP ' +
        'issued to any other client would pass. `any` (the single word, not in a list) accepts every ' +
        'audience, an explicit opt-out.',
    }),
    algorithms: Type.Optional(
      Type.Array(Type.String(), {
        minItems: 1,
        description:
          'Accepted `alg` values. Default: RS/PS/ES 256-512 and EdDSA with keys from a JWKS, HS256 with a ' +
          'secret. `none` is never accepted; HMAC is never accepted against a JWKS.',
      }),
    ),
    secret: Type.Optional(
      Type.String({
        description:
          'Shared HMAC secret (at least 32 bytes) for HS256 tokens; prefer secretEnv. Mutually exclusive ' +
          'with jwksUri/discovery. No default.',
      }),
    ),
    secretEnv: Type.Optional(
      Type.String({ description: 'Name of the environment variable holding the HMAC secret. No default.' }),
    ),
    scopes: Type.Optional(
      Type.Array(Type.String(), {
        description: 'Scopes the token must all carry (from `scope` or `scp`); else 403. Default: none.',
      }),
    ),
    claims: Type.Optional(
      Type.Record(
        Type.String(),
        Type.Union([
          Type.String(),
          Type.Number(),
          Type.Boolean(),
          Type.Array(Type.Union([Type.String(), Type.Number(), Type.Boolean()])),
        ]),
        {
          description:
            'Claim conditions, all required (else 403): claim (dotted path for nested claims) equals the ' +
            'value, or one of the listed values; an array claim matches when any element does. Default: none.',
        },
      ),
    ),
    forwardClaims: Type.Optional(
      Type.Record(Type.String(), Type.String(), {
        description:
          'Upstream header name → claim (dotted path), e.g. `{x-user-id: sub}`. Client-sent copies of these ' +
          'headers are always removed. Arrays are joined with spaces, objects sent as JSON, non-ASCII ' +
          'percent-encoded. Default: none.',
      }),
    ),
    clockToleranceSec: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 300,
        description: 'Leeway for `exp`/`nbf`/`iat`, seconds. Default 5.',
      }),
    ),
    requireExp: Type.Optional(Type.Boolean({ description: 'Reject tokens without `exp`. Default true.' })),
    jwksCooldownMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Minimum time between JWKS refetches caused by an unknown `kid`. Default 30000.',
      }),
    ),
    jwksMaxAgeMs: Type.Optional(
      Type.Integer({ minimum: 1000, description: 'Refetch the JWKS when older than this. Default 600000.' }),
    ),
    fetchTimeoutMs: Type.Optional(
      Type.Integer({ minimum: 1, description: 'Timeout of discovery and JWKS requests. Default 5000.' }),
    ),
    onJwksError: Type.Optional(
      Type.Union([Type.Literal('deny'), Type.Literal('use-cached')], {
        description:
          'When the IdP cannot be reached to (re)load keys: `deny` rejects tokens with 401 ' +
          '(reason `jwks_unavailable`) once the key set is older than jwksMaxAgeMs; `use-cached` keeps ' +
          'verifying with the last keys fetched. With no keys fetched yet both reject. Default deny.',
      }),
    ),
    cacheSize: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Verified tokens remembered (0 disables), so a repeated token skips the signature check (~1 µs ' +
          'instead of ~80 µs for RS256). An entry is the exact token and its verified claims, shared only by ' +
          'routes with the same issuer, audience, algorithms, key source and clock settings; scopes and ' +
          'claims are still checked per route. It is dropped at the token `exp` (plus clockToleranceSec), ' +
          'and as soon as a refetched JWKS no longer holds the same key under the token `kid`; while the key ' +
          'set is older than jwksMaxAgeMs the token is verified again (the refetch decides, per ' +
          'onJwksError). Least recently used tokens go first past cacheSize or cacheMaxBytes. Default 10000.',
      }),
    ),
    cacheMaxBytes: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Bound of the verified-token cache in estimated bytes (twice the token length plus 512 per ' +
          'entry), whichever of cacheSize and this is reached first. Default 16777216 (16 MiB).',
      }),
    ),
    realm: Type.Optional(
      Type.String({ description: 'Realm in the Bearer challenge. Default `portcullis`.' }),
    ),
  },
  { additionalProperties: false, description: 'JWT bearer tokens (OIDC access tokens).' },
);
export type JwtConfig = Static<typeof JwtConfigSchema>;
type ClaimCondition = NonNullable<JwtConfig['claims']>[string];

/** Why a token was rejected by the verifier. */
export type JwtFailureReason =
  | 'malformed'
  | 'alg_not_allowed'
  | 'unknown_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_issuer'
  | 'bad_audience'
  | 'invalid_claims'
  | 'jwks_unavailable';

export type VerifyResult =
  | { ok: true; payload: JWTPayload; scopes: ReadonlySet<string> }
  | { ok: false; reason: JwtFailureReason; description: string };

/** Verifies tokens for one issuer/audience/key configuration; shared across routes. */
export interface JwtVerifier {
  /** A still-valid earlier verification of this exact token, without any async step (the hot path). */
  cached(token: string): VerifyResult | undefined;
  verify(token: string): Promise<VerifyResult>;
}

export interface VerifierOptions {
  /** Clock in ms (key-set age, token cache and claim times); default Date.now. */
  now?: () => number;
  /** Environment to read secretEnv from; default process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Characters of a token's end that key the verified-token cache: the end of the signature, as
 * good as random. Hashing a whole RS256 token (600+ characters, a fresh string every request) for
 * the Map look-up cost about 1 µs a request; a hit is still the exact token (`entry.token`).
 */
const CACHE_KEY_CHARS = 24;

/** The cache key of a token (see CACHE_KEY_CHARS). */
function cacheKey(token: string): string {
  return token.length > CACHE_KEY_CHARS ? token.slice(-CACHE_KEY_CHARS) : token;
}

interface CacheEntry {
  /** The whole token: a key shared by two tokens answers only for the one stored. */
  token: string;
  result: VerifyResult;
  /** The token is accepted while the clock (ms) is below this: (exp + clock tolerance) × 1000. */
  untilMs: number;
  /** The token's `kid` (undefined: none), and what the key set held under it when it was verified. */
  kid: string | undefined;
  keysTag: string | undefined;
  /** The key-set generation keysTag was last found unchanged in (JwksClient.generation). */
  generation: number;
  /** Recency: the cache's use counter when the entry was last inserted or moved to the back. */
  seq: number;
  /** Estimated bytes (entryBytes). */
  bytes: number;
}

/** Estimated memory of a cache entry (see ENTRY_OVERHEAD_BYTES). */
function entryBytes(token: string): number {
  return 2 * token.length + ENTRY_OVERHEAD_BYTES;
}

/**
 * Process-wide counts of the verified-token caches, exported on /metrics as
 * portcullis_jwt_verifications_total and portcullis_jwt_cache_drops_total.
 */
export const jwtCacheStats = {
  /** Tokens answered from a cache. */
  hits: 0,
  /** Tokens checked with their signature (not cached, or their entry was dropped; refused ones too). */
  misses: 0,
  /** Entries dropped at their token's exp. */
  expired: 0,
  /** Entries dropped because the refetched key set no longer holds their key under their kid. */
  keyChanged: 0,
  /** Entries dropped to keep within cacheSize / cacheMaxBytes (least recently used first). */
  evicted: 0,
};

/** Check a jwt config and resolve its secret; throws with a message naming the problem. */
function resolveKeyConfig(
  config: JwtConfig,
  env: NodeJS.ProcessEnv,
): { secret?: Uint8Array; algorithms: string[] } {
  let secret: string | undefined = config.secret;
  if (config.secretEnv !== undefined) {
    secret = env[config.secretEnv];
    if (!secret) throw configError('/jwt/secretEnv', `environment variable ${config.secretEnv} is not set`);
  }
  // The schema requires it; a config built in code (fromSpec, tests) is held to the same rule.
  if (config.audience === undefined) {
    throw configError(
      '/jwt/audience',
      `set audience (the \`aud\` of this API's tokens), or audience: ${ANY_AUDIENCE}`,
    );
  }
  const remote = config.jwksUri !== undefined || config.discoveryUrl !== undefined;
  if (secret !== undefined) {
    if (remote) throw configError('/jwt/secret', 'secret cannot be combined with jwksUri/discoveryUrl');
    if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) {
      throw configError('/jwt/secret', `the HMAC secret must be at least ${MIN_SECRET_BYTES} bytes`);
    }
    const algorithms = config.algorithms ?? ['HS256'];
    for (const alg of algorithms) {
      if (!HMAC_ALGORITHMS.has(alg))
        throw configError('/jwt/algorithms', `${alg} cannot be used with a secret`);
    }
    return { secret: new TextEncoder().encode(secret), algorithms };
  }
  if (!remote && config.issuer === undefined) {
    throw configError('/jwt', 'set issuer (OIDC discovery), jwksUri, discoveryUrl or secret/secretEnv');
  }
  const algorithms = config.algorithms ?? [...DEFAULT_ASYMMETRIC_ALGORITHMS];
  for (const alg of algorithms) {
    if (alg.toLowerCase() === 'none' || HMAC_ALGORITHMS.has(alg)) {
      throw configError('/jwt/algorithms', `${alg} is not allowed with keys from a JWKS`);
    }
  }
  return { algorithms };
}

function scopesOf(payload: JWTPayload): ReadonlySet<string> {
  const raw = payload.scope ?? payload.scp;
  if (typeof raw === 'string') return new Set(raw.split(' ').filter(Boolean));
  if (Array.isArray(raw)) return new Set(raw.filter((s): s is string => typeof s === 'string'));
  return new Set();
}

function failure(err: unknown): { ok: false; reason: JwtFailureReason; description: string } {
  if (err instanceof JwksUnavailableError) {
    return { ok: false, reason: 'jwks_unavailable', description: 'signing keys are unavailable' };
  }
  const e = err as { code?: string; claim?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return { ok: false, reason: 'expired', description: 'the token has expired' };
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return { ok: false, reason: 'alg_not_allowed', description: 'the token algorithm is not accepted' };
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return { ok: false, reason: 'unknown_key', description: 'the token was not signed by a known key' };
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return { ok: false, reason: 'bad_signature', description: 'the token signature is invalid' };
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'iss')
        return { ok: false, reason: 'bad_issuer', description: 'the token issuer is not accepted' };
      if (e.claim === 'aud')
        return { ok: false, reason: 'bad_audience', description: 'the token audience is not accepted' };
      if (e.claim === 'nbf')
        return { ok: false, reason: 'not_yet_valid', description: 'the token is not valid yet' };
      return {
        ok: false,
        reason: 'invalid_claims',
        description: `the token claim ${e.claim ?? ''} is invalid`,
      };
    default:
      return { ok: false, reason: 'malformed', description: 'the token is malformed' };
  }
}

/**
 * Build a verifier (no sharing; getJwtVerifier shares). Throws when the config is unusable
 * (no key source, short secret, HMAC with a JWKS...).
 */
export function createJwtVerifier(config: JwtConfig, opts: VerifierOptions = {}): JwtVerifier {
  const { jwtVerify } = jose();
  const now = opts.now ?? Date.now;
  const { secret, algorithms } = resolveKeyConfig(config, opts.env ?? process.env);
  const toleranceSec = config.clockToleranceSec ?? 5;
  const onJwksError = config.onJwksError ?? 'deny';
  const maxEntries = config.cacheSize ?? DEFAULT_CACHE_SIZE;
  const maxBytes = config.cacheMaxBytes ?? DEFAULT_CACHE_BYTES;
  /** Map order is recency order (oldest first): see touch. */
  const cache = new Map<string, CacheEntry>();
  let cacheBytes = 0;
  /** Counts inserts and moves; an entry older than half the cache's size is moved back on a hit. */
  let seq = 0;

  let jwks: JwksClient | undefined;
  if (!secret) {
    const discoveryUrl =
      config.discoveryUrl ??
      (config.jwksUri
        ? undefined
        : `${(config.issuer as string).replace(/\/+$/, '')}/.well-known/openid-configuration`);
    const jwksOptions = {
      cooldownMs: config.jwksCooldownMs ?? 30_000,
      maxAgeMs: config.jwksMaxAgeMs ?? 600_000,
      timeoutMs: config.fetchTimeoutMs ?? 5000,
    };
    const source = { jwksUri: config.jwksUri, discoveryUrl, issuer: config.issuer };
    // An injected clock means a test wants its own client; the shared one runs on real time.
    jwks = opts.now ? new JwksClient(source, { ...jwksOptions, now }) : sharedJwksClient(source, jwksOptions);
  }
  const allowStale = onJwksError === 'use-cached';

  /**
   * The key look-up of one verification: `seen` gets the key set it used (its generation and
   * what it holds under the token's kid), which is what a cache entry is checked against later.
   */
  const keyLookup =
    (seen: KeysAt): JWTVerifyGetKey =>
    async (header, token) => {
      const client = jwks as JwksClient;
      const use = (held: HeldKeys) => {
        seen.generation = held.generation;
        seen.tag = held.tags.get(typeof header.kid === 'string' ? header.kid : '');
        return held.getKey(header, token);
      };
      const held = await client.current(allowStale);
      try {
        return await use(held);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ERR_JWKS_NO_MATCHING_KEY') throw err;
        // An unknown kid: the IdP may have rotated. Refetch (rate-limited) and try once more.
        const refreshed = await client.refreshForUnknownKid().catch((e: unknown) => {
          if (allowStale) return false;
          throw e;
        });
        if (!refreshed) throw err;
        return use(await client.current(allowStale));
      }
    };

  const verifyOptions = {
    algorithms,
    issuer: config.issuer,
    audience: config.audience === ANY_AUDIENCE ? undefined : config.audience,
    clockTolerance: toleranceSec,
    requiredClaims: config.requireExp === false ? [] : ['exp'],
  };

  const drop = (key: string, entry: CacheEntry) => {
    cache.delete(key);
    cacheBytes -= entry.bytes;
  };

  /** Whether the key the entry was verified with is still the one the key set holds for its kid. */
  const keyStillHeld = (entry: CacheEntry, client: JwksClient): boolean => {
    if (entry.generation === client.generation) return true;
    const tag = client.keysTag(entry.kid);
    if (tag === undefined || tag !== entry.keysTag) return false;
    entry.generation = client.generation;
    return true;
  };

  const cached = (token: string): VerifyResult | undefined => {
    const key = cacheKey(token);
    const hit = cache.get(key);
    if (!hit || hit.token !== token) return undefined;
    if (now() >= hit.untilMs) {
      drop(key, hit);
      jwtCacheStats.expired++;
      return undefined;
    }
    if (jwks) {
      // A key set past its age is refetched before a token is accepted: verify() does it.
      if (!jwks.usable(allowStale)) return undefined;
      if (!keyStillHeld(hit, jwks)) {
        drop(key, hit);
        jwtCacheStats.keyChanged++;
        return undefined;
      }
    }
    // Least recently used goes first: a hit on an entry in the older half moves it to the back
    // (Map order), so a hot token is never evicted; most hits cost no Map write.
    if (seq - hit.seq > maxEntries >>> 1) {
      cache.delete(key);
      hit.seq = ++seq;
      cache.set(key, hit);
    }
    jwtCacheStats.hits++;
    return hit.result;
  };

  const remember = (
    token: string,
    result: VerifyResult,
    exp: number,
    kid: string | undefined,
    keys: KeysAt,
  ) => {
    const bytes = entryBytes(token);
    if (bytes > maxBytes) return;
    const key = cacheKey(token);
    const previous = cache.get(key);
    if (previous) drop(key, previous);
    while (cache.size > 0 && (cache.size >= maxEntries || cacheBytes + bytes > maxBytes)) {
      const [oldestKey, oldest] = cache.entries().next().value as [string, CacheEntry];
      drop(oldestKey, oldest);
      jwtCacheStats.evicted++;
    }
    cache.set(key, {
      token,
      result,
      untilMs: (exp + toleranceSec) * 1000,
      kid,
      keysTag: keys.tag,
      generation: keys.generation,
      seq: ++seq,
      bytes,
    });
    cacheBytes += bytes;
  };

  return {
    cached,
    async verify(token) {
      const hit = cached(token);
      if (hit) return hit;
      jwtCacheStats.misses++;
      const seen: KeysAt = { generation: 0, tag: undefined };
      let payload: JWTPayload;
      let kid: unknown;
      try {
        const result = await jwtVerify(token, secret ?? keyLookup(seen), {
          ...verifyOptions,
          currentDate: new Date(now()),
        });
        payload = result.payload;
        kid = result.protectedHeader.kid;
      } catch (err) {
        return failure(err);
      }
      const result: VerifyResult = { ok: true, payload, scopes: scopesOf(payload) };
      if (maxEntries > 0 && typeof payload.exp === 'number')
        remember(token, result, payload.exp, typeof kid === 'string' ? kid : undefined, seen);
      return result;
    },
  };
}

/** The key set a verification used: its generation and what it held under the token's kid. */
interface KeysAt {
  generation: number;
  tag: string | undefined;
}

/**
 * Shared verifiers by configuration. Grows with distinct configurations (reloads that change one),
 * never with traffic; bounded by MAX_SHARED_VERIFIERS, the oldest dropped first (a route keeps the
 * verifier it holds; only sharing with later routes is lost).
 */
const verifiers = new Map<string, JwtVerifier>();
const MAX_SHARED_VERIFIERS = 256;

/**
 * The process-wide verifier for a configuration: routes with the same verification settings
 * share one token cache and one JWKS client. Per-route checks (scopes, claims) are not part of it.
 */
export function getJwtVerifier(config: JwtConfig, env: NodeJS.ProcessEnv = process.env): JwtVerifier {
  const secret = config.secretEnv !== undefined ? env[config.secretEnv] : config.secret;
  const key = JSON.stringify([
    config.issuer,
    config.jwksUri,
    config.discoveryUrl,
    config.audience,
    config.algorithms,
    // Keyed by a digest so the secret itself is not kept in a long-lived key string.
    secret === undefined ? undefined : createHash('sha256').update(secret).digest('base64url'),
    config.clockToleranceSec,
    config.requireExp,
    config.jwksCooldownMs,
    config.jwksMaxAgeMs,
    config.fetchTimeoutMs,
    config.onJwksError,
    config.cacheSize,
    config.cacheMaxBytes,
  ]);
  let verifier = verifiers.get(key);
  if (!verifier) {
    verifier = createJwtVerifier(config, { env });
    if (verifiers.size >= MAX_SHARED_VERIFIERS) verifiers.delete(verifiers.keys().next().value as string);
    verifiers.set(key, verifier);
  }
  return verifier;
}

function claimAt(payload: JWTPayload, path: string): unknown {
  if (path in payload) return payload[path];
  let value: unknown = payload;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function headerValue(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  const text =
    typeof value === 'string'
      ? value
      : Array.isArray(value)
        ? value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(' ')
        : typeof value === 'object'
          ? JSON.stringify(value)
          : String(value);
  // Claims are signed but arbitrary: never let one smuggle a CR/LF or non-ASCII into a header.
  return /[^\t\x20-\x7e]/.test(text) ? encodeURIComponent(text) : text;
}

function matchesCondition(actual: unknown, expected: ClaimCondition): boolean {
  const wanted = Array.isArray(expected) ? expected : [expected];
  const values = Array.isArray(actual) ? actual : [actual];
  return values.some((v) => wanted.includes(v as string | number | boolean));
}

/** The JWT method of an auth policy: bearer token → verified claims → scope and claim checks. */
export function createJwtMethod(
  config: JwtConfig,
  opts: { verifier?: JwtVerifier; env?: NodeJS.ProcessEnv } = {},
): AuthMethod {
  const verifier = opts.verifier ?? getJwtVerifier(config, opts.env);
  const realm = `realm=${quote(config.realm ?? 'portcullis')}`;
  const requiredScopes = config.scopes ?? [];
  const conditions = Object.entries(config.claims ?? {});
  const forwards = Object.entries(config.forwardClaims ?? {}).map(([h, c]) => [h.toLowerCase(), c] as const);
  const challenge = `Bearer ${realm}`;
  const scopeParam = requiredScopes.length ? `, scope=${quote(requiredScopes.join(' '))}` : '';

  const invalid = (reason: string, description: string): AuthOutcome => ({
    kind: 'fail',
    status: 401,
    reason,
    description,
    challenge: `Bearer ${realm}, error="invalid_token", error_description=${quote(description)}`,
  });
  const forbidden = (reason: string, description: string): AuthOutcome => ({
    kind: 'fail',
    status: 403,
    reason,
    description,
    challenge: `Bearer ${realm}, error="insufficient_scope", error_description=${quote(description)}${scopeParam}`,
  });

  return {
    name: 'jwt',
    challenge,
    upstreamHeaderNames: forwards.map(([h]) => h),
    credentialHeaderNames: ['authorization'],
    authenticate(ctx: RequestContext): AuthOutcome | Promise<AuthOutcome> {
      const header = ctx.req.headers.authorization;
      if (typeof header !== 'string' || !BEARER.test(header)) return { kind: 'absent' };
      // `Bearer <token>` with one space is the norm: slice it; anything else goes through the regex.
      const token =
        header.charCodeAt(6) === 32 && header.charCodeAt(7) !== 32
          ? header.slice(7)
          : header.replace(BEARER, '').trim();
      if (!token) return invalid('malformed', 'the bearer token is empty');
      // A token seen before is answered without a promise: most requests reuse their token.
      const hit = verifier.cached(token);
      if (hit) return check(hit);
      return verifier.verify(token).then(check);
    },
  };

  function check(result: VerifyResult): AuthOutcome {
    if (!result.ok) return invalid(result.reason, result.description);
    const { payload, scopes } = result;
    for (const scope of requiredScopes) {
      if (!scopes.has(scope)) return forbidden('insufficient_scope', `the token lacks scope ${scope}`);
    }
    for (const [claim, expected] of conditions) {
      if (!matchesCondition(claimAt(payload, claim), expected)) {
        return forbidden('claim_mismatch', `the token claim ${claim} does not match`);
      }
    }
    let headers: Record<string, string> | undefined;
    for (const [name, claim] of forwards) {
      const value = headerValue(claimAt(payload, claim));
      if (value === undefined) continue;
      headers ??= {};
      headers[name] = value;
    }
    const subject = typeof payload.sub === 'string' ? payload.sub : '';
    return { kind: 'ok', identity: { method: 'jwt', subject, claims: payload }, headers };
  }
}
