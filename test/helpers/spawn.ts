/**
 * Run the real CLI (`bin/portcullis.js`) as a child process on the test's own Node (24) and read
 * its JSON log lines. Every child is tracked; `killChildren()` in afterAll ends the ones still
 * running, by PID.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Repository root (where `npm start` runs). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The CLI entry, as `npm start` runs it. */
export const CLI = fileURLToPath(new URL('../../bin/portcullis.js', import.meta.url));
/** How long a child may take to print "portcullis listening" or to exit. Default for every wait here. */
const DEFAULT_TIMEOUT_MS = 10_000;

const running = new Set<ChildProcess>();

export interface CliOptions {
  /** Working directory. Default: the repository root. */
  cwd?: string;
  /**
   * Variables added to the environment. The parent's PORTCULLIS_* variables are never inherited.
   * `startCli` adds ports 0 and hosts 127.0.0.1 unless given here.
   */
  env?: Record<string, string>;
  /** Kill the child (SIGKILL) and fail after this long. Default 10000. */
  timeoutMs?: number;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run `portcullis <args>` to completion. */
export async function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = spawnCli(args, opts.cwd, opts.env ?? {});
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  const { code, signal } = await exitOf(child, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, args);
  return { code, signal, stdout, stderr };
}

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown> & { msg?: string };

export interface CliGateway {
  child: ChildProcess;
  pid: number;
  /** From the "portcullis listening" line, e.g. `http://127.0.0.1:41234`. */
  addresses: { http?: string; https?: string; admin?: string };
  /** Every JSON log line so far. */
  logs: LogLine[];
  stderr(): string;
  /** Resolves with the first log line whose msg is `msg` (past or future); rejects after timeoutMs. */
  waitForLog(msg: string, timeoutMs?: number): Promise<LogLine>;
  /** Resolves when the process exits; rejects (after SIGKILL) if it has not after timeoutMs. */
  waitForExit(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Start `portcullis <args>` (normally `start ...`) with PORTCULLIS_HTTP_PORT=0, PORTCULLIS_ADMIN_PORT=0
 * and both hosts 127.0.0.1 (overridable through `env`), and wait for its "portcullis listening" line.
 */
export async function startCli(args: string[], opts: CliOptions = {}): Promise<CliGateway> {
  const env = {
    PORTCULLIS_HTTP_PORT: '0',
    PORTCULLIS_HTTP_HOST: '127.0.0.1',
    PORTCULLIS_ADMIN_PORT: '0',
    PORTCULLIS_ADMIN_HOST: '127.0.0.1',
    ...opts.env,
  };
  const child = spawnCli(args, opts.cwd, env);
  const logs: LogLine[] = [];
  const waiters: Array<{ msg: string; resolve: (l: LogLine) => void }> = [];
  let stderr = '';
  let partial = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  child.stdout?.on('data', (c: Buffer) => {
    const lines = (partial + c.toString('utf8')).split('\n');
    partial = lines.pop() ?? '';
    for (const text of lines) {
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        continue; // not a log line
      }
      logs.push(line);
      for (const w of waiters.filter((x) => x.msg === line.msg)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  let exit: ReturnType<typeof exitOf> | undefined;
  const waitForExit = (timeoutMs = DEFAULT_TIMEOUT_MS) => {
    exit ??= exitOf(child, timeoutMs, args);
    return exit;
  };
  const waitForLog = (msg: string, timeoutMs = DEFAULT_TIMEOUT_MS) => {
    const seen = logs.find((l) => l.msg === msg);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const waiter = {
        msg,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`no "${msg}" log line within ${timeoutMs} ms; stderr:\n${stderr}`));
      }, timeoutMs);
      waiters.push(waiter);
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (waiters.includes(waiter))
          reject(new Error(`exited (${code}) before "${msg}"; stderr:\n${stderr}`));
      });
    });
  };

  try {
    const listening = await waitForLog('portcullis listening', opts.timeoutMs);
    return {
      child,
      pid: child.pid as number,
      addresses: { http: str(listening.http), https: str(listening.https), admin: str(listening.admin) },
      logs,
      stderr: () => stderr,
      waitForLog,
      waitForExit,
    };
  } catch (err) {
    killChild(child);
    throw err;
  }
}

/** SIGKILL every child started here that is still running (afterAll / finally). */
export function killChildren(): void {
  for (const child of running) killChild(child);
}

function spawnCli(args: string[], cwd: string | undefined, env: Record<string, string>): ChildProcess {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_')),
  );
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: cwd ?? REPO_ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

function exitOf(
  child: ChildProcess,
  timeoutMs: number,
  args: string[],
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      killChild(child);
      reject(new Error(`portcullis ${args.join(' ')} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    // 'close' rather than 'exit': stdout and stderr are fully read by then.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

function killChild(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
