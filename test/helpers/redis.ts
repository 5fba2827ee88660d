/**
 * A real redis-server for tests: a free 127.0.0.1 port, no persistence, stopped by PID. `restart()`
 * brings it back on the same port (to test recovery after an outage). Callers must `stop()` it in
 * afterAll / finally.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** The binary: REDIS_SERVER overrides (CI may install it elsewhere). */
const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
/** redis-cli, to create clusters: REDIS_CLI overrides. */
const REDIS_CLI = process.env.REDIS_CLI ?? 'redis-cli';
/** How long redis-server may take to answer PING, or to exit after SIGTERM. */
const TIMEOUT_MS = 10_000;

export interface TestRedis {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** PID of the running server (changes after restart()). */
  pid: number;
  /**
   * Stop the server with `signal` (default SIGTERM; SIGKILL simulates a crash) and wait until it
   * exited; SIGKILL follows if it has not within 10 s. Idempotent.
   */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again on the same port (stopping it first if it is running); resolves when it answers PING. */
  restart(): Promise<void>;
}

/** Start redis-server on a free 127.0.0.1 port and wait until it answers PING. */
export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child = await launch(port);
  const handle: TestRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid as number,
    stop: (signal?: NodeJS.Signals) => terminate(child, signal),
    async restart() {
      await terminate(child);
      child = await launch(port);
      handle.pid = child.pid as number;
    },
  };
  return handle;
}

/** Options every server here runs with: loopback only, no persistence. */
function baseArgs(port: number): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
  ];
}

/** The line redis-server logs once it serves; a Sentinel logs `+monitor master` instead. */
const READY_LINE = 'Ready to accept connections';

/** Start redis-server with `args` and wait for its `readyLine` and a PONG on `port`. */
async function launch(
  port: number,
  args: string[] = baseArgs(port),
  readyLine = READY_LINE,
): Promise<ChildProcess> {
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let announceReady: () => void = () => undefined;
  const announced = new Promise<void>((resolve) => {
    announceReady = resolve;
  });
  child.stdout?.on('data', (c: Buffer) => {
    output += c.toString('utf8');
    if (output.includes(readyLine)) announceReady();
  });
  child.stderr?.on('data', (c: Buffer) => {
    output += c.toString('utf8');
  });
  const exited = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new Error(`cannot run ${REDIS_SERVER}: ${err.message}`)));
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}) on start:\n${output}`)));
  });
  exited.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const notReady = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`redis-server on ${port} not ready within ${TIMEOUT_MS} ms`)),
      TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([announced.then(() => assertPong(port)), exited, notReady]);
  } catch (err) {
    await terminate(child);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return child;
}

export interface TestRedisCluster {
  /** Seed addresses `127.0.0.1:<port>` of the masters. */
  nodes: string[];
  /** Stop every node and remove their cluster state files. */
  stop(): Promise<void>;
}

/** Start a 3-master Redis Cluster (no replicas) on free ports; resolves once every node says cluster_state:ok. */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-redis-cluster-'));
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map((c) => terminate(c)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const busPort = await freePort();
      ports.push(port);
      const args = [
        ...baseArgs(port),
        '--cluster-enabled',
        'yes',
        '--cluster-port',
        String(busPort),
        '--cluster-config-file',
        join(dir, `nodes-${port}.conf`),
        '--dir',
        dir,
      ];
      children.push(await launch(port, args));
    }
    const nodes = ports.map((p) => `127.0.0.1:${p}`);
    await promisify(execFile)(
      REDIS_CLI,
      ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'],
      {
        timeout: TIMEOUT_MS,
      },
    );
    // Slot assignment spreads by gossip; nothing announces it, so ask until every node agrees.
    const deadline = Date.now() + TIMEOUT_MS;
    for (const port of ports) {
      for (;;) {
        const { stdout } = await promisify(execFile)(REDIS_CLI, ['-p', String(port), 'cluster', 'info']);
        if (stdout.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${port} not ok within ${TIMEOUT_MS} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return { nodes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface TestRedisSentinel {
  /** The monitored master (stop it to simulate an outage). */
  master: TestRedis;
  /** Sentinel address `127.0.0.1:<port>`. */
  sentinel: string;
  /** Master group name. */
  name: string;
  /** Stop the sentinel and the master. */
  stop(): Promise<void>;
}

/** Start a master and one Sentinel monitoring it as `mymaster` (quorum 1). */
export async function startRedisSentinel(): Promise<TestRedisSentinel> {
  const master = await startRedis();
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-redis-sentinel-'));
  const port = await freePort();
  const conf = join(dir, 'sentinel.conf');
  // Sentinel rewrites its config file, so it must be a real, writable file.
  await writeFile(conf, `sentinel monitor mymaster 127.0.0.1 ${master.port} 1\n`);
  let sentinel: ChildProcess;
  try {
    sentinel = await launch(
      port,
      [conf, '--sentinel', '--port', String(port), '--bind', '127.0.0.1'],
      '+monitor master',
    );
  } catch (err) {
    await master.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    master,
    sentinel: `127.0.0.1:${port}`,
    name: 'mymaster',
    async stop() {
      await terminate(sentinel);
      await master.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One PING over a raw socket: the server logged it is ready, make sure it answers. */
async function assertPong(port: number): Promise<void> {
  if (!(await ping(port))) throw new Error(`redis-server on ${port} does not answer PING`);
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (c: Buffer) => {
      reply += c.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  });
}

function terminate(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined)
    return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      try {
        process.kill(child.pid as number, 'SIGKILL');
      } catch {
        // already gone
      }
      reject(new Error(`redis-server ${child.pid} did not exit within ${TIMEOUT_MS} ms of ${signal}`));
    }, TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    process.kill(child.pid as number, signal);
  });
}

/** A port the kernel just handed out on 127.0.0.1 (closed again for redis-server to take). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}
