/**
 * `npm run build`: bundles src/ into dist/ with esbuild, the JavaScript that `portcullis`
 * (bin/portcullis.js: `npm start`, `npx portcullis`, the Dockerfile, cluster workers, the bench)
 * runs. Running the .ts sources directly makes Node load its TypeScript stripper, whose memory is
 * never returned (about 25 MB of a gateway's resident memory); the build runs none of it.
 *
 * - ESM for Node 22+, dependencies left as imports (`packages: 'external'`, resolved from
 *   node_modules at run time as before), our own code bundled.
 * - Code splitting: what src/ imports dynamically (the WAF, Redis, tracing, the cluster, the
 *   `validate`/`explain` machinery...) stays in its own chunks, loaded only when a configuration
 *   uses it, as from the sources.
 * - Every output file is named by a hash of its content, so a rebuild never changes a file that a
 *   running gateway may still load lazily, and concurrent builds cannot corrupt each other: files
 *   are written to a temporary name and renamed. dist/manifest.json (written last, the same way)
 *   names the entry and the inputs with their size, mtime and SHA-1; bin/portcullis.js runs the
 *   build only when every input is unchanged and rebuilds otherwise. Files no build referenced for
 *   a day are deleted.
 * - Linked source maps (without the sources, which stay in src/): bin/portcullis.js enables them,
 *   so stack traces name src/ files and lines.
 * - `import.meta.url` means the source file: a `new URL('./worker.ts', import.meta.url)` (a worker
 *   thread's entry) is built as its own entry and points at its output; any other use (data files
 *   next to the source, `createRequire`) is rewritten to the source file's URL, so
 *   `new URL('./data/x.txt', import.meta.url)` reads src/.../data/x.txt. dist/ must therefore stay
 *   next to src/ (it is flat: every output file is directly in dist/).
 *
 * Usage: `node scripts/build.ts [--quiet]`. Takes well under 2 s.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Where the build goes (git-ignored). */
export const DIST_DIR = join(ROOT, 'dist');
/** The file naming the current build; bin/portcullis.js reads it. */
export const MANIFEST_FILE = 'manifest.json';
/** The CLI's source entry. */
const MAIN_ENTRY = join(ROOT, 'src', 'main.ts');
/** Output files no build referenced for this long are deleted (a gateway started earlier may still load them lazily). */
const PRUNE_AFTER_MS = 24 * 60 * 60 * 1000;
/** Node's oldest supported line (package.json engines). */
const TARGET = 'node22';

/** What dist/manifest.json holds. */
export interface Manifest {
  /** The entry to import, relative to dist/ (e.g. `main-ABC123.js`). */
  main: string;
  /** Every file the build read, relative to the root, with what it was when read. */
  inputs: Record<string, InputStamp>;
  /** Every file of this build, relative to dist/. */
  outputs: string[];
  /** esbuild's version (a different esbuild is a different build). */
  esbuild: string;
  /** When it was built (ISO 8601). */
  builtAt: string;
}

/** An input as the build read it: bin/portcullis.js compares size and mtime, and the hash when they differ. */
export interface InputStamp {
  size: number;
  mtimeMs: number;
  sha1: string;
}

