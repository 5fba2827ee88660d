/**
 * The Store of a worker with `workers: N` and no Redis: the instance's memory store lives in the
 * primary, and each operation is a message to it. Operations of one event-loop turn go out as one
 * message (flushed on setImmediate) and come back as one, so a burst of requests costs one IPC
 * round trip, not one per request. `limit: 50` then admits 50 per instance, whatever N.
 */
import type { RateDecision, RateLimitSpec, Store } from '../state/store.ts';
import type { FromPrimary, FromWorker, HitValue, StoreOp, StoreResult } from './protocol.ts';
import { primaryStoreStatus } from './protocol.ts';

/** The IPC channel to the primary (`process` in a worker; a fake in unit tests). */
export interface Channel {
  readonly connected: boolean;
  send(message: FromWorker): unknown;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** The worker side: a Store whose operations the primary performs. Feed it the primary's `store` answers. */
export interface IpcStore extends Store {
  /** Settle the operations a `store` message from the primary answers. */
  receive(message: Extract<FromPrimary, { pc: 'store' }>): void;
  /** The primary is gone: fail every pending and future operation (policies apply onStoreError). */
  disconnected(): void;
}

/** Create a worker's IPC store over `channel`. */
export function createIpcStore(channel: Channel): IpcStore {
  const pending = new Map<number, Pending>();
  let queue: StoreOp[] = [];
  let flushing = false;
  let nextId = 1;
  let gone = false;

  const flush = () => {
    flushing = false;
    const ops = queue;
    queue = [];
    if (gone || !channel.connected) return failAll(ops.map((op) => op[1]));
    channel.send({ pc: 'store', ops });
  };
  const failAll = (ids: Iterable<number>) => {
    for (const id of ids) {
      const p = pending.get(id);
      pending.delete(id);
      p?.reject(new Error('store unreachable: the primary process is gone'));
    }
  };
  const enqueue = <T>(build: (id: number) => StoreOp): Promise<T> => {
    if (gone) return Promise.reject(new Error('store unreachable: the primary process is gone'));
    const id = nextId++;
    const promise = new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    queue.push(build(id));
    if (!flushing) {
      flushing = true;
      setImmediate(flush);
    }
    return promise;
  };

  return {
    kind: 'memory',
    hit(key: string, spec: RateLimitSpec): Promise<RateDecision> {
      return enqueue<HitValue>((id) => ['hit', id, key, spec.limit, spec.windowMs, spec.cost ?? 1]).then(
        ([allowed, limit, remaining, resetMs, retryAfterMs]) => ({
          allowed: allowed === 1,
          limit,
          remaining,
          resetMs,
          retryAfterMs,
        }),
      );
    },
    getSticky(key: string): Promise<string | null> {
      return enqueue<string | null>((id) => ['get', id, key]);
    },
    setSticky(key: string, upstreamId: string, ttlMs: number): Promise<void> {
      return enqueue<null>((id) => ['set', id, key, upstreamId, ttlMs]).then(() => undefined);
    },
    status: () => primaryStoreStatus(!gone && channel.connected),
    receive(message) {
      for (const [id, value, error] of message.results) {
        const p = pending.get(id);
        if (!p) continue;
        pending.delete(id);
        if (error !== undefined) p.reject(new Error(error));
        else p.resolve(value);
      }
    },
    disconnected() {
      gone = true;
      failAll([...pending.keys()]);
    },
    close: () => Promise.resolve(),
  };
}

/** The primary side: perform a worker's operations on the instance's store, answering all at once. */
export async function serveStoreOps(store: Store, ops: readonly StoreOp[]): Promise<StoreResult[]> {
  return Promise.all(
    ops.map(async (op): Promise<StoreResult> => {
      const id = op[1];
      try {
        switch (op[0]) {
          case 'hit': {
            const d = await store.hit(op[2], { limit: op[3], windowMs: op[4], cost: op[5] });
            return [id, [d.allowed ? 1 : 0, d.limit, d.remaining, d.resetMs, d.retryAfterMs]];
          }
          case 'get':
            return [id, await store.getSticky(op[2])];
          case 'set':
            await store.setSticky(op[2], op[3], op[4]);
            return [id, null];
        }
      } catch (err) {
        return [id, null, (err as Error).message];
      }
    }),
  );
}
