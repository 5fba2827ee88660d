/**
 * Which worker this process is, when gateway.yaml says `workers: N` (src/cluster). Read by the
 * logger (every line of a worker, the access log included, carries `worker`) and by tracing (the
 * `portcullis.worker` resource attribute). Kept free of imports beyond node:cluster: the logger
 * loads it on the single-process path too.
 */
import cluster from 'node:cluster';

/** Set by the primary on each worker it forks: the worker's slot, 1..N. */
export const WORKER_SLOT_VAR = 'PORTCULLIS_WORKER_SLOT';

/**
 * This worker's slot (1..N; a replacement for a dead worker takes over its slot, so the values stay
 * bounded), or undefined in a single process and in the primary.
 */
export const WORKER_SLOT: number | undefined = cluster.isWorker
  ? Number(process.env[WORKER_SLOT_VAR] ?? cluster.worker?.id)
  : undefined;