/** `new URL('./x.ts', import.meta.url)` (a worker's entry) or any other `import.meta.url|dirname|filename`. */
const IMPORT_META =
  /new URL\(\s*(['"])(\.\.?\/[^'"`$]+\.ts)\1\s*,\s*import\.meta\.url\s*\)|import\.meta\.(url|dirname|filename)\b/g;

/** Bundle src/ into dist/; resolves the manifest written. */
export async function build(): Promise<Manifest> {
  const inputs: Record<string, InputStamp> = {};
  const stampInput = async (file: string, contents?: Buffer) => {
    const s = await stat(file);
    const data = contents ?? (await readFile(file));
    inputs[relative(ROOT, file).split(sep).join('/')] = {
      size: s.size,
      mtimeMs: s.mtimeMs,
      sha1: createHash('sha1').update(data).digest('hex'),
    };
  };
  // This script and esbuild decide what the output is, as much as the sources do.
  await stampInput(fileURLToPath(import.meta.url));

  const sources = await readdir(join(ROOT, 'src'), { recursive: true });
  const workers = new Set<string>();
  for (const name of sources) {
    if (!name.endsWith('.ts') || name.endsWith('.test.ts')) continue;
    const file = join(ROOT, 'src', name);
    for (const m of (await readFile(file, 'utf8')).matchAll(IMPORT_META)) {
      if (m[2]) workers.add(resolve(dirname(file), m[2]));
    }
  }

  // Worker threads' entries first (standalone bundles), so the code that starts them can name their output.
  const workerOutputs = new Map<string, string>();
  const outputs: esbuild.OutputFile[] = [];
  if (workers.size > 0) {
    const result = await esbuild.build(options([...workers], stampInput, new Map()));
    outputs.push(...result.outputFiles);
    for (const [out, meta] of Object.entries(result.metafile.outputs)) {
      if (meta.entryPoint)
        workerOutputs.set(resolve(ROOT, meta.entryPoint), out.slice(out.lastIndexOf('/') + 1));
    }
  }
  const result = await esbuild.build({
    ...options([MAIN_ENTRY], stampInput, workerOutputs),
    splitting: true,
  });
  outputs.push(...result.outputFiles);
  const mainOut = Object.entries(result.metafile.outputs).find(
    ([, meta]) => meta.entryPoint && resolve(ROOT, meta.entryPoint) === MAIN_ENTRY,
  )?.[0];
  if (!mainOut) throw new Error('esbuild produced no output for src/main.ts');

  await mkdir(DIST_DIR, { recursive: true });
  const names = await writeOutputs(outputs);
  const manifest: Manifest = {
    main: mainOut.slice(mainOut.lastIndexOf('/') + 1),
    inputs: Object.fromEntries(Object.entries(inputs).sort(([a], [b]) => a.localeCompare(b))),
    outputs: names,
    esbuild: esbuild.version,
    builtAt: new Date().toISOString(),
  };
  await writeAtomically(join(DIST_DIR, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  await prune(new Set([...names, MANIFEST_FILE]));
  return manifest;
}

/** esbuild's options for `entryPoints`; `stampInput` records every file read, `workerOutputs` maps a worker's source to its output name. */
function options(
  entryPoints: string[],
  stampInput: (file: string, contents?: Buffer) => Promise<void>,
  workerOutputs: Map<string, string>,
): esbuild.BuildOptions & { write: false; metafile: true } {
  return {
    entryPoints,
    absWorkingDir: ROOT,
    outdir: DIST_DIR,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: TARGET,
    packages: 'external',
    // No keepNames: it wraps every function and class in a `__name(fn, "name")` call that defines
    // `name` on each closure as it is created, per request on the hot path (3.4 % of the proxy's
    // CPU in a bench profile, ~2.8 µs a request). Nothing here reads a function's `name`; the
    // bundle keeps source names except where two modules' top-level names collide (`parse2`), and
    // stack traces are mapped back to src/ by the source maps.
    keepNames: false,
    sourcemap: 'linked',
    sourcesContent: false,
    entryNames: '[name]-[hash]',
    chunkNames: '[name]-[hash]',
    legalComments: 'none',
    logLevel: 'silent',
    metafile: true,
    write: false,
    plugins: [
      {
        name: 'portcullis-sources',
        setup(b) {
          b.onLoad({ filter: /\.(ts|json)$/ }, async (args) => {
            if (args.path.includes(`${sep}node_modules${sep}`)) return undefined;
            const contents = await readFile(args.path);
            await stampInput(args.path, contents);
            if (args.path.endsWith('.json')) return { contents, loader: 'json' };
            return {
              contents: rewriteImportMeta(args.path, contents.toString('utf8'), workerOutputs),
              loader: 'ts',
            };
          });
        },
      },
    ],
  };
}

/** See the file comment: worker URLs point at their build, other `import.meta` uses at the source file. */
function rewriteImportMeta(file: string, text: string, workerOutputs: Map<string, string>): string {
  const fromDist = relative(DIST_DIR, file).split(sep).join('/');
  return text.replace(IMPORT_META, (whole, _quote: string, worker: string | undefined, prop: string) => {
    if (worker) {
      const out = workerOutputs.get(resolve(dirname(file), worker));
      if (!out) throw new Error(`${file}: no build of the worker ${worker}`);
      return `new URL(${JSON.stringify(`./${out}`)}, import.meta.url)`;
    }
    const url = `new URL(${JSON.stringify(fromDist)}, import.meta.url)`;
    if (prop === 'url') return `${url}.href`;
    // Paths: dist's own directory (the output file is directly in dist/) joined with the way back to src/.
    if (prop === 'filename') return `(import.meta.dirname + ${JSON.stringify(`/${fromDist}`)})`;
    if (prop === 'dirname') return `(import.meta.dirname + ${JSON.stringify(`/${dirname(fromDist)}`)})`;
    return whole;
  });
}

/** Writes the outputs (temporary name, then rename); an identical file already there is only touched. Resolves their names. */
async function writeOutputs(files: esbuild.OutputFile[]): Promise<string[]> {
  const names: string[] = [];
  const now = new Date();
  for (const f of files) {
    if (dirname(f.path) !== DIST_DIR) throw new Error(`esbuild wrote outside dist/: ${f.path}`);
    names.push(f.path.slice(DIST_DIR.length + 1));
    const existing = await readFile(f.path).catch(() => undefined);
    // Touched, so that pruning (by age) counts from the last build that used it.
    if (existing?.equals(f.contents)) await utimes(f.path, now, now);
    else await writeAtomically(f.path, f.contents);
  }
  return names;
}

async function writeAtomically(file: string, contents: string | Uint8Array): Promise<void> {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await writeFile(tmp, contents);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Deletes files of earlier builds that no build referenced for PRUNE_AFTER_MS (and stray temporary files as old). */
async function prune(keep: Set<string>): Promise<void> {
  const cutoff = Date.now() - PRUNE_AFTER_MS;
  for (const name of await readdir(DIST_DIR)) {
    if (keep.has(name)) continue;
    const file = join(DIST_DIR, name);
    const s = await stat(file).catch(() => undefined);
    if (s?.isFile() && s.mtimeMs < cutoff) await unlink(file).catch(() => undefined);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = performance.now();
  try {
    const manifest = await build();
    if (!process.argv.includes('--quiet')) {
      console.log(
        `built dist/${manifest.main} (${manifest.outputs.filter((o) => o.endsWith('.js')).length} files) in ${Math.round(performance.now() - started)} ms`,
      );
    }
  } catch (err) {
    // esbuild's errors carry file:line:column; print them as such.
    const errors = (err as { errors?: esbuild.Message[] }).errors;
    if (errors?.length) {
      const text = await esbuild.formatMessages(errors, { kind: 'error' });
      console.error(text.join(''));
    } else console.error(err);
    process.exitCode = 1;
  }
}
