import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { resolve } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { ProblemError } from '../../errors.ts';
import { clientNetwork } from '../../net/client-network.ts';
import type { RequestContext } from '../../pipeline/types.ts';
import { BcryptBusyError, type BcryptPool, sharedBcryptPool } from './bcrypt-pool.ts';
import { type AuthMethod, type AuthOutcome, configError, quote, readReferencedFile } from './method.ts';

const BCRYPT_HASH = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;
const BASIC = /^basic +/i;
/**
 * Users whose last verified password is remembered (as a keyed digest, never the password), so
 * bcrypt (~65 ms at cost 10) runs once per user and password, not once per request. Per basic
 * method (i.e. per route); the least recently used user is dropped past it.
 */
export const VERIFIED_CACHE_SIZE = 1000;
/**
 * Key of the remembered digests, random per process: a memory dump of the cache cannot be
 * brute-forced offline like a plain SHA-256 of the password could.
 */
const CACHE_KEY = randomBytes(32);
/**
 * bcrypt checks one client (its address; an IPv6 client's /64) may have waiting or running at
 * once; past it the request gets 429 auth_busy without a check, so one guessing client cannot fill
 * the shared pool's queue and turn away other clients' logins.
 */
export const MAX_CHECKS_PER_CLIENT = 2;
/**
 * Checks in flight per client, for every basic method of the process (they share one pool). Bound:
 * an entry lives only while its checks run or wait, so at most the pool's workers + queue entries.
 */
const checksInFlight = new Map<string, number>();
/** Compared against for unknown users, so "no such user" costs as much as a wrong password. */
const DUMMY_HASH = '$2b$10$ReD3Ykk///twmBlwXS2v2.Mduy5X3fgMuvyKGoB49KiGtLLwzSABq';

/** `basic:` of an auth policy. */
export const BasicConfigSchema = Type.Object(
  {
    usersFile: Type.String({
      description:
        'htpasswd-style file (`user:bcrypt-hash` per line, `#` comments), relative to the policy file. ' +
        'Only bcrypt hashes ($2a$/$2b$/$2y$, e.g. `htpasswd -B`) are accepted. Required.',
    }),
    realm: Type.Optional(Type.String({ description: 'Realm in the Basic challenge. Default `portcullis`.' })),
  },
  { additionalProperties: false, description: 'HTTP Basic authentication against bcrypt hashes.' },
);
export type BasicConfig = Static<typeof BasicConfigSchema>;

/** Parse an htpasswd file: user → bcrypt hash. Throws naming file and line on a bad entry. */
export async function loadHtpasswd(file: string, baseDir: string): Promise<Map<string, string>> {
  const path = resolve(baseDir, file);
  const users = new Map<string, string>();
  const lines = (await readReferencedFile(path, '/basic/usersFile')).split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0 || !BCRYPT_HASH.test(hash)) {
      throw configError('/basic/usersFile', `${path}:${i + 1}: expected user:bcrypt-hash ($2a$/$2b$/$2y$)`);
    }
    if (users.has(user))
      throw configError('/basic/usersFile', `${path}:${i + 1}: user ${user} appears twice`);
    users.set(user, hash);
  });
  if (users.size === 0) throw configError('/basic/usersFile', `${path}: no users`);
  return users;
}

/** 429 auth_busy: the check was not attempted (see MAX_CHECKS_PER_CLIENT and the pool's queue). */
function busy(): ProblemError {
  return new ProblemError('PC_RATE_LIMITED', 'Too many password checks in progress; try again shortly', {
    headers: { 'retry-after': '1' },
    extensions: { reason: 'auth_busy' },
  });
}

function decodeCredentials(header: string): { user: string; password: string } | undefined {
  const decoded = Buffer.from(header.replace(BASIC, '').trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * The Basic method: bcrypt check of user:password in a worker thread (bcrypt-pool.ts), the last
 * good password of each user remembered as an HMAC digest (VERIFIED_CACHE_SIZE users). When the
 * client already has MAX_CHECKS_PER_CLIENT checks in flight, or the pool's queue is full, the
 * request gets 429 `PC_RATE_LIMITED` (reason `auth_busy`, Retry-After 1) without a check: a
 * guessing client cannot queue unbounded work nor crowd out other clients' logins.
 */
export function createBasicMethod(
  config: BasicConfig,
  users: ReadonlyMap<string, string>,
  pool: BcryptPool = sharedBcryptPool(),
): AuthMethod {
  const challenge = `Basic realm=${quote(config.realm ?? 'portcullis')}, charset="UTF-8"`;
  // user → digest of user and password; Map order is recency (a hit moves the user to the end).
  const verified = new Map<string, Buffer>();
  const fail = (description: string): AuthOutcome => ({
    kind: 'fail',
    status: 401,
    reason: 'invalid_credentials',
    description,
    challenge,
  });
  const ok = (user: string): AuthOutcome => ({ kind: 'ok', identity: { method: 'basic', subject: user } });
  return {
    name: 'basic',
    challenge,
    upstreamHeaderNames: [],
    credentialHeaderNames: ['authorization'],
    async authenticate(ctx: RequestContext): Promise<AuthOutcome> {
      const header = ctx.req.headers.authorization;
      if (typeof header !== 'string' || !BASIC.test(header)) return { kind: 'absent' };
      const creds = decodeCredentials(header);
      if (!creds) return fail('malformed basic credentials');
      const digest = createHmac('sha256', CACHE_KEY).update(`${creds.user}\0${creds.password}`).digest();
      const known = verified.get(creds.user);
      if (known && timingSafeEqual(known, digest)) {
        verified.delete(creds.user);
        verified.set(creds.user, known);
        return ok(creds.user);
      }
      const hash = users.get(creds.user);
      // Hand-built contexts (tests, explain) may carry no address: they count as one client.
      const client = clientNetwork(ctx.clientIp ?? '');
      const inFlight = checksInFlight.get(client) ?? 0;
      if (inFlight >= MAX_CHECKS_PER_CLIENT) throw busy();
      checksInFlight.set(client, inFlight + 1);
      let matches: boolean;
      try {
        matches = await pool.compare(creds.password, hash ?? DUMMY_HASH);
      } catch (err) {
        if (err instanceof BcryptBusyError) throw busy();
        throw err;
      } finally {
        const left = (checksInFlight.get(client) ?? 1) - 1;
        if (left > 0) checksInFlight.set(client, left);
        else checksInFlight.delete(client);
      }
      if (!matches || hash === undefined) return fail('invalid user name or password');
      verified.delete(creds.user);
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string);
      verified.set(creds.user, digest);
      return ok(creds.user);
    },
  };
}
