import type { JSONWebKeySet, JWK, JWTVerifyGetKey } from 'jose';
import { lazyModule } from '../../lazy.ts';

/** jose, loaded when the first key set arrives. */
const jose = lazyModule<typeof import('jose')>('jose');

/** A failed fetch is not retried sooner than this, so an IdP outage is not hammered by every request. */
const FAILED_FETCH_BACKOFF_MS = 1000;
/** Discovery documents and key sets larger than this are refused (a JWKS is a few KiB). */
const MAX_DOCUMENT_BYTES = 512 * 1024;

/** Where the keys come from: an explicit JWKS URI, or OIDC discovery. */
export interface JwksSource {
  /** Explicit JWKS URI; skips discovery. */
  jwksUri?: string;
  /** Discovery document URL (`<issuer>/.well-known/openid-configuration` or a spec's openIdConnectUrl). */
  discoveryUrl?: string;
  /** When set, the discovery document's `issuer` must equal it (OIDC Discovery §4.3). */
  issuer?: string;
}

export interface JwksOptions {
  /** Minimum time between refetches triggered by an unknown `kid`. Default 30000. */
  cooldownMs: number;
  /** Age after which the key set is refetched before use. Default 600000. */
  maxAgeMs: number;
  /** Timeout of each discovery/JWKS request. Default 5000. */
  timeoutMs: number;
  /** Clock (ms); injectable for tests. Default Date.now. */
  now?: () => number;
}

/** A fetched key set: what verifies tokens, its generation, and keysTag's tags (one object, replaced whole). */
export interface HeldKeys {
  getKey: JWTVerifyGetKey;
  /** 1 for the first set fetched, then +1 per fetch. */
  generation: number;
  /** Per kid the keys published under it as one string; '' → the whole set (see keyTags). */
  tags: ReadonlyMap<string, string>;
}

/** The key set could not be fetched (IdP down, bad document) and no usable keys are at hand. */
export class JwksUnavailableError extends Error {
  readonly code = 'JWKS_UNAVAILABLE' as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'JwksUnavailableError';
  }
}

/**
 * A remote key set, fetched lazily, shared by every route that names the same source. Unknown
 * `kid`s trigger at most one refetch per cooldown (key rotation without restart, without letting
 * forged kids hammer the IdP); a set older than maxAge is refetched before use, and when that
 * fails the caller decides whether stale keys may still be used.
 */
export class JwksClient {
  readonly source: JwksSource;
  private readonly opts: JwksOptions;
  private readonly now: () => number;
  private held: HeldKeys | undefined;
  private kids = new Set<string>();
  private loadedAt = Number.NEGATIVE_INFINITY;
  private failedAt = Number.NEGATIVE_INFINITY;
  private lastError: unknown;
  private unknownKidRefreshAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  private jwksUri: string | undefined;

  constructor(source: JwksSource, opts: JwksOptions) {
    this.source = source;
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.jwksUri = source.jwksUri;
  }

  /** Kids of the keys currently held (tests, diagnostics). */
  knownKids(): ReadonlySet<string> {
    return this.kids;
  }

  /**
   * What a token with this `kid` (undefined: none) can be verified with in the current set: the
   * published keys under that kid (for no kid, every key), as one string. Equal tags of two
   * generations mean the same keys; undefined: no key under that kid.
   */
  keysTag(kid: string | undefined): string | undefined {
    return this.held?.tags.get(kid ?? '');
  }

  /**
   * Bumped by every key set fetched (0: none yet): a verified-token cache entry remembers the
   * generation it was verified under, and checks its key again (keysTag) only when it moved.
   */
  get generation(): number {
    return this.held?.generation ?? 0;
  }

  /**
   * Whether keys held now may be used without a refetch: younger than maxAge or, with
   * `allowStale`, while the last refetch failed less than FAILED_FETCH_BACKOFF_MS ago (a caller
   * would get the stale set from current() without a fetch attempt). Otherwise current() must run.
   */
  usable(allowStale: boolean): boolean {
    if (!this.held) return false;
    const now = this.now();
    if (now - this.loadedAt < this.opts.maxAgeMs) return true;
    return allowStale && this.failedAt > this.loadedAt && now - this.failedAt < FAILED_FETCH_BACKOFF_MS;
  }

  /**
   * The current key set. Fetches when none is held or it is older than maxAge; if that fetch
   * fails, returns the stale set when `allowStale` and one exists, else throws JwksUnavailableError.
   */
  async current(allowStale: boolean): Promise<HeldKeys> {
    if (this.held && this.now() - this.loadedAt < this.opts.maxAgeMs) return this.held;
    try {
      await this.refresh();
    } catch (err) {
      if (allowStale && this.held) return this.held;
      throw err;
    }
    return this.held as HeldKeys;
  }

