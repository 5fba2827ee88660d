/**
 * A worker of a `workers: N` gateway (see primary.ts). It gets its configuration from the primary
 * (never from gateway.yaml itself), serves the shared listeners, uses the primary's memory store
 * over IPC (or its own Redis connection), reloads only when the primary says so and swaps only on
 * the primary's commit, answers the primary's metrics and status requests, and drains on the
 * primary's shutdown (or when the primary is gone).
 */

import { upstreamGroups, upstreamStatus } from '../admin/admin.ts';
import type { GatewayConfig } from '../config/schema.ts';
import type { Gateway, ListenAddresses, WorkerRole } from '../gateway.ts';
import type { Snapshot } from '../runtime.ts';
import { createIpcStore, type IpcStore } from './ipc-store.ts';
import { type FromPrimary, type FromWorker, isProtocolMessage } from './protocol.ts';

/** The worker's side of the cluster: what createGateway takes, and the wiring once it listens. */
export interface ClusterWorker extends WorkerRole {
  /**
   * Before listening: whether the primary admits this worker. It does when the worker built the
   * configuration in force (or rebuilt it on the primary's request); a worker that cannot (a file
   * on disk changed or broke since the primary loaded it) must not serve, and exits to be retried.
   */
  admit(gateway: Gateway): Promise<boolean>;
  /**
   * Once listening: tell the primary, answer its reload, metrics and status requests, and call
   * `stop` once, on the primary's shutdown, on SIGTERM, or when the primary is gone.
   */
  serve(gateway: Gateway, addresses: ListenAddresses, stop: (reason: string) => void): void;
}

function send(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}

/** Ask the primary for the instance's configuration (resolved gateway.yaml, env applied). */
export function receiveConfig(): Promise<{ config: GatewayConfig; sharedStore: boolean }> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if (!isProtocolMessage(message) || message.pc !== 'config') return;
      const m = message as Extract<FromPrimary, { pc: 'config' }>;
      process.off('message', onMessage);
      process.off('disconnect', onGone);
      resolve({ config: m.config, sharedStore: m.store === 'primary' });
    };
    const onGone = () => reject(new Error('the primary process went away before sending the configuration'));
    process.on('message', onMessage);
    process.once('disconnect', onGone);
    send({ pc: 'hello' });
  });
}

/** Join the cluster: the store (the primary's, when `sharedStore`) and the reload vote. */
export function joinCluster(sharedStore: boolean): ClusterWorker {
  const channel = {
    get connected() {
      return process.connected;
    },
    send,
  };
  const store: IpcStore | undefined = sharedStore ? createIpcStore(channel) : undefined;
  /** The primary's reload round being voted on, and the commits awaited, by round. */
  let round = 0;
  let voted = false;
  /** True while a reload the primary asked for runs (any other is local: a settings change). */
  let inRound = false;
  const commits = new Map<number, (ok: boolean) => void>();
  let gateway: Gateway | undefined;
  let admitted: ((ok: boolean) => void) | undefined;
  let stopOnce: ((reason: string) => void) | undefined;

  const reload = async (r: number) => {
    round = r;
    voted = false;
    inRound = true;
    try {
      await gateway?.runtime.reload();
    } finally {
      inRound = false;
    }
    // Nothing built (every file rejected, or shut down): vote for no version, which aborts the round.
    if (!voted) send({ pc: 'prepared', round: r, version: null });
  };

  process.on('message', (message: unknown) => {
    if (!isProtocolMessage(message)) return;
    const m = message as FromPrimary;
    switch (m.pc) {
      case 'store':
        store?.receive(m);
        break;
      case 'reload':
        void reload(m.round);
        break;
      case 'admit':
        admitted?.(m.ok);
        admitted = undefined;
        break;
      case 'commit':
        commits.get(m.round)?.(m.ok);
        commits.delete(m.round);
        break;
      case 'metrics':
        void gateway?.metrics.registry
          .getMetricsAsJSON()
          .then((metrics) => send({ pc: 'metrics', id: m.id, metrics }));
        break;
      case 'status': {
        const snapshot = gateway?.runtime.snapshot;
        send({
          pc: 'status',
          id: m.id,
          status: {
            version: snapshot?.version ?? null,
            upstreams: snapshot ? upstreamStatus(snapshot) : {},
            groups: snapshot ? upstreamGroups(snapshot) : {},
          },
        });
        break;
      }
      case 'settings':
        void gateway?.applySettings(m.config);
        break;
      case 'shutdown':
        stopOnce?.('shutdown (primary)');
        break;
    }
  });
  process.once('disconnect', () => {
    store?.disconnected();
    admitted?.(false);
    for (const commit of commits.values()) commit(false);
    commits.clear();
    stopOnce?.('primary gone');
  });

  return {
    store,
    beforeSwap(snapshot: Snapshot): Promise<boolean> {
      // A local rebuild (gateway.yaml settings applied) may swap only what every worker serves.
      if (!inRound) return Promise.resolve(snapshot.version === gateway?.runtime.snapshot?.version);
      voted = true;
      const r = round;
      return new Promise<boolean>((resolve) => {
        if (!process.connected) return resolve(false);
        commits.set(r, resolve);
        send({ pc: 'prepared', round: r, version: snapshot.version });
      });
    },
    admit(gw) {
      gateway = gw;
      if (!process.connected) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        admitted = resolve;
        send({ pc: 'loaded', version: gw.runtime.snapshot?.version ?? '' });
      });
    },
    serve(gw, addresses, stop) {
      gateway = gw;
      let stopping = false;
      stopOnce = (reason) => {
        if (stopping) return;
        stopping = true;
        stop(reason);
      };
      // Ctrl-C reaches the whole process group: the primary relays it as a shutdown.
      process.on('SIGINT', () => undefined);
      process.on('SIGTERM', () => stopOnce?.('SIGTERM'));
      if (!process.connected) return stopOnce('primary gone');
      send({
        pc: 'ready',
        version: gw.runtime.snapshot?.version ?? '',
        addresses: { http: addresses.http, https: addresses.https },
      });
    },
  };
}
