import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError, ProblemError } from '../../errors.ts';
import type { RequestContext } from '../../pipeline/types.ts';
import { createBasicMethod, loadHtpasswd } from './basic.ts';
import { BcryptBusyError, type BcryptPool } from './bcrypt-pool.ts';

// A minimal hand-built context: the method only reads req.headers (not a real FastifyRequest).
const ctxWith = (headers: Record<string, string> = {}, clientIp = '192.0.2.1') =>
  ({ req: { headers }, clientIp }) as unknown as RequestContext;
const basic = (user: string, password: string) => ({
  authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
});

describe('auth.basic', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-basic-'));
    // Cost 4 keeps the test fast; htpasswd -B writes $2y$, which is accepted too.
    const alice = bcrypt.hashSync('wonderland', 4);
    const bob = bcrypt.hashSync('builder:with:colons', 4).replace(/^\$2b\$/, '$2y$');
    await writeFile(join(dir, 'users'), `# users\nalice:${alice}\n\nbob:${bob}\n`);
    await writeFile(join(dir, 'md5'), 'carol:$apr1$abcdefgh$0123456789abcdefghijkl\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a correct user and password authenticate as that user ($2b$ and $2y$ hashes)', async () => {
    const method = createBasicMethod({ usersFile: 'users' }, await loadHtpasswd('users', dir));
    expect(await method.authenticate(ctxWith(basic('alice', 'wonderland')))).toEqual({
      kind: 'ok',
      identity: { method: 'basic', subject: 'alice' },
    });
    expect(await method.authenticate(ctxWith(basic('bob', 'builder:with:colons')))).toMatchObject({
      kind: 'ok',
      identity: { subject: 'bob' },
    });
  });

  const rejected = [
    { name: 'wrong password', headers: basic('alice', 'looking-glass') },
    { name: 'wrong password after a good one was remembered', headers: basic('alice', 'wonderlandx') },
    { name: 'unknown user', headers: basic('mallory', 'wonderland') },
    {
      name: 'no colon in the credentials',
      headers: { authorization: `Basic ${Buffer.from('alice').toString('base64')}` },
    },
  ];
  for (const c of rejected) {
    test(`rejects: ${c.name} → 401 with a Basic challenge`, async () => {
      const method = createBasicMethod(
        { usersFile: 'users', realm: 'ops' },
        await loadHtpasswd('users', dir),
      );
      await method.authenticate(ctxWith(basic('alice', 'wonderland')));
      expect(await method.authenticate(ctxWith(c.headers))).toMatchObject({
        kind: 'fail',
        status: 401,
        challenge: 'Basic realm="ops", charset="UTF-8"',
      });
    });
  }

  test('a bearer token is not basic credentials', async () => {
    const method = createBasicMethod({ usersFile: 'users' }, await loadHtpasswd('users', dir));
    expect(await method.authenticate(ctxWith({ authorization: 'Bearer abc' }))).toEqual({ kind: 'absent' });
  });

  test('a verified password is remembered: the next requests of that user never reach bcrypt', async () => {
    const users = await loadHtpasswd('users', dir);
    let compared = 0;
    const counting = {
      compare: (password: string, hash: string) => {
        compared++;
        return bcrypt.compare(password, hash);
      },
    } as unknown as BcryptPool;
    const method = createBasicMethod({ usersFile: 'users' }, users, counting);
    for (let i = 0; i < 3; i++) {
      expect(await method.authenticate(ctxWith(basic('alice', 'wonderland')))).toMatchObject({ kind: 'ok' });
    }
    expect(compared).toBe(1);
    // A wrong password for a remembered user is checked (and fails), the good one stays remembered.
    expect(await method.authenticate(ctxWith(basic('alice', 'wonderland!')))).toMatchObject({ kind: 'fail' });
    expect(await method.authenticate(ctxWith(basic('alice', 'wonderland')))).toMatchObject({ kind: 'ok' });
    expect(compared).toBe(2);
  });

  test('a full bcrypt queue answers 429 auth_busy with Retry-After, without checking', async () => {
    const busy = { compare: () => Promise.reject(new BcryptBusyError()) } as unknown as BcryptPool;
    const method = createBasicMethod({ usersFile: 'users' }, await loadHtpasswd('users', dir), busy);
    const err = await Promise.resolve(method.authenticate(ctxWith(basic('alice', 'x')))).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProblemError);
    expect(err).toMatchObject({
      code: 'PC_RATE_LIMITED',
      status: 429,
      headers: { 'retry-after': '1' },
      extensions: { reason: 'auth_busy' },
    });
  });

  test('a client with two checks in flight gets 429 auth_busy for a third; other clients are still checked', async () => {
    const pending: Array<(ok: boolean) => void> = [];
    const slow = {
      compare: () => new Promise<boolean>((resolve) => pending.push(resolve)),
    } as unknown as BcryptPool;
    const method = createBasicMethod({ usersFile: 'users' }, await loadHtpasswd('users', dir), slow);
    const guess = (i: number, ip: string) =>
      Promise.resolve(method.authenticate(ctxWith(basic('alice', `guess-${i}`), ip))).catch(
        (e: unknown) => e,
      );
    const first = [guess(1, '2001:db8::1'), guess(2, '2001:db8::2')];
    // Same /64: the same client.
    expect(await guess(3, '2001:db8::3')).toMatchObject({
      code: 'PC_RATE_LIMITED',
      extensions: { reason: 'auth_busy' },
    });
    const other = guess(4, '198.51.100.4');
    expect(pending).toHaveLength(3);
    for (const resolve of pending.splice(0)) resolve(false);
    expect(await Promise.all([...first, other])).toMatchObject([
      { kind: 'fail' },
      { kind: 'fail' },
      { kind: 'fail' },
    ]);
    // Once they finished, the client may be checked again.
    const again = guess(5, '2001:db8::1');
    expect(pending).toHaveLength(1);
    pending[0]?.(false);
    expect(await again).toMatchObject({ kind: 'fail' });
  });

  test('a non-bcrypt line is rejected at load, naming file and line', async () => {
    const err = await loadHtpasswd('md5', dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain(`${join(dir, 'md5')}:1`);
  });
});
