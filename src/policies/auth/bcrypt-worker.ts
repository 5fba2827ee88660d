/**
 * A bcrypt worker thread (see bcrypt-pool.ts): answers `{ id, password, hash }` with
 * `{ id, ok }`, one comparison at a time. bcryptjs is pure JS, so a comparison blocks whatever
 * thread runs it for its whole cost (~65 ms at cost 10): that thread is this one, never the
 * gateway's event loop.
 */
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

/** One comparison asked by the pool. */
export interface CompareJob {
  id: number;
  password: string;
  hash: string;
}

parentPort?.on('message', (job: CompareJob) => {
  let ok = false;
  try {
    ok = bcrypt.compareSync(job.password, job.hash);
  } catch {
    // A malformed hash never matches; the loader already refuses non-bcrypt entries.
  }
  parentPort?.postMessage({ id: job.id, ok });
});
