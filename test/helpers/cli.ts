import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

/** The CLI entry, run exactly as `npx portcullis` would. */
const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/portcullis.js');
/** How long the child may take to print its "listening" line. */
const START_TIMEOUT_MS = 15_000;
/** How long SIGTERM may take before the child is killed and stop() fails. */
const STOP_TIMEOUT_MS = 15_000;

export interface CliGatewayOptions {
  /** Extra gateway.yaml fields; listeners default to 127.0.0.1 port 0, `watch: false`, `logLevel: info`. */
  config?: Record<string, unknown>;
  /** Spec documents by service name, written as `openapi/<name>.yaml`. */
  specs?: Record<string, unknown>;
  /**
   * Policy files by name, written as `policies/<name>.yaml`: a string is written as-is, anything
   * else (a list of rules) as YAML. Default: none (no policies/ folder).
   */
  policies?: Record<string, unknown>;
  /** How long the child may take to print its "listening" line. Default 15000 (`workers: N` starts N+1 processes). */
  startTimeoutMs?: number;
  /** Extra `portcullis start` arguments (e.g. `--strict`). */
  args?: string[];
}

export interface CliGateway {
  child: ChildProcess;
  pid: number;
  /** The temp folder holding gateway.yaml, openapi/ and policies/. */
  dir: string;
  /** `http://127.0.0.1:<port>` of the public listener. */
  url: string;
  /** `http://127.0.0.1:<port>` of the admin listener, when configured. */
  admin?: string;
  /** Every JSON log line the child printed so far. */
  logs: Array<Record<string, unknown>>;
  /** Everything the child wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM the child and wait for it to exit; resolves its exit code (the temp folder is removed). */
  stop(): Promise<number | null>;
}

/**
 * Start `portcullis start --config <tmp>/gateway.yaml` as a child process on this Node
 * (`process.execPath`: vitest runs on the project's pinned Node) and wait for its
 * "portcullis listening" log line. The caller must `stop()` it.
 */
export async function startCliGateway(opts: CliGatewayOptions = {}): Promise<CliGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-cli-'));
  await mkdir(join(dir, 'openapi'));
  for (const [name, doc] of Object.entries(opts.specs ?? {})) {
    await writeFile(join(dir, 'openapi', `${name}.yaml`), stringify(doc));
  }
  if (opts.policies) {
    await mkdir(join(dir, 'policies'));
    for (const [name, rules] of Object.entries(opts.policies)) {
      await writeFile(
        join(dir, 'policies', `${name}.yaml`),
        typeof rules === 'string' ? rules : stringify(rules),
      );
    }
  }
  const config = {
    listen: { http: { port: 0, host: '127.0.0.1' } },
    admin: { port: 0, host: '127.0.0.1' },
    watch: false,
    logLevel: 'info',
    ...opts.config,
  };
  const configFile = join(dir, 'gateway.yaml');
  await writeFile(configFile, stringify(config));

  // A clean environment: PORTCULLIS_* variables of the developer's shell must not leak in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PORTCULLIS_')));
  const child = spawn(process.execPath, [BIN, 'start', '--config', configFile, ...(opts.args ?? [])], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  const exited = new Promise<number | null>((resolveExit) => child.once('exit', (code) => resolveExit(code)));

  const listening = new Promise<Record<string, unknown>>((resolveLine, reject) => {
    let buffered = '';
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      buffered += text;
      let nl = buffered.indexOf('\n');
      while (nl !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf('\n');
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue; // not a log line (e.g. a banner)
        }
        logs.push(entry);
        if (entry.msg === 'portcullis listening') resolveLine(entry);
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    void exited.then((code) =>
      reject(new Error(`portcullis exited with ${code} before listening:\n${stderr}`)),
    );
  });

  let timer: NodeJS.Timeout | undefined;
  const startTimeoutMs = opts.startTimeoutMs ?? START_TIMEOUT_MS;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`portcullis did not listen within ${startTimeoutMs} ms:\n${stderr}`)),
      startTimeoutMs,
    );
  });
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
    }
    let killTimer: NodeJS.Timeout | undefined;
    const killed = new Promise<never>((_, reject) => {
      killTimer = setTimeout(() => {
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
        reject(new Error(`portcullis did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM`));
      }, STOP_TIMEOUT_MS);
    });
    try {
      return await Promise.race([exited, killed]);
    } finally {
      clearTimeout(killTimer);
      await rm(dir, { recursive: true, force: true });
    }
  };

  let line: Record<string, unknown>;
  try {
    line = await Promise.race([listening, timeout]);
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (child.pid === undefined || typeof line.http !== 'string') {
    await stop().catch(() => undefined);
    throw new Error(`unexpected listening line: ${JSON.stringify(line)}`);
  }
  return {
    child,
    pid: child.pid,
    dir,
    url: line.http,
    admin: typeof line.admin === 'string' ? line.admin : undefined,
    logs,
    stderr: () => stderr,
    stop,
  };
}

/** Resident memory figures of a live process, in bytes, from /proc/<pid>/status (Linux only). */
export interface ProcessMemory {
  /** VmRSS: resident now. */
  rss: number;
  /** VmHWM: the highest resident size since the process started. */
  peak: number;
}

/** Read VmRSS and VmHWM of `pid`. */
export async function processMemory(pid: number): Promise<ProcessMemory> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m?.[1]) throw new Error(`${field} missing from /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}
