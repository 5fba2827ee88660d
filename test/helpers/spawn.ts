/**
 * The CLI as a user runs it, for what test/helpers/cli.ts (a gateway over a temp config) does not
 * cover: a command run to completion (`validate`, `routes`, `--help`), and `portcullis start` in a
 * given folder with no --config (the embedded default). Children run on the test's own Node (24)
 * and are tracked; `killChildren()` in afterAll SIGKILLs, by PID, any still running.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Repository root (where `npm start` runs). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The CLI entry, as `npm start` runs it. */
const CLI = fileURLToPath(new URL('../../bin/portcullis.js', import.meta.url));
/** Default bound for a command to finish, a gateway to listen, or a stop to complete. */
const TIMEOUT_MS = 25_000;

const running = new Set<ChildProcess>();

export interface CliOptions {
  /** Working directory. Default: the repository root. */
  cwd?: string;
  /** Variables added to the environment; the parent's PORTCULLIS_* variables are never inherited. */
  env?: Record<string, string>;
  /** SIGKILL the child and fail after this long. Default 25000 (a bound for a stuck child on a loaded machine, not a speed check; below vitest's 30 s test timeout). */
  timeoutMs?: number;
}

export interface CliExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CliResult extends CliExit {
  stdout: string;
  stderr: string;
}

/** Run `portcullis <args>` to completion. */
export async function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const exit = await exitOf(child, opts.timeoutMs ?? TIMEOUT_MS);
  return { ...exit, stdout, stderr };
}

/** A `portcullis start` child that printed its "portcullis listening" line. */
export interface RunningCli {
  pid: number;
  /** From the "portcullis listening" line, e.g. `{ http: 'http://127.0.0.1:41234', admin: ... }`. */
  addresses: { http?: string; https?: string; admin?: string };
  /** SIGTERM, then wait (bounded; SIGKILL past it) for the exit. */
  stop(): Promise<CliExit>;
}

/**
 * `portcullis start` in `opts.cwd` with ports 0 and bind addresses 127.0.0.1 set through
 * PORTCULLIS_HTTP_PORT/HOST and PORTCULLIS_ADMIN_PORT/HOST (override through `opts.env`).
 */
export async function startCli(opts: CliOptions = {}): Promise<RunningCli> {
  const env = {
    PORTCULLIS_HTTP_PORT: '0',
    PORTCULLIS_HTTP_HOST: '127.0.0.1',
    PORTCULLIS_ADMIN_PORT: '0',
    PORTCULLIS_ADMIN_HOST: '127.0.0.1',
    ...opts.env,
  };
  const child = spawnCli(['start'], { ...opts, env });
  const timeoutMs = opts.timeoutMs ?? TIMEOUT_MS;
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const exited = exitOf(child, Number.MAX_SAFE_INTEGER);
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let partial = '';
    const timer = setTimeout(() => fail(`did not listen within ${timeoutMs} ms`), timeoutMs);
    const fail = (why: string) => {
      clearTimeout(timer);
      kill(child);
      reject(new Error(`portcullis start ${why}; stderr:\n${stderr}`));
    };
    void exited.then((e) => fail(`exited (${e.code ?? e.signal}) before listening`));
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const entry = parseJson(line);
        if (entry?.msg !== 'portcullis listening') continue;
        clearTimeout(timer);
        resolve(entry);
      }
    });
  });
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return {
    pid: child.pid as number,
    addresses: { http: str(listening.http), https: str(listening.https), admin: str(listening.admin) },
    stop() {
      kill(child, 'SIGTERM');
      return exitOf(child, timeoutMs);
    },
  };
}

/** SIGKILL every child started here that is still running (afterAll / finally). */
export function killChildren(): void {
  for (const child of running) kill(child);
}

function spawnCli(args: string[], opts: CliOptions): ChildProcess {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_')),
  );
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...inherited, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

/** Resolves on 'close' (stdout and stderr fully read); past timeoutMs the child is killed and it rejects. */
function exitOf(child: ChildProcess, timeoutMs: number): Promise<CliExit> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => {
        kill(child);
        reject(new Error(`portcullis (pid ${child.pid}) did not exit within ${timeoutMs} ms`));
      },
      Math.min(timeoutMs, 2 ** 31 - 1),
    );
    timer.unref();
    const done = () => {
      clearTimeout(timer);
      resolve({ code: child.exitCode, signal: child.signalCode });
    };
    if (child.exitCode !== null || child.signalCode !== null) done();
    else child.once('close', done);
  });
}

function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // already gone
  }
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined; // not a log line
  }
}
