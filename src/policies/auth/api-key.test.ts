import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError } from '../../errors.ts';
import type { RequestContext } from '../../pipeline/types.ts';
import { createApiKeyMethod, hashApiKey, loadApiKeys } from './api-key.ts';

// A minimal hand-built context: the method only reads req.headers and req.query (not a real FastifyRequest).
const ctxWith = (headers: Record<string, string> = {}, query: Record<string, string> = {}) =>
  ({ req: { headers, query } }) as unknown as RequestContext;

const CI_KEY = 'ci-key-0123456789abcdef';
const PARTNER_KEY = 'partner-key-fedcba9876543210';

describe('auth.apiKey', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-apikey-'));
    await writeFile(
      join(dir, 'keys.yaml'),
      `ci: ${CI_KEY}\npartner: sha256:${hashApiKey(PARTNER_KEY).toString('hex')}\n`,
    );
    await writeFile(join(dir, 'short.yaml'), 'x: short\n');
    await writeFile(join(dir, 'dup.yaml'), `a: ${CI_KEY}\nb: ${CI_KEY}\n`);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('keys from a file (clear and sha256-stored) identify the caller by key name', async () => {
    const keys = await loadApiKeys({ keysFile: 'keys.yaml' }, dir);
    const method = createApiKeyMethod({}, keys);
    expect(method.authenticate(ctxWith({ 'x-api-key': CI_KEY }))).toEqual({
      kind: 'ok',
      identity: { method: 'apiKey', subject: 'ci' },
    });
    expect(method.authenticate(ctxWith({ 'x-api-key': PARTNER_KEY }))).toMatchObject({
      kind: 'ok',
      identity: { subject: 'partner' },
    });
  });

  test('the table holds digests only, never the clear key', async () => {
    const keys = await loadApiKeys({ keysFile: 'keys.yaml' }, dir);
    expect([...keys.keys()].join()).not.toContain(CI_KEY);
  });

  test('a wrong key is 401 invalid_api_key with an ApiKey challenge; no key is absent', async () => {
    const method = createApiKeyMethod({ name: 'X-Key' }, await loadApiKeys({ keysFile: 'keys.yaml' }, dir));
    expect(method.authenticate(ctxWith({ 'x-key': `${CI_KEY}x` }))).toMatchObject({
      kind: 'fail',
      status: 401,
      reason: 'invalid_api_key',
      challenge: 'ApiKey realm="portcullis", header="x-key"',
    });
    expect(method.authenticate(ctxWith({ 'x-api-key': CI_KEY }))).toEqual({ kind: 'absent' });
  });

  test('keys from an environment variable, sent as a query parameter', async () => {
    const env = { PC_KEYS: `ci=${CI_KEY}, partner=sha256:${hashApiKey(PARTNER_KEY).toString('hex')}` };
    const keys = await loadApiKeys({ keysEnv: 'PC_KEYS' }, dir, env);
    const method = createApiKeyMethod({ in: 'query', name: 'api_key' }, keys);
    expect(method.authenticate(ctxWith({}, { api_key: PARTNER_KEY }))).toMatchObject({
      kind: 'ok',
      identity: { subject: 'partner' },
    });
    expect(method.authenticate(ctxWith({ 'x-api-key': CI_KEY }))).toEqual({ kind: 'absent' });
  });

  const bad: Array<{
    name: string;
    config: Parameters<typeof loadApiKeys>[0];
    env?: Record<string, string>;
  }> = [
    { name: 'no source', config: {} },
    { name: 'missing file', config: { keysFile: 'nope.yaml' } },
    { name: 'key shorter than 16 characters', config: { keysFile: 'short.yaml' } },
    { name: 'the same key under two names', config: { keysFile: 'dup.yaml' } },
    { name: 'unset environment variable', config: { keysEnv: 'PC_NOPE' }, env: {} },
    { name: 'malformed sha256 digest', config: { keysEnv: 'K' }, env: { K: 'a=sha256:zz' } },
  ];
  for (const c of bad) {
    test(`rejects at load: ${c.name}`, async () => {
      const err = await loadApiKeys(c.config, dir, c.env ?? {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      // A missing file points at the field naming it, with the path that was tried.
      if (c.name === 'missing file')
        expect((err as ConfigError).issues[0]).toMatchObject({
          path: '/apiKey/keysFile',
          message: expect.stringMatching(/cannot read .*nope\.yaml: no such file/),
        });
    });
  }
});
