/**
 * The commit vote a `workers: N` reload goes through (RuntimeOptions.beforeSwap, driven by
 * src/cluster/primary.ts): a snapshot the vote refuses is never swapped in, and the upstream
 * groups of the one still serving stay in use rather than retiring with the refused build.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { spec } from '../../test/helpers/gateway.ts';
import { resolveGatewayConfig } from '../config/load.ts';
import { createLogger } from '../logger.ts';
import { POLICY_KINDS } from '../policies/index.ts';
import { Runtime, type Snapshot } from '../runtime.ts';
import { createMemoryStore } from '../state/memory.ts';

const runtimes: Runtime[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((r) => r.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function project(upstream: string) {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-vote-'));
  dirs.push(dir);
  await mkdir(join(dir, 'openapi'));
  const write = (url: string) =>
    writeFile(join(dir, 'openapi', 'svc.yaml'), stringify(spec({ basePath: '/svc', upstreams: [url] })));
  await write(upstream);
  return { dir, write };
}

function runtimeFor(dir: string, beforeSwap: (s: Snapshot) => Promise<boolean>): Runtime {
  const config = resolveGatewayConfig(
    { openapi: './openapi', policies: './policies', watch: false },
    { baseDir: dir, env: {} },
  );
  const runtime = new Runtime({
    config,
    logger: createLogger('silent'),
    store: createMemoryStore(),
    kinds: POLICY_KINDS,
    healthChecks: false,
    beforeSwap,
  });
  runtimes.push(runtime);
  return runtime;
}

const groupOf = (s: Snapshot | null) => [...(s?.entries.values() ?? [])][0]?.target?.group;

describe('the reload commit vote (workers: N)', () => {
  it('a refused snapshot is not swapped in; the serving groups stay, and a later accepted reload back to them reuses them', async () => {
    const { dir, write } = await project('http://127.0.0.1:4101');
    let accept = false;
    const votes: string[] = [];
    const runtime = runtimeFor(dir, async (s) => {
      votes.push(s.version);
      return accept;
    });
    const first = await runtime.load();
    const serving = groupOf(first);
    expect(votes).toEqual([]); // the initial load is not voted on

    await write('http://127.0.0.1:4102');
    const refused = await runtime.reload();
    expect(refused.ok).toBe(false);
    expect(refused.version).toBe(first.version);
    expect(refused.issues.at(-1)?.message).toMatch(/not committed by every worker/);
    expect(runtime.snapshot).toBe(first);
    expect(votes).toHaveLength(1);
    expect(votes[0]).not.toBe(first.version);

    // Back to the first upstream, accepted: the group serving all along is the one reused, not a
    // new one (had it been retired by the refused build, it would be closed under live traffic).
    await write('http://127.0.0.1:4101');
    accept = true;
    const back = await runtime.reload();
    expect(back.ok).toBe(true);
    expect(groupOf(runtime.snapshot)).toBe(serving);
  });

  it('an accepted vote swaps the snapshot the vote was asked about', async () => {
    const { dir, write } = await project('http://127.0.0.1:4101');
    let asked: Snapshot | undefined;
    const runtime = runtimeFor(dir, async (s) => {
      asked = s;
      return true;
    });
    await runtime.load();
    await write('http://127.0.0.1:4103');
    const result = await runtime.reload();
    expect(result.ok).toBe(true);
    expect(runtime.snapshot).toBe(asked);
    expect(groupOf(runtime.snapshot)?.targets.map((t) => t.url)).toEqual(['http://127.0.0.1:4103']);
  });
});
