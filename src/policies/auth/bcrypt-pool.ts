/**
 * bcrypt off the event loop. bcryptjs is pure JS and its async API slices work into 100 ms
 * turns, i.e. a cost-10 comparison (~65 ms) still runs in one piece on the event loop: with 20
 * clients guessing passwords, a cheap GET on another route took 184-196 ms on average (p99
 * 1.8-2.2 s) in `bench/auth-guessing.ts`, against 1.5 ms idle. A small pool of worker threads runs
 * the comparisons instead: 6.6-7.1 ms on average (p99 40 ms) under the same guessing, most of it
 * the cost of answering ~2300 refused guesses a second on a 2-core machine.
 *
 * The queue in front of the workers is bounded: when it is full, `compare` rejects with
 * BcryptBusyError at once (the basic method answers 429 `PC_RATE_LIMITED`, reason `auth_busy`,
 * Retry-After 1) instead of letting a guessing client build an unbounded backlog.
 */
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import bcrypt from 'bcryptjs';
import type { CompareJob } from './bcrypt-worker.ts';

/**
 * Worker threads of the shared pool: one core is left to the event loop, 1 to 4; one per process
 * under `workers:` (node:cluster), where the processes already take every core.
 */
export const BCRYPT_WORKERS = cluster.isWorker ? 1 : Math.max(1, Math.min(4, availableParallelism() - 1));
/** Comparisons that may wait for a worker, per worker (about 16 × 65 ms of work each at cost 10). */
export const BCRYPT_QUEUE_PER_WORKER = 16;

/** The pool's queue is full: the comparison was not attempted. */
export class BcryptBusyError extends Error {
  constructor() {
    super('too many password checks in progress');
    this.name = 'BcryptBusyError';
  }
}

export interface BcryptPoolOptions {
  /** Worker threads, started on demand. Default BCRYPT_WORKERS. */
  size?: number;
  /** Comparisons waiting for a free worker at most. Default size × BCRYPT_QUEUE_PER_WORKER. */
  maxQueued?: number;
}

interface Job extends CompareJob {
  resolve(ok: boolean): void;
  reject(err: unknown): void;
}

interface Slot {
  worker: Worker;
  job?: Job;
  /** It started: a failure later is not a reason to stop using workers. */
  online: boolean;
}

const WORKER_URL = new URL('./bcrypt-worker.ts', import.meta.url);

/** A bounded pool of bcrypt worker threads (see the module comment). */
export class BcryptPool {
  readonly #size: number;
  readonly #maxQueued: number;
  readonly #slots = new Set<Slot>();
  readonly #queue: Job[] = [];
  #nextId = 0;
  /** Workers cannot start here (e.g. no TypeScript support for the worker file): compare in-thread. */
  #inThread = false;
  #closed = false;

  constructor(options: BcryptPoolOptions = {}) {
    this.#size = options.size ?? BCRYPT_WORKERS;
    this.#maxQueued = options.maxQueued ?? this.#size * BCRYPT_QUEUE_PER_WORKER;
  }

  /** Whether `password` matches the bcrypt `hash`; rejects with BcryptBusyError when the queue is full. */
  compare(password: string, hash: string): Promise<boolean> {
    if (this.#inThread) return bcrypt.compare(password, hash);
    const idle = this.#idleSlot();
    if (!idle && this.#queue.length >= this.#maxQueued) return Promise.reject(new BcryptBusyError());
    return new Promise<boolean>((resolve, reject) => {
      const job: Job = { id: this.#nextId++, password, hash, resolve, reject };
      if (idle) this.#run(idle, job);
      else this.#queue.push(job);
    });
  }

  /** Workers running, comparisons in progress and waiting (tests, metrics). */
  stats(): { workers: number; busy: number; queued: number } {
    let busy = 0;
    for (const s of this.#slots) if (s.job) busy++;
    return { workers: this.#slots.size, busy, queued: this.#queue.length };
  }

  /** Stop every worker; comparisons in progress or waiting reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const stopping = [...this.#slots].map((s) => s.worker.terminate());
    for (const job of this.#queue.splice(0)) job.reject(new Error('bcrypt pool closed'));
    await Promise.all(stopping);
  }

  #idleSlot(): Slot | undefined {
    for (const s of this.#slots) if (!s.job) return s;
    return this.#slots.size < this.#size ? this.#spawn() : undefined;
  }

  #spawn(): Slot {
    const worker = new Worker(WORKER_URL);
    // Never keeps the process alive: a request waiting for an answer does.
    worker.unref();
    const slot: Slot = { worker, online: false };
    worker.once('online', () => {
      slot.online = true;
    });
    worker.on('message', (msg: { id: number; ok: boolean }) => {
      const job = slot.job;
      slot.job = undefined;
      if (job?.id === msg.id) job.resolve(msg.ok);
      const next = this.#queue.shift();
      if (next) this.#run(slot, next);
    });
    const lost = (err: unknown) => {
      if (!this.#slots.delete(slot) || this.#closed) return;
      if (!slot.online) this.#inThread = true;
      const job = slot.job;
      slot.job = undefined;
      if (this.#inThread) {
        // Workers cannot start here: what was handed to them is compared in-thread instead.
        for (const j of job ? [job, ...this.#queue.splice(0)] : this.#queue.splice(0))
          bcrypt.compare(j.password, j.hash).then(j.resolve, j.reject);
        return;
      }
      job?.reject(err);
      const next = this.#queue.shift();
      if (next) this.#run(this.#spawn(), next);
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`bcrypt worker exited with code ${code}`)));
    this.#slots.add(slot);
    return slot;
  }

  #run(slot: Slot, job: Job): void {
    slot.job = job;
    slot.worker.postMessage({ id: job.id, password: job.password, hash: job.hash } satisfies CompareJob);
  }
}

let shared: BcryptPool | undefined;

/** The process-wide pool every basic-auth method uses (created on first use). */
export function sharedBcryptPool(): BcryptPool {
  shared ??= new BcryptPool();
  return shared;
}
