/**
 * A real redis-server for tests: a free 127.0.0.1 port, no persistence, stopped by PID. `restart()`
 * brings it back on the same port (to test recovery after an outage). Callers must `stop()` it in
 * afterAll / finally.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, Socket } from 'node:net';

/** The binary: REDIS_SERVER overrides (CI may install it elsewhere). */
const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
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

async function launch(port: number): Promise<ChildProcess> {
  const child = spawn(
    REDIS_SERVER,
    [
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
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  let announceReady: () => void = () => undefined;
  const announced = new Promise<void>((resolve) => {
    announceReady = resolve;
  });
  child.stdout?.on('data', (c: Buffer) => {
    output += c.toString('utf8');
    if (output.includes('Ready to accept connections')) announceReady();
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
