/**
 * Vitest global setup: builds dist/ once before any test file runs, so that the tests that spawn
 * `bin/portcullis.js` (test/helpers/cli.ts, spawn.ts) run the current sources' build, as users
 * do, and do not each rebuild it at their first start.
 */
import { build } from '../../scripts/build.ts';

export async function setup(): Promise<void> {
  await build();
}