  /**
   * Refetch because a token named a key we do not hold. Returns false without fetching when the
   * last such refetch was less than cooldownMs ago.
   */
  async refreshForUnknownKid(): Promise<boolean> {
    if (this.now() - this.unknownKidRefreshAt < this.opts.cooldownMs) return false;
    this.unknownKidRefreshAt = this.now();
    await this.refresh();
    return true;
  }

  /** Single-flight fetch; failures within FAILED_FETCH_BACKOFF_MS are answered from the last error. */
  private refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    if (this.now() - this.failedAt < FAILED_FETCH_BACKOFF_MS) {
      return Promise.reject(new JwksUnavailableError('signing keys unavailable', { cause: this.lastError }));
    }
    this.inflight = this.fetchKeys()
      .then(
        (jwks) => {
          this.held = {
            getKey: jose().createLocalJWKSet(jwks),
            generation: this.generation + 1,
            tags: keyTags(jwks.keys),
          };
          this.kids = new Set(jwks.keys.map((k) => k.kid).filter((k): k is string => typeof k === 'string'));
          this.loadedAt = this.now();
        },
        (err: unknown) => {
          this.failedAt = this.now();
          this.lastError = err;
          throw err instanceof JwksUnavailableError
            ? err
            : new JwksUnavailableError('signing keys unavailable', { cause: err });
        },
      )
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }

  private async fetchKeys(): Promise<JSONWebKeySet> {
    if (!this.jwksUri) {
      const url = this.source.discoveryUrl as string;
      const doc = (await this.getJson(url)) as { issuer?: unknown; jwks_uri?: unknown };
      if (this.source.issuer !== undefined && doc.issuer !== this.source.issuer) {
        throw new JwksUnavailableError(
          `discovery issuer ${String(doc.issuer)} does not match ${this.source.issuer}`,
        );
      }
      if (typeof doc.jwks_uri !== 'string') throw new JwksUnavailableError(`no jwks_uri in ${url}`);
      this.jwksUri = doc.jwks_uri;
    }
    const body = (await this.getJson(this.jwksUri)) as { keys?: unknown };
    if (!Array.isArray(body.keys)) throw new JwksUnavailableError('JWKS has no keys array');
    // Only public signing keys: a symmetric key in a remote set would let its readers mint tokens.
    const keys = (body.keys as JWK[]).filter(
      (k) => k && typeof k === 'object' && k.kty !== 'oct' && (k.use === undefined || k.use === 'sig'),
    );
    return { keys };
  }

  private async getJson(url: string): Promise<unknown> {
    const res = await fetch(url, {
      signal: AbortSignal.timeout(this.opts.timeoutMs),
      headers: { accept: 'application/json' },
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new JwksUnavailableError(`${url} answered ${res.status}`);
    }
    const text = await res.text();
    if (text.length > MAX_DOCUMENT_BYTES) throw new JwksUnavailableError(`${url}: document too large`);
    return JSON.parse(text) as unknown;
  }
}

/**
 * Per kid the JSON of the keys published under it (sorted members), and under '' the whole set:
 * what keysTag compares across generations. A key's private members never reach here (only
 * public keys are kept, see fetchKeys), and the tags live as long as the set they describe.
 */
function keyTags(keys: readonly JWK[]): Map<string, string> {
  const byKid = new Map<string, string[]>();
  const all: string[] = [];
  for (const key of keys) {
    const text = JSON.stringify(key, Object.keys(key).sort());
    all.push(text);
    if (typeof key.kid === 'string') {
      const list = byKid.get(key.kid) ?? [];
      list.push(text);
      byKid.set(key.kid, list);
    }
  }
  const tags = new Map<string, string>();
  for (const [kid, list] of byKid) tags.set(kid, list.sort().join('\n'));
  tags.set('', all.sort().join('\n'));
  return tags;
}

/**
 * Bound: one client per distinct key source and timing configured (never per request); a reload
 * that changes them adds one, and the old one stays until the process ends.
 */
const clients = new Map<string, JwksClient>();

/**
 * The process-wide client for a source: N routes naming one issuer share one cache and one fetch.
 * Keyed by the whole source and options, so routes with different timings do not share.
 */
export function sharedJwksClient(source: JwksSource, opts: JwksOptions): JwksClient {
  const key = JSON.stringify([
    source.jwksUri,
    source.discoveryUrl,
    source.issuer,
    opts.cooldownMs,
    opts.maxAgeMs,
    opts.timeoutMs,
  ]);
  let client = clients.get(key);
  if (!client) {
    client = new JwksClient(source, opts);
    clients.set(key, client);
  }
  return client;
}
