/**
 * The primary of a `workers: N` gateway (node:cluster). It serves no request itself: it loads and
 * watches the configuration (gateway.yaml as resolved at start, specs, policies), forks N workers
 * that share the listeners, holds the instance's memory store (the workers reach it over IPC:
 * ipc-store.ts), serves the admin port (metrics summed over the workers), replaces a worker that
 * dies (backing off when one crashes right after starting), and on SIGTERM drains every worker
 * before it exits 0.
 *
 * Reloads are a two-phase vote so every worker switches to the same version together: the
 * primary's own reload builds the new snapshot, each worker rebuilds from the same files and
 * reports the version it got, and only when every worker built that version does the primary tell
 * them all to swap (and swap itself); otherwise every worker keeps the last good one.
 */
import cluster, { type Worker } from 'node:cluster';
import {
  AggregatorRegistry,
  Counter,
  Gauge,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';
import { type ClusterStatus, createAdmin } from '../admin/admin.ts';
import { readSettings, settleSettings, watchSettings } from '../config/live.ts';
import type { GatewayConfig } from '../config/schema.ts';
import { createLogger, type Logger } from '../logger.ts';
import { POLICY_KINDS } from '../policies/index.ts';
import { Runtime, type Snapshot } from '../runtime.ts';
import { createStore } from '../state/create-store.ts';
import type { GroupStatus, GroupView, UpstreamView } from '../upstream/group.ts';
import { WORKER_SLOT_VAR } from './identity.ts';
import { serveStoreOps } from './ipc-store.ts';
import { type FromPrimary, type FromWorker, isProtocolMessage, type WorkerStatus } from './protocol.ts';

/** A worker that lived at least this long before dying is replaced at once; sooner is a crash loop. */
const STABLE_AFTER_MS = 10_000;
/** The first delay before replacing a worker that crashed soon after starting; doubles per crash. */
const RESPAWN_BASE_MS = 100;
/** The longest delay between replacements of a crash-looping worker. */
const RESPAWN_MAX_MS = 30_000;
/** The first delay before the primary re-reads the files after a round that did not commit; doubles per failure. */
const RETRY_BASE_MS = 500;
/** How long a worker may take to rebuild a reload and vote, before the round is aborted. */
const VOTE_TIMEOUT_MS = 30_000;
/** How long a worker may take to answer a metrics or status request (it is left out past that). */
const ASK_TIMEOUT_MS = 2_000;
/** Beyond limits.shutdownGraceMs: a worker still running this much later is killed. */
const SHUTDOWN_MARGIN_MS = 5_000;

/** One worker position (1..N): the live worker in it and its restart history. */
interface Slot {
  index: number;
  worker?: Worker;
  ready: boolean;
  version: string | null;
  startedAt: number;
  /** Crashes in a row of workers that died within STABLE_AFTER_MS. */
  crashes: number;
  respawn?: NodeJS.Timeout;
}

type Reply = Extract<FromWorker, { pc: 'metrics' | 'status' | 'prepared' }>;

/**
 * Run the primary until it is stopped; resolves the process exit code. Throws ConfigError when the
 * configuration does not load (nothing is forked then).
 */
export async function runPrimary(
  config: GatewayConfig,
  { strict = false }: { strict?: boolean } = {},
): Promise<number> {
  const logger = createLogger(config.logLevel, undefined, {
    format: config.logFormat,
    bufferBytes: config.logBufferBytes,
  });
  const store = await createStore(config.state, logger);
  const sharedStore = store.kind === 'memory';
  let round = 0;
  let rounds: Promise<unknown> = Promise.resolve();
  const slots: Slot[] = Array.from({ length: config.workers }, (_, i) => ({
    index: i + 1,
    ready: false,
    version: null,
    startedAt: 0,
    crashes: 0,
  }));
  const live = () => slots.filter((s) => s.worker?.isConnected());
  const ready = () => live().filter((s) => s.ready);

  // Replies to the primary's questions, by `${pc} ${id or round} ${worker id}`.
  const waiting = new Map<string, (reply: Reply | undefined) => void>();
  let askId = 0;
  const ask = (
    slot: Slot,
    message: FromPrimary,
    key: string,
    timeoutMs: number,
  ): Promise<Reply | undefined> => {
    const worker = slot.worker;
    if (!worker?.isConnected()) return Promise.resolve(undefined);
    const full = `${key} ${worker.id}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(undefined), timeoutMs);
      const onExit = () => settle(undefined);
      const settle = (reply: Reply | undefined) => {
        clearTimeout(timer);
        worker.off('exit', onExit);
        waiting.delete(full);
        resolve(reply);
      };
      worker.once('exit', onExit);
      waiting.set(full, settle);
      worker.send(message);
    });
  };

  /** One vote: every voter rebuilds from the files; all must get `version` for the swap to happen. */
  /**
   * After a round that did not commit (files changed while the workers read them, a worker died
   * mid-vote): read the files again, later and later while it keeps failing, so the instance
   * converges without waiting for the next file event.
   */
  let retryDelay = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  const retryReload = () => {
    if (retryTimer || stopping) return;
    retryDelay = Math.min(Math.max(RETRY_BASE_MS, retryDelay * 2), RESPAWN_MAX_MS);
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      if (!stopping) void runtime.reload();
    }, retryDelay);
  };

  const vote = (voters: Slot[], version: string): Promise<boolean> => {
    const run = async () => {
      const r = ++round;
      const votes = await Promise.all(
        voters.map((s) => ask(s, { pc: 'reload', round: r }, `prepared ${r}`, VOTE_TIMEOUT_MS)),
      );
      // A worker that died meanwhile does not block the round: its replacement loads the files anew.
      const ok = votes.every((v, i) =>
        v ? v.pc === 'prepared' && v.version === version : !voters[i]?.worker?.isConnected(),
      );
      for (const s of voters) if (s.worker?.isConnected()) s.worker.send({ pc: 'commit', round: r, ok });
      if (ok) {
        for (const s of voters) s.version = version;
        retryDelay = 0;
      } else {
        logger.error(
          { version, votes: votes.map((v) => (v?.pc === 'prepared' ? v.version : null)) },
          'reload not committed: the workers did not all build this version; the last good configuration keeps serving everywhere',
        );
        retryReload();
      }
      return ok;
    };
    const next = rounds.then(run, run);
    rounds = next.catch(() => undefined);
    return next;
  };

  /**
   * The settings in force: gateway.yaml as loaded at start with the live fields of later reloads
   * applied (config/live.ts). What a new worker gets, so it matches its siblings.
   */
  let settings = config;
  /** Re-read gateway.yaml; apply its live fields here and in every worker (each re-reads its certificates). */
  const reloadSettings = async (): Promise<void> => {
    if (!config.file || stopping) return;
    const next = await readSettings(config.file, logger);
    if (!next) return;
    settings = settleSettings(settings, next, logger).settings;
    logger.level = settings.logLevel;
    runtime.setConfig(settings);
    for (const s of ready()) s.worker?.send({ pc: 'settings', config: workerConfigOf(settings) });
  };

  const runtime: Runtime = new Runtime({
    config,
    logger,
    store,
    kinds: POLICY_KINDS,
    healthChecks: false,
    beforeSwap: (snapshot: Snapshot): Promise<boolean> =>
      snapshot.version === runtime.snapshot?.version
        ? Promise.resolve(true)
        : vote(ready(), snapshot.version),
  });
  try {
    // As in one process: a bad file is handled as on a reload, unless `start --strict`.
    await runtime.load(strict ? 'strict' : 'tolerant');
  } catch (err) {
    await store.close();
    throw err;
  }

  const registry = new Registry();
  new Gauge({
    name: 'portcullis_workers',
    help: 'Worker processes serving (workers: N), by state: ready, or starting (forked, not listening yet).',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const up = live();
      this.set({ state: 'ready' }, up.filter((s) => s.ready).length);
      this.set({ state: 'starting' }, up.filter((s) => !s.ready).length);
    },
  });
  const restarts = new Counter({
    name: 'portcullis_worker_restarts_total',
    help: 'Workers replaced after they died.',
    registers: [registry],
  });

  let stopping = false;
  let started = false;
  let onStartFailure: ((why: string) => void) | undefined;
  let onAllReady: (() => void) | undefined;
  let firstAddresses: { http?: string; https?: string } = {};

  const fork = (slot: Slot) => {
    slot.respawn = undefined;
    slot.ready = false;
    slot.version = null;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ [WORKER_SLOT_VAR]: String(slot.index) });
    slot.worker = worker;
    worker.on('message', (message: unknown) => {
      if (!isProtocolMessage(message)) return;
      onMessage(slot, worker, message as FromWorker);
    });
    worker.on('error', (err) => logger.warn({ err, worker: slot.index }, 'worker IPC error'));
    worker.once('exit', (code, signal) => onExit(slot, worker, code, signal));
  };

  const onMessage = (slot: Slot, worker: Worker, m: FromWorker) => {
    switch (m.pc) {
      case 'hello': {
        // The worker serves the public listeners only: the primary owns the admin port and watching.
        const workerConfig = workerConfigOf(settings);
        worker.send({ pc: 'config', config: workerConfig, store: sharedStore ? 'primary' : 'own' });
        break;
      }
      case 'loaded': {
        const current = runtime.snapshot?.version;
        const admit = (ok: boolean) => {
          if (worker.isConnected()) worker.send({ pc: 'admit', ok });
        };
        // At start every process read the same files; later, a replacement must match the version in force.
        if (!started || !current || m.version === current) admit(true);
        else
          void vote([slot], current).then((ok) => {
            if (!ok)
              logger.warn(
                { worker: slot.index, pid: worker.process.pid, version: m.version, inForce: current },
                'worker cannot build the configuration in force (a file on disk changed or is invalid): not admitted, retried',
              );
            admit(ok);
          });
        break;
      }
      case 'store':
        void serveStoreOps(store, m.ops).then((results) => {
          if (worker.isConnected()) worker.send({ pc: 'store', results });
        });
        break;
      case 'ready': {
        slot.ready = true;
        slot.version = m.version;
        if (!firstAddresses.http && !firstAddresses.https) firstAddresses = m.addresses;
        logger.info({ worker: slot.index, pid: worker.process.pid, version: m.version }, 'worker ready');
        const current = runtime.snapshot?.version;
        // Started while a reload was on its way (files changed meanwhile): bring it to the primary's version.
        if (started && current && m.version !== current)
          void vote([slot], current).then((ok) => {
            if (ok) return;
            logger.warn(
              { worker: slot.index, pid: worker.process.pid },
              'worker left behind a reload: replacing it',
            );
            worker.kill();
          });
        if (!started && slots.every((s) => s.ready)) onAllReady?.();
        break;
      }
      case 'prepared':
        waiting.get(`prepared ${m.round} ${worker.id}`)?.(m);
        break;
      case 'metrics':
      case 'status':
        waiting.get(`${m.pc} ${m.id} ${worker.id}`)?.(m);
        break;
    }
  };

  const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    slot.ready = false;
    if (stopping) return;
    if (!started) {
      onStartFailure?.(`worker ${slot.index} exited (${signal ?? code}) before listening`);
      return;
    }
    const lived = Date.now() - slot.startedAt;
    slot.crashes = lived >= STABLE_AFTER_MS ? 0 : slot.crashes + 1;
    const delay =
      slot.crashes === 0 ? 0 : Math.min(RESPAWN_BASE_MS * 2 ** (slot.crashes - 1), RESPAWN_MAX_MS);
    logger.warn(
      { worker: slot.index, pid: worker.process.pid, code, signal, respawnInMs: delay },
      'worker died; replacing it',
    );
    restarts.inc();
    slot.respawn = setTimeout(() => fork(slot), delay);
  };

  const status = async (): Promise<ClusterStatus> => {
    const id = ++askId;
    const replies = await Promise.all(
      slots.map((s) => (s.ready ? ask(s, { pc: 'status', id }, `status ${id}`, ASK_TIMEOUT_MS) : undefined)),
    );
    const workers = slots.map((s, i) => {
      const reply = replies[i];
      const st = reply?.pc === 'status' ? reply.status : undefined;
      return {
        worker: s.index,
        pid: s.worker?.process.pid ?? 0,
        ready: st !== undefined,
        version: st?.version ?? null,
      };
    });
    const statuses = replies.flatMap((r) => (r?.pc === 'status' ? [r.status] : []));
    return { workers, upstreams: mergeUpstreams(statuses), groups: mergeGroupViews(statuses) };
  };

  const metrics = {
    contentType: registry.contentType,
    async render(): Promise<string> {
      const id = ++askId;
      const replies = await Promise.all(
        ready().map((s) => ask(s, { pc: 'metrics', id }, `metrics ${id}`, ASK_TIMEOUT_MS)),
      );
      const sets: MetricObjectWithValues<MetricValue<string>>[][] = [await registry.getMetricsAsJSON()];
      for (const r of replies) if (r?.pc === 'metrics') sets.push(r.metrics);
      return AggregatorRegistry.aggregate(sets).metrics();
    },
  };

  const admin = config.admin
    ? createAdmin({
        runtime,
        store,
        metrics,
        isClosing: () => stopping,
        config: config.admin,
        zone: config.zone,
        workers: status,
      })
    : undefined;

  const shutdown = async (): Promise<void> => {
    for (const s of slots) clearTimeout(s.respawn);
    clearTimeout(retryTimer);
    const running = slots.flatMap((s) => (s.worker ? [s.worker] : []));
    await Promise.all(
      running.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            const kill = setTimeout(() => {
              logger.error({ pid: w.process.pid }, 'worker did not drain in time: killed');
              w.process.kill('SIGKILL');
            }, settings.limits.shutdownGraceMs + SHUTDOWN_MARGIN_MS);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            if (w.isConnected()) w.send({ pc: 'shutdown' });
            else w.process.kill('SIGTERM');
          }),
      ),
    );
    await settingsWatcher?.close();
    await admin?.close();
    await runtime.close();
    await store.close();
  };

  cluster.setupPrimary({ serialization: 'json' });
  try {
    await new Promise<void>((resolve, reject) => {
      onAllReady = resolve;
      onStartFailure = (why) => reject(new Error(why));
      for (const s of slots) fork(s);
    });
  } catch (err) {
    logger.fatal({ err }, 'cannot start the workers');
    stopping = true;
    await shutdown();
    return 1;
  }
  started = true;
  // Files changed while the processes started: bring every worker to the primary's version.
  const inForce = runtime.snapshot?.version;
  for (const s of slots) if (inForce && s.version !== inForce) void vote([s], inForce);
  let adminAddress: string | undefined;
  try {
    if (admin && config.admin) {
      await admin.listen({ port: config.admin.port, host: config.admin.host });
      const info = admin.server.address();
      if (info && typeof info === 'object')
        adminAddress = `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`;
    }
  } catch (err) {
    logger.fatal({ err, code: (err as NodeJS.ErrnoException).code }, 'cannot listen');
    stopping = true;
    await shutdown();
    return 1;
  }
  if (config.watch) await runtime.watch();
  // SIGHUP re-reads gateway.yaml (its live fields reach every worker) and reloads specs and
  // policies as a file change does (the reload is voted by every worker).
  process.on('SIGHUP', () => {
    logger.info({ signal: 'SIGHUP' }, 'reloading configuration');
    reloadSettings()
      .then(() => runtime.reload())
      .catch((err: unknown) => logger.error({ err }, 'reload failed'));
  });
  const settingsWatcher = config.watch ? await watchSettings(config, logger, reloadSettings) : undefined;
  logger.info(
    { ...firstAddresses, admin: adminAddress, version: runtime.snapshot?.version, workers: config.workers },
    'portcullis listening',
  );
  return waitForStop(logger, async () => {
    stopping = true;
    await shutdown();
  });
}

/** Resolve 0 once SIGTERM/SIGINT has drained everything; a second signal exits 1 at once. */
function waitForStop(logger: Logger, drain: () => Promise<void>): Promise<number> {
  return new Promise<number>((resolveExit) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
        resolveExit(1);
        return;
      }
      stopping = true;
      logger.info({ signal }, 'shutting down: draining every worker');
      drain().then(
        () => {
          logger.info('shutdown complete');
          resolveExit(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          resolveExit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/** Per service, the worst any worker sees: most ejected and unhealthy upstreams, panic if any is. */
export function mergeUpstreams(statuses: readonly WorkerStatus[]): Record<string, GroupStatus> {
  const out: Record<string, GroupStatus> = {};
  for (const { upstreams } of statuses) {
    for (const [service, s] of Object.entries(upstreams)) {
      const seen = out[service];
      out[service] = seen
        ? {
            ...seen,
            ejected: Math.max(seen.ejected, s.ejected),
            unhealthy: Math.max(seen.unhealthy, s.unhealthy),
            panic: seen.panic || s.panic,
          }
        : s;
    }
  }
  return out;
}

/** How bad each health is, for taking the worst over the workers. */
const HEALTH_RANK: Record<UpstreamView['health'], number> = { healthy: 0, ejected: 1, unhealthy: 2 };

/**
 * GET /upstreams of the instance: per service and upstream URL, the worst health any worker sees
 * (with the latest ejection end and the most failures and ejections), the in-flight and pending
 * requests summed over the workers, traffic received if any worker sends it some, panic if any
 * worker is in panic, in zone only if every worker is.
 */
export function mergeGroupViews(statuses: readonly WorkerStatus[]): Record<string, GroupView> {
  const out: Record<string, GroupView> = {};
  for (const { groups } of statuses) {
    for (const [service, g] of Object.entries(groups)) {
      const seen = out[service];
      if (!seen) {
        out[service] = { ...g, upstreams: g.upstreams.map((u) => ({ ...u })) };
        continue;
      }
      seen.panic ||= g.panic;
      if (seen.inZone !== null && g.inZone !== null) seen.inZone &&= g.inZone;
      for (const u of g.upstreams) {
        const m = seen.upstreams.find((x) => x.url === u.url);
        if (!m) {
          seen.upstreams.push({ ...u });
          continue;
        }
        if (HEALTH_RANK[u.health] > HEALTH_RANK[m.health]) m.health = u.health;
        if (u.ejectedUntil !== null && (m.ejectedUntil === null || u.ejectedUntil > m.ejectedUntil))
          m.ejectedUntil = u.ejectedUntil;
        m.receivingTraffic ||= u.receivingTraffic;
        m.consecutiveFailures = Math.max(m.consecutiveFailures, u.consecutiveFailures);
        m.ejections = Math.max(m.ejections, u.ejections);
        m.inFlight += u.inFlight;
        m.pending += u.pending;
      }
    }
  }
  return out;
}

/** What a worker is started with: the settings in force, minus what the primary keeps (admin port, watching). */
function workerConfigOf(settings: GatewayConfig): GatewayConfig {
  return { ...settings, watch: false, admin: undefined };
}
