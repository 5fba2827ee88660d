/**
 * The IPC messages between the primary and its workers (`workers: N`). Every message carries `pc`
 * (its kind), so none is mistaken for Node's own cluster messages or prom-client's.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { GatewayConfig } from '../config/schema.ts';
import type { StoreStatus } from '../state/store.ts';
import type { GroupStatus, GroupView } from '../upstream/group.ts';

/**
 * One store operation of a worker, as an array (small to encode): a rate-limit hit, a sticky
 * lookup or a sticky write. The second element is the operation's id within the worker.
 */
export type StoreOp =
  | [op: 'hit', id: number, key: string, limit: number, windowMs: number, cost: number]
  | [op: 'get', id: number, key: string]
  | [op: 'set', id: number, key: string, upstreamId: string, ttlMs: number];

/**
 * The answer to one StoreOp: `[id, value]` or `[id, null, error message]`. A hit's value is
 * `[allowed 0|1, limit, remaining, resetMs, retryAfterMs]`; a get's the upstream id or null.
 */
export type StoreResult = [id: number, value: HitValue | string | null, error?: string];
export type HitValue = [
  allowed: 0 | 1,
  limit: number,
  remaining: number,
  resetMs: number,
  retryAfterMs: number,
];

/** What a worker reports about itself for /readyz. */
export interface WorkerStatus {
  version: string | null;
  upstreams: Record<string, GroupStatus>;
  /** Its upstream groups as GET /upstreams shows them. */
  groups: Record<string, GroupView>;
}

/** Worker → primary. */
export type FromWorker =
  | { pc: 'hello' }
  | { pc: 'loaded'; version: string }
  | { pc: 'ready'; version: string; addresses: { http?: string; https?: string } }
  | { pc: 'store'; ops: StoreOp[] }
  | { pc: 'prepared'; round: number; version: string | null }
  | { pc: 'metrics'; id: number; metrics: MetricObjectWithValues<MetricValue<string>>[] }
  | { pc: 'status'; id: number; status: WorkerStatus };

/** Primary → worker. */
export type FromPrimary =
  | { pc: 'config'; config: GatewayConfig; store: 'primary' | 'own' }
  | { pc: 'store'; results: StoreResult[] }
  | { pc: 'admit'; ok: boolean }
  | { pc: 'settings'; config: GatewayConfig }
  | { pc: 'reload'; round: number }
  | { pc: 'commit'; round: number; ok: boolean }
  | { pc: 'metrics'; id: number }
  | { pc: 'status'; id: number }
  | { pc: 'shutdown' };

/** The store status a worker reports while its primary is reachable or not. */
export function primaryStoreStatus(connected: boolean): StoreStatus {
  return connected
    ? { kind: 'memory', ok: true }
    : { kind: 'memory', ok: false, error: 'the primary process is gone' };
}

/** True for a message of this protocol (not Node's cluster internals, not prom-client's). */
export function isProtocolMessage(message: unknown): message is { pc: string } {
  return (
    typeof message === 'object' && message !== null && typeof (message as { pc?: unknown }).pc === 'string'
  );
}
