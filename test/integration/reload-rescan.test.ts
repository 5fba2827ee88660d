import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { resolveGatewayConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/logger.ts';
import { POLICY_KINDS } from '../../src/policies/index.ts';
import { folderStamp, Runtime } from '../../src/runtime.ts';
import { createMemoryStore } from '../../src/state/memory.ts';
import { captureLogs, spec } from '../helpers/gateway.ts';

/**
 * The safety net under the file watcher: a change whose file-system event never came (seen on a
 * loaded machine; usual on network and some container volumes) is still found by comparing the
 * folders with what the last load read. Losing an inotify event cannot be provoked on purpose,
 * so these tests call the comparison the watcher's timer runs (Runtime.rescan) directly.
 */
const specB = spec({ basePath: '/b', upstreams: ['http://127.0.0.1:9'], operations: { 'GET /x': 'getB' } });

describe('reload: the folders are rescanned for changes the watcher missed', () => {
  let dir: string;
  let runtime: Runtime | undefined;
  afterEach(async () => {
    await runtime?.close();
    runtime = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function start(): Promise<Runtime> {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-rescan-'));
    await mkdir(join(dir, 'openapi'));
    await mkdir(join(dir, 'policies'));
    await writeFile(
      join(dir, 'openapi', 'a.yaml'),
      stringify(
        spec({ basePath: '/a', upstreams: ['http://127.0.0.1:9'], operations: { 'GET /x': 'getA' } }),
      ),
    );
    runtime = new Runtime({
      config: resolveGatewayConfig({ watch: false }, { baseDir: dir, env: {} }),
      logger: createLogger('silent'),
      store: createMemoryStore(),
      kinds: POLICY_KINDS,
    });
    await runtime.load();
    return runtime;
  }

  it('finds nothing to do when nothing changed since the last load', async () => {
    const rt = await start();
    expect(await rt.rescan()).toBe(false);
  });

  it('finds a spec added after the last load, and nothing more once it is loaded', async () => {
    const rt = await start();
    await writeFile(
      join(dir, 'openapi', 'b.yaml'),
      stringify(
        spec({ basePath: '/b', upstreams: ['http://127.0.0.1:9'], operations: { 'GET /x': 'getB' } }),
      ),
    );
    expect(await rt.rescan()).toBe(true);
    const result = await rt.reload();
    expect(result.issues).toEqual([]);
    expect(rt.snapshot?.table.find('GET', '/b/x')?.route.operationId).toBe('getB');
    expect(await rt.rescan()).toBe(false);
  });

  it('finds a policy file edited in place (same name, new mtime) and a file removed', async () => {
    const rt = await start();
    const policy = join(dir, 'policies', 'p.yaml');
    await writeFile(policy, 'rules: []\n');
    await rt.reload();
    expect(await rt.rescan()).toBe(false);
    const later = new Date(Date.now() + 5000);
    await utimes(policy, later, later);
    expect(await rt.rescan()).toBe(true);
    await rt.reload();
    await rm(policy);
    expect(await rt.rescan()).toBe(true);
  });

  it('works without a policies folder, and finds one created later', async () => {
    const rt = await start();
    await rm(join(dir, 'policies'), { recursive: true });
    await rt.reload();
    await writeFile(
      join(dir, 'openapi', 'b.yaml'),
      stringify(
        spec({ basePath: '/b', upstreams: ['http://127.0.0.1:9'], operations: { 'GET /x': 'getB' } }),
      ),
    );
    expect(await rt.rescan()).toBe(true);
    await rt.reload();
    expect(await rt.rescan()).toBe(false);
    await mkdir(join(dir, 'policies'));
    expect(await rt.rescan()).toBe(true);
  });

  it('without a policies folder, the watcher itself reports a spec added to openapi/ (chokidar given a missing folder reported nothing)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-rescan-'));
    await mkdir(join(dir, 'openapi'));
    const logs = captureLogs('info');
    const rt = new Runtime({
      config: resolveGatewayConfig({ watch: true }, { baseDir: dir, env: {} }),
      logger: logs.logger,
      store: createMemoryStore(),
      kinds: POLICY_KINDS,
    });
    runtime = rt;
    await rt.load();
    await rt.watch();
    const reloaded = new Promise<void>((resolve) => rt.onReload(() => resolve()));
    await writeFile(join(dir, 'openapi', 'b.yaml'), stringify(specB));
    await reloaded;
    expect(rt.snapshot?.table.find('GET', '/b/x')?.route.operationId).toBe('getB');
    // Reported by a file-system event, not found later by the rescan.
    expect(logs.lines.filter((l) => l.code === 'PC_WATCH_MISSED')).toEqual([]);
    // A policies folder created later is watched too: a policy file in it reloads.
    await mkdir(join(dir, 'policies'));
    const again = new Promise<void>((resolve) => rt.onReload(() => resolve()));
    await writeFile(join(dir, 'policies', 'p.yaml'), 'rules: []\n');
    await again;
  });

  it('stamps sizes and mtimes of files in subfolders too (shared $ref targets)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-rescan-'));
    await mkdir(join(dir, 'shared'), { recursive: true });
    const before = await folderStamp([dir]);
    await writeFile(join(dir, 'shared', 'pet.yaml'), 'type: object\n');
    expect(await folderStamp([dir])).not.toBe(before);
  });
});
