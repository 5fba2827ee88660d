/**
 * Child processes of the bench: start (optionally pinned to a CPU), wait for readiness, read
 * CPU time, and stop them all by PID — on success, on errors and on Ctrl-C.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';

/** How much of a child's stdout+stderr is kept for error messages, in characters. */
const OUTPUT_TAIL_CHARS = 4000;
/** How long a child gets to exit after SIGTERM before it is sent SIGKILL. */
// Writing a CPU profile (BENCH_CPU_PROF) at exit takes a few seconds.
const STOP_GRACE_MS = process.env.BENCH_CPU_PROF ? 30_000 : 5000;

/** A process the bench started. */
export interface Child {
  /** Short name for messages, e.g. `upstream`. */
  name: string;
  pid: number;
  process: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** Last OUTPUT_TAIL_CHARS characters of stdout and stderr, for error messages. */
  outputTail(): string;
}

/** Which CPU the load side (load generator, upstream, orchestrator) and the proxy run on. */
export interface Pinning {
  loadCpu: number;
  proxyCpu: number;
}

const children = new Set<Child>();

/**
 * Chooses CPUs: the first two CPUs this process may run on, when there are at least two and
 * `taskset` exists. Returns null (run unpinned) otherwise, with the reason.
 */
export function planPinning(): { pinning: Pinning | null; reason: string } {
  if (availableParallelism() < 2) return { pinning: null, reason: 'fewer than 2 CPUs available' };
  let affinity: string;
  try {
    affinity = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
  } catch {
    return { pinning: null, reason: 'taskset not found' };
  }
  const cpus = parseCpuList(affinity.slice(affinity.lastIndexOf(':') + 1).trim());
  if (cpus.length < 2) return { pinning: null, reason: `affinity list has fewer than 2 CPUs: ${affinity}` };
  return { pinning: { loadCpu: cpus[0]!, proxyCpu: cpus[1]! }, reason: '' };
}

/** Parses a Linux CPU list such as `0-3,6,8-9` into ascending CPU numbers. */
export function parseCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.split(',')) {
    const [from, to] = part.split('-').map((n) => Number.parseInt(n, 10));
    if (from === undefined || Number.isNaN(from)) continue;
    for (let cpu = from; cpu <= (to ?? from); cpu++) cpus.push(cpu);
  }
  return cpus.sort((a, b) => a - b);
}

/**
 * Pins this process, all of its threads, to `cpu`, so the orchestrator never runs on the
 * proxy's CPU. Returns false when taskset failed.
 */
export function pinSelf(cpu: number): boolean {
  try {
    execFileSync('taskset', ['-a', '-pc', String(cpu), String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts `node <args>` with the Node that runs this script, pinned to `cpu` via taskset when
 * `cpu` is a number (taskset execs node, so the PID is node's). Stdin is a pipe that the
 * bench's own children watch: they exit when it closes. Output is kept as a bounded tail.
 */
export function startNode(
  name: string,
  args: string[],
  cpu: number | null,
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Child {
  return startProcess(name, process.execPath, args, cpu, options);
}

/**
 * Starts any `command` (e.g. redis-server) like startNode: pinned to `cpu` via taskset when it is
 * a number, stdin a pipe, output kept as a bounded tail, stopped by PID with the others.
 */
export function startProcess(
  name: string,
  executable: string,
  args: string[],
  cpu: number | null,
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Child {
  const [command, argv] =
    cpu === null ? [executable, args] : ['taskset', ['-c', String(cpu), executable, ...args]];
  const proc = spawn(command, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  // A missing executable is reported by the throw below; the async 'error' must not crash the bench.
  proc.once('error', () => undefined);
  if (proc.pid === undefined) throw new Error(`could not start ${name}: ${command} ${argv.join(' ')}`);
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const child: Child = {
    name,
    pid: proc.pid,
    process: proc,
    exited: new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        children.delete(child);
        resolve(code ?? signal ?? 'unknown');
      });
    }),
    outputTail: () => tail,
  };
  children.add(child);
  return child;
}

/** True once `child` has exited. */
export function hasExited(child: Child): boolean {
  return child.process.exitCode !== null || child.process.signalCode !== null;
}

/**
 * Resolves with the first stdout line of `child` that parses as JSON. Rejects when the child
 * exits first or after `timeoutMs` (default 10 s).
 */
export function readJsonLine<T>(child: Child, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline !== -1) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line.startsWith('{')) {
          try {
            const value = JSON.parse(line) as T;
            done();
            resolve(value);
            return;
          } catch {
            // Not ours (a log line that happens to start with a brace); keep reading.
          }
        }
        newline = buffered.indexOf('\n');
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      done();
      reject(
        new Error(`${child.name} exited (${code ?? signal}) before it was ready:\n${child.outputTail()}`),
      );
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${child.name} not ready after ${timeoutMs} ms:\n${child.outputTail()}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.process.stdout?.off('data', onData);
      child.process.off('exit', onExit);
    };
    child.process.stdout?.on('data', onData);
    child.process.once('exit', onExit);
  });
}

/** Sends SIGTERM to `child`, then SIGKILL after `graceMs` (default STOP_GRACE_MS); waits for exit. */
export async function stopChild(child: Child, graceMs = STOP_GRACE_MS): Promise<void> {
  if (hasExited(child)) return;
  child.process.stdin?.end();
  child.process.kill('SIGTERM');
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs);
  await child.exited;
  clearTimeout(timer);
}

/** Stops every child still running, each by its PID. */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...children].map((child) => stopChild(child)));
}

/** Clock ticks per second for /proc CPU times (`getconf CLK_TCK`; default 100). */
export function clockTicksPerSecond(): number {
  try {
    const ticks = Number.parseInt(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }), 10);
    return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

/**
 * User + system CPU time of process `pid`, all threads, in clock ticks (/proc/<pid>/stat fields
 * 14 and 15). Null when the process is gone or /proc is absent. Children of that process are
 * not counted: a gateway that forks workers needs their PIDs passed as well.
 */
export function readCpuTicks(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may contain spaces and parentheses; fields after it do not.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field 14 (utime) is fields[11] and field 15 (stime) fields[12].
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : null;
}

/** Busy and total time of one CPU since boot, in clock ticks (the `cpuN` line of /proc/stat). */
export interface CoreTicks {
  busy: number;
  total: number;
}

/** Reads CoreTicks for CPU `cpu`; null when /proc/stat has no such line. */
export function readCoreTicks(cpu: number): CoreTicks | null {
  let stat: string;
  try {
    stat = readFileSync('/proc/stat', 'utf8');
  } catch {
    return null;
  }
  const line = stat.split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  if (!line) return null;
  // user nice system idle iowait irq softirq steal; guest time is already part of user.
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const busy = (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
  return { busy, total: busy + (idle ?? 0) + (iowait ?? 0) };
}

/** A port that was free a moment ago: bind port 0, read it, close. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resident memory of a process, bytes: now (VmRSS) and the highest so far (VmHWM). */
export interface Memory {
  rss: number;
  peak: number;
}

/** Reads VmRSS and VmHWM from /proc/<pid>/status; null when the process is gone or /proc is absent. */
export function readMemory(pid: number): Memory | null {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  const rss = kib('VmRSS');
  const peak = kib('VmHWM');
  return Number.isFinite(rss) && Number.isFinite(peak) ? { rss, peak } : null;
}
