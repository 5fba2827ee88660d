#!/usr/bin/env node
// The CLI entry: runs the JavaScript build of src/ (dist/, made by scripts/build.ts), rebuilding
// it first when any source it was built from changed, so a stale build never runs. Running the .ts
// sources directly would cost about 25 MB more resident memory (Node's TypeScript stripper).
// Without esbuild (a production install without devDependencies) and without a current build, it
// runs the sources and says so on stderr. Plain JS, importing nothing of the gateway, so that the
// telemetry SDK (a later step of src/main.ts) can start before Fastify and undici load.
// `npm start` and the Dockerfile run it with --max-semi-space-size=4 (a smaller young
// generation: measured in bench/README.md).
import { spawnSync } from 'node:child_process';
import cluster from 'node:cluster';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('../', import.meta.url);
const DIST = new URL('dist/', ROOT);
const SOURCE_ENTRY = new URL('src/main.ts', ROOT).href;
/** Set by the primary for `workers: N`: its workers run the very build it runs, even if rebuilt since. */
const ENTRY_VAR = '__PORTCULLIS_ENTRY';

/** The manifest of dist/ when every input is as it was built from, else undefined. */
function currentBuild() {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(new URL('manifest.json', DIST), 'utf8'));
  } catch {
    return undefined;
  }
  for (const [file, stamp] of Object.entries(manifest.inputs)) {
    const url = new URL(file, ROOT);
    let s;
    try {
      s = statSync(url);
    } catch {
      return undefined;
    }
    if (s.size !== stamp.size) return undefined;
    // Same size, new mtime (a checkout, a copy): the content decides.
    if (
      s.mtimeMs !== stamp.mtimeMs &&
      createHash('sha1').update(readFileSync(url)).digest('hex') !== stamp.sha1
    )
      return undefined;
  }
  return manifest;
}

/** Runs scripts/build.ts in a child process (this one never loads the TypeScript stripper); its error output, or undefined on success. */
function rebuild() {
  try {
    createRequire(import.meta.url).resolve('esbuild');
  } catch {
    return 'esbuild is not installed (devDependencies)';
  }
  const result = spawnSync(process.execPath, [fileURLToPath(new URL('scripts/build.ts', ROOT)), '--quiet'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (result.status === 0) return undefined;
  return (result.stderr || result.error?.message || `exit ${result.status ?? result.signal}`).trim();
}

function entry() {
  if (cluster.isWorker && process.env[ENTRY_VAR]) return process.env[ENTRY_VAR];
  let manifest = currentBuild();
  if (!manifest) {
    const failure = rebuild();
    manifest = failure === undefined ? currentBuild() : undefined;
    if (!manifest) {
      process.stderr.write(
        `portcullis: dist/ is missing or older than src/ and could not be rebuilt${failure ? `:\n${failure}\n` : ''}\n` +
          'portcullis: running the TypeScript sources instead (about 25 MB more memory); run `npm run build`\n',
      );
      return SOURCE_ENTRY;
    }
  }
  return new URL(manifest.main, DIST).href;
}

const main = entry();
process.env[ENTRY_VAR] = main;
// Stack traces name src/ files and lines (the build's linked source maps).
if (main !== SOURCE_ENTRY) process.setSourceMapsEnabled(true);
await import(main);
