import { createHash, timingSafeEqual } from 'node:crypto';
import { resolve } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { parse } from 'yaml';
import type { RequestContext } from '../../pipeline/types.ts';
import { type AuthMethod, type AuthOutcome, configError, quote, readReferencedFile } from './method.ts';

/** Prefix of a key stored as its SHA-256 digest (hex) instead of in clear. */
const SHA256_PREFIX = 'sha256:';
const SHA256_HEX = /^[0-9a-f]{64}$/i;

/** `apiKey:` of an auth policy. */
export const ApiKeyConfigSchema = Type.Object(
  {
    in: Type.Optional(
      Type.Union([Type.Literal('header'), Type.Literal('query')], {
        description: 'Where the client sends the key. Default `header`.',
      }),
    ),
    name: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Header or query parameter carrying the key. Default `x-api-key`.',
      }),
    ),
    keysFile: Type.Optional(
      Type.String({
        description:
          'YAML map of key name → key, relative to the policy file. A value `sha256:<hex>` is the digest of ' +
          'the key, so the file need not hold keys in clear. The name is the caller identity (rate limits ' +
          'with `key: apiKey`). No default; keysFile and/or keysEnv is required.',
      }),
    ),
    keysEnv: Type.Optional(
      Type.String({
        description:
          'Environment variable holding `name=key,name2=sha256:<hex>` pairs, merged with keysFile. No default.',
      }),
    ),
  },
  { additionalProperties: false, description: 'API keys in a header or query parameter.' },
);
export type ApiKeyConfig = Static<typeof ApiKeyConfigSchema>;

/** Digest of a key as stored in memory; clear keys are hashed at load and never kept. */
export function hashApiKey(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

function digestOf(value: string, where: string): Buffer {
  if (value.startsWith(SHA256_PREFIX)) {
    const hex = value.slice(SHA256_PREFIX.length);
    if (!SHA256_HEX.test(hex))
      throw configError('/apiKey', `${where}: sha256: must be followed by 64 hex digits`);
    return Buffer.from(hex, 'hex');
  }
  if (value.length < 16) throw configError('/apiKey', `${where}: keys must be at least 16 characters`);
  return hashApiKey(value);
}

/**
 * Load the key table: digest (hex) → key name. Throws naming the file or variable on a bad entry.
 */
export async function loadApiKeys(
  config: ApiKeyConfig,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Map<string, string>> {
  const table = new Map<string, string>();
  const add = (name: string, value: unknown, where: string) => {
    if (typeof value !== 'string') throw configError('/apiKey', `${where}: key ${name} must be a string`);
    const digest = digestOf(value, `${where}: ${name}`).toString('hex');
    if (table.has(digest))
      throw configError('/apiKey', `${where}: key ${name} duplicates key ${table.get(digest)}`);
    table.set(digest, name);
  };
  if (config.keysFile !== undefined) {
    const file = resolve(baseDir, config.keysFile);
    const text = await readReferencedFile(file, '/apiKey/keysFile');
    let doc: unknown;
    try {
      doc = parse(text);
    } catch (err) {
      throw configError('/apiKey/keysFile', `${file}: ${(err as Error).message}`);
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      throw configError('/apiKey/keysFile', `${file}: expected a map of key name → key`);
    }
    for (const [name, value] of Object.entries(doc)) add(name, value, file);
  }
  if (config.keysEnv !== undefined) {
    const raw = env[config.keysEnv];
    if (!raw) throw configError('/apiKey/keysEnv', `environment variable ${config.keysEnv} is not set`);
    for (const pair of raw.split(',')) {
      const eq = pair.indexOf('=');
      if (eq <= 0)
        throw configError(
          '/apiKey/keysEnv',
          `${config.keysEnv}: expected name=key pairs separated by commas`,
        );
      add(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim(), config.keysEnv);
    }
  }
  if (config.keysFile === undefined && config.keysEnv === undefined) {
    throw configError('/apiKey', 'set keysFile or keysEnv');
  }
  if (table.size === 0) throw configError('/apiKey', 'no keys configured');
  return table;
}

function presentedKey(ctx: RequestContext, where: 'header' | 'query', name: string): string | undefined {
  if (where === 'header') {
    const value = ctx.req.headers[name];
    return Array.isArray(value) ? value[0] : value;
  }
  const value = (ctx.req.query as Record<string, unknown> | undefined)?.[name];
  if (Array.isArray(value)) return typeof value[0] === 'string' ? value[0] : undefined;
  return typeof value === 'string' ? value : undefined;
}

/** The API key method: the presented key's digest must be in the table; its name is the subject. */
export function createApiKeyMethod(
  config: ApiKeyConfig,
  keys: ReadonlyMap<string, string>,
  opts: { realm?: string } = {},
): AuthMethod {
  const where = config.in ?? 'header';
  const name = where === 'header' ? (config.name ?? 'x-api-key').toLowerCase() : (config.name ?? 'x-api-key');
  const challenge = `ApiKey realm=${quote(opts.realm ?? 'portcullis')}, ${where}=${quote(name)}`;
  const digests = new Map(
    [...keys].map(([hex, keyName]) => [hex, { digest: Buffer.from(hex, 'hex'), keyName }]),
  );
  return {
    name: 'apiKey',
    challenge,
    upstreamHeaderNames: [],
    credentialHeaderNames: where === 'header' ? [name] : [],
    authenticate(ctx): AuthOutcome {
      const key = presentedKey(ctx, where, name);
      if (key === undefined) return { kind: 'absent' };
      const digest = hashApiKey(key);
      // Looking up by SHA-256 digest leaks nothing about stored keys through timing: a client cannot
      // steer the digest of its guess toward a stored one byte by byte. The final comparison is
      // constant-time anyway; a scan of every key instead would cost O(keys) per request.
      const entry = digests.get(digest.toString('hex'));
      const match = entry && timingSafeEqual(entry.digest, digest) ? entry.keyName : undefined;
      if (match === undefined) {
        return {
          kind: 'fail',
          status: 401,
          reason: 'invalid_api_key',
          description: 'the API key is not valid',
          challenge,
        };
      }
      return { kind: 'ok', identity: { method: 'apiKey', subject: match } };
    },
  };
}
