/**
 * The JavaScript build (scripts/build.ts → dist/) that bin/portcullis.js runs, exercised in a copy
 * of the repository (its node_modules linked), so that each case starts from a checkout with no
 * dist/ as a fresh clone does, and may change a source without disturbing other tests.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../scripts/build.ts';
import { REPO_ROOT } from '../helpers/spawn.ts';

/** What a checkout needs to run: the CLI, the build script, the sources, the example configuration. */
const CHECKOUT = ['bin', 'scripts', 'src', 'package.json', 'openapi', 'policies'];
/** A bound for a command or a start on a loaded machine (not a speed check). */
const TIMEOUT_MS = 25_000;
/** What bin/portcullis.js prints when it has to run the .ts sources. */
const SOURCE_FALLBACK = /running the TypeScript sources instead/;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
const roots: string[] = [];

/** A copy of the repository without dist/; `node_modules` links to the real one unless `withoutEsbuild`. */
async function checkout({ withoutEsbuild = false } = {}): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'portcullis-build-'));
  roots.push(root);
  for (const entry of CHECKOUT) {
    await cp(join(REPO_ROOT, entry), join(root, entry), {
      recursive: true,
      filter: (src) => !src.endsWith('.test.ts'),
    });
  }
  if (!withoutEsbuild) {
    await symlink(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
    return root;
  }
  // A production install: every package but esbuild (a devDependency).
  await mkdir(join(root, 'node_modules'));
  for (const name of await readdir(join(REPO_ROOT, 'node_modules'))) {
    if (name === 'esbuild' || name === '@esbuild' || name === '.bin') continue;
    await symlink(join(REPO_ROOT, 'node_modules', name), join(root, 'node_modules', name));
  }
  return root;
}

function spawnBin(root: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_') && k !== '__PORTCULLIS_ENTRY'),
  );
  const child = spawn(process.execPath, [join(root, 'bin', 'portcullis.js'), ...args], {
    cwd: root,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Run `portcullis <args>` in `root` to completion. */
function run(root: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawnBin(root, args, env);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`portcullis ${args.join(' ')} did not exit; stderr:\n${stderr}`));
    }, TIMEOUT_MS);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function manifestOf(root: string): Promise<Manifest> {
  return JSON.parse(await readFile(join(root, 'dist', 'manifest.json'), 'utf8')) as Manifest;
}

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

describe('the built CLI', () => {
  let root: string;
  beforeAll(async () => {
    root = await checkout();
  });

  it('builds dist/ at its first run in a fresh checkout, and validate works from the build', async () => {
    const result = await run(root, ['validate']);
    expect(result.stderr).not.toMatch(SOURCE_FALLBACK);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/OK: 2 service\(s\)/);
    const manifest = await manifestOf(root);
    expect(manifest.main).toMatch(/^main-\w+\.js$/);
    expect(Object.keys(manifest.inputs)).toContain('src/main.ts');
    // The WAF's word lists are read next to their source (src/policies/waf/data), not in dist/.
    expect(Object.keys(manifest.inputs)).toContain('src/policies/waf/lists.ts');
  });

  it('serves the example configuration from the build (mocks, the WAF and its data files)', async () => {
    const child = spawnBin(root, ['start'], {
      PORTCULLIS_HTTP_PORT: '0',
      PORTCULLIS_HTTP_HOST: '127.0.0.1',
      PORTCULLIS_ADMIN_PORT: '0',
      PORTCULLIS_ADMIN_HOST: '127.0.0.1',
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
    });
    const http = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not listening; stderr:\n${stderr}`)), TIMEOUT_MS);
      let partial = '';
      child.stdout?.setEncoding('utf8').on('data', (text: string) => {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (!line.includes('"portcullis listening"')) continue;
          clearTimeout(timer);
          resolve((JSON.parse(line) as { http: string }).http);
        }
      });
      child.once('exit', (code) => reject(new Error(`exited ${code} before listening; stderr:\n${stderr}`)));
    });
    const pets = await fetch(`${http}/petstore/pets`);
    expect(pets.status).toBe(200);
    expect(await pets.json()).toEqual(expect.any(Array));
    // A command injection (the WAF's unix-commands list, read from src/policies/waf/data).
    const attack = await fetch(`${http}/petstore/pets?species=${encodeURIComponent('x; cat /etc/passwd')}`);
    expect(attack.status).toBe(403);
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).not.toMatch(SOURCE_FALLBACK);
  });

  it('rebuilds before running when a source changed since the build (a stale build never runs)', async () => {
    const before = (await manifestOf(root)).main;
    const main = join(root, 'src', 'main.ts');
    const text = await readFile(main, 'utf8');
    await writeFile(
      main,
      text.replace('Run the gateway (HTTP/HTTPS listeners', 'Run the rebuilt gateway (HTTP/HTTPS'),
    );
    const result = await run(root, ['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/start {7}Run the rebuilt gateway/);
    expect((await manifestOf(root)).main).not.toBe(before);
  });

  it('names src/ files and lines in stack traces (source maps)', async () => {
    const load = join(root, 'src', 'config', 'load.ts');
    const text = await readFile(load, 'utf8');
    await writeFile(
      load,
      `${text}\nif (process.env.PORTCULLIS_TEST_THROW) throw new Error('thrown at load');\n`,
    );
    const lineNo = text.split('\n').length + 1;
    const result = await run(root, ['validate'], { PORTCULLIS_TEST_THROW: '1' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('thrown at load');
    expect(result.stderr).toContain(`src/config/load.ts:${lineNo}:`);
  });

  it("runs the bcrypt worker thread from the build (the worker's URL points at its own output)", async () => {
    const { outputs } = await manifestOf(root);
    const workerFile = outputs.find((o) => /^bcrypt-worker-\w+\.js$/.test(o));
    expect(workerFile).toBeDefined();
    const chunks = await Promise.all(
      outputs.filter((o) => o.endsWith('.js')).map((o) => readFile(join(root, 'dist', o), 'utf8')),
    );
    expect(chunks.some((c) => c.includes(`new URL("./${workerFile}", import.meta.url)`))).toBe(true);
    const worker = new Worker(join(root, 'dist', workerFile as string));
    try {
      const answer = await new Promise<unknown>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage({ id: 7, password: 'hunter2', hash: bcrypt.hashSync('hunter2', 4) });
      });
      expect(answer).toEqual({ id: 7, ok: true });
    } finally {
      await worker.terminate();
    }
  });
});

describe('without esbuild (a production install) and no current build', () => {
  it('runs the TypeScript sources and says so on stderr', async () => {
    const root = await checkout({ withoutEsbuild: true });
    const result = await run(root, ['--version']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(JSON.parse(await readFile(join(root, 'package.json'), 'utf8')).version);
    expect(result.stderr).toMatch(/dist\/ is missing or older than src\/ and could not be rebuilt/);
    expect(result.stderr).toMatch(SOURCE_FALLBACK);
  });
});
