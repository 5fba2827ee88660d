/**
 * Run the public HTTP caching test suite (http-tests/cache-tests, the suite behind
 * https://cache-tests.fyi, npm `http-cache-tests`) against the gateway as a shared cache, and print
 * the score per group.
 *
 *   npm run cache-tests                 # whole suite, score per group
 *   npm run cache-tests -- --id <test>  # one test, with the suite's request/response dump
 *   npm run cache-tests -- --keep       # keep the temporary directory (its path is printed)
 *   CACHE_TESTS_REDIS=redis://127.0.0.1:6379 npm run cache-tests   # with the Redis cache store
 *
 * What it does, all on 127.0.0.1: installs the suite into a temporary directory (`npm install`
 * there, never in the project), starts its test server as the upstream, starts a gateway process
 * (bin/portcullis.js) with a pass-through service at `/` forwarding everything to it and one rule
 * `cache: {}`, runs the suite's command-line client against the gateway, and grades the results
 * the way cache-tests.fyi does (required + optimal tests, dependencies honoured; `check` tests are
 * informational and not graded). Tests the command-line client cannot run (browser-only ones)
 * count as not passed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The suite's version: pinned, so scores compare across runs. */
const SUITE = 'http-cache-tests@0.4.5';
/** Acceptance (issue 11): graded passes, and required failures allowed (none in these groups). */
const TARGET = 210;
const MAX_REQUIRED_FAILURES = 5;
const STRICT_GROUPS = ['auth', 'cc-response', 'vary', 'invalidation'];
const STARTUP_TIMEOUT_MS = 20_000;
const RUN_TIMEOUT_MS = 600_000;

const run = promisify(execFile);
const args = process.argv.slice(2);
const only = args.includes('--id') ? args[args.indexOf('--id') + 1] : undefined;
const keep = args.includes('--keep');
const redis = process.env.CACHE_TESTS_REDIS;

interface SuiteTest {
  id: string;
  kind?: 'required' | 'optimal' | 'check';
  browser_only?: boolean;
  depends_on?: string[];
}
interface SuiteGroup {
  id: string;
  name: string;
  tests: SuiteTest[];
}
type Results = Record<string, true | [string, string]>;

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => ok(port));
    });
  });
}

async function waitFor(url: string, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${what} did not answer ${url} within ${STARTUP_TIMEOUT_MS} ms`);
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((ok) => {
    child.once('exit', () => ok());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

const dir = await mkdtemp(join(tmpdir(), 'portcullis-cache-tests-'));
let origin: ChildProcess | undefined;
let gateway: ChildProcess | undefined;
try {
  console.error(`installing ${SUITE} into ${dir} ...`);
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'cache-tests-run', private: true }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', SUITE], {
    cwd: dir,
    timeout: 300_000,
  });
  const suiteDir = join(dir, 'node_modules', 'http-cache-tests');

  // The suite's server listens on every interface; this launcher binds it to 127.0.0.1 only.
  const originPort = await freePort();
  await writeFile(
    join(dir, 'origin.mjs'),
    [
      "import http from 'node:http'",
      'const listen = http.Server.prototype.listen',
      "http.Server.prototype.listen = function (port, ...rest) { return listen.call(this, Number(port), '127.0.0.1', ...rest) }",
      `await import(${JSON.stringify(pathToFileURL(join(suiteDir, 'server', 'server.mjs')).href)})`,
    ].join('\n'),
  );
  origin = spawn(process.execPath, [join(dir, 'origin.mjs')], {
    cwd: suiteDir,
    env: {
      ...process.env,
      npm_config_protocol: 'http',
      npm_config_port: String(originPort),
      npm_config_pidfile: join(dir, 'origin.pid'),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitFor(`http://127.0.0.1:${originPort}/`, origin, 'the suite server');

  const httpPort = await freePort();
  const adminPort = await freePort();
  const conf = join(dir, 'gateway');
  await run('mkdir', ['-p', join(conf, 'openapi'), join(conf, 'policies')]);
  await writeFile(
    join(conf, 'gateway.yaml'),
    [
      `listen: { http: { port: ${httpPort}, host: 127.0.0.1 } }`,
      `admin: { port: ${adminPort}, host: 127.0.0.1 }`,
      'watch: false',
      'logLevel: warn',
      'telemetry: { accessLog: false }',
      ...(redis ? [`state: { redis: ${JSON.stringify(redis)} }`] : []),
    ].join('\n'),
  );
  await writeFile(
    join(conf, 'openapi', 'suite.yaml'),
    [
      'openapi: 3.1.0',
      'info: { title: cache-tests, version: 1.0.0 }',
      'x-portcullis:',
      '  basePath: /',
      `  upstreams: [{ url: "http://127.0.0.1:${originPort}" }]`,
      '  passThrough: true',
      '  retries: 0 # the suite counts the requests its server sees',
      'paths: {}',
      'components: { schemas: { Any: {} } } # a 3.1 document needs paths, webhooks or components',
    ].join('\n'),
  );
  await writeFile(join(conf, 'policies', 'cache.yaml'), '- match: { service: suite }\n  cache: {}\n');
  gateway = spawn(
    process.execPath,
    [join(ROOT, 'bin', 'portcullis.js'), 'start', '--config', join(conf, 'gateway.yaml')],
    {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const base = `http://127.0.0.1:${httpPort}`;
  await waitFor(`http://127.0.0.1:${adminPort}/healthz`, gateway, 'the gateway');

  const { stdout } = await run(process.execPath, ['--no-warnings', 'cli.mjs'], {
    cwd: suiteDir,
    env: { ...process.env, npm_config_base: base, npm_config_id: only ?? '', npm_package_config_id: '' },
    timeout: RUN_TIMEOUT_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (only) {
    console.log(stdout);
  } else {
    const results = JSON.parse(stdout) as Results;
    const suites = await loadSuite(suiteDir);
    report(suites, results, suiteDir);
  }
} finally {
  await stop(gateway);
  await stop(origin);
  if (keep) console.error(`kept ${dir}`);
  else await rm(dir, { recursive: true, force: true });
}

async function loadSuite(suiteDir: string): Promise<SuiteGroup[]> {
  const tests = (await import(pathToFileURL(join(suiteDir, 'tests', 'index.mjs')).href)) as {
    default: SuiteGroup[];
  };
  const surrogate = (await import(pathToFileURL(join(suiteDir, 'tests', 'surrogate-control.mjs')).href)) as {
    default: SuiteGroup;
  };
  return [...tests.default, surrogate.default];
}

/**
 * Grade as cache-tests.fyi shows it (lib/display.mjs): a test whose dependency did not pass is a
 * dependency failure (grey), a setup failure is blue, a failed required test is a failure (red), a
 * failed optimal one a warning; browser-only tests are not run by the command-line client.
 */
function report(suites: SuiteGroup[], results: Results, _suiteDir: string): void {
  const byId = new Map<string, SuiteTest>();
  for (const s of suites) for (const t of s.tests) byId.set(t.id, t);
  type Grade = 'pass' | 'fail' | 'optional-fail' | 'yes' | 'no' | 'dependency' | 'setup' | 'not-run';
  const grade = (id: string): Grade => {
    const t = byId.get(id);
    const r = results[id];
    if (!t || r === undefined) return 'not-run';
    for (const d of t.depends_on ?? []) {
      const g = grade(d);
      if (g !== 'pass' && g !== 'yes') return 'dependency';
    }
    if (r !== true && r[0] === 'Setup') return 'setup';
    const kind = t.kind ?? 'required';
    if (kind === 'check') return r === true ? 'yes' : 'no';
    if (r === true) return 'pass';
    return kind === 'required' ? 'fail' : 'optional-fail';
  };
  let graded = 0;
  let pass = 0;
  const failures: string[] = [];
  const others: string[] = [];
  const rows: string[][] = [];
  for (const s of suites) {
    const c = { graded: 0, pass: 0, fail: 0, opt: 0, dep: 0, setup: 0, notRun: 0 };
    for (const t of s.tests) {
      const kind = t.kind ?? 'required';
      if (kind === 'check') continue;
      c.graded++;
      const g = grade(t.id);
      if (g === 'pass') c.pass++;
      else if (g === 'fail') {
        c.fail++;
        failures.push(`${s.id}: ${t.id} ${describe(results[t.id], t)}`);
      } else if (g === 'optional-fail') {
        c.opt++;
        others.push(`${s.id}: ${t.id} [optimal] ${describe(results[t.id], t)}`);
      } else {
        if (g === 'dependency') c.dep++;
        else if (g === 'setup') c.setup++;
        else c.notRun++;
        others.push(`${s.id}: ${t.id} [${kind}, ${g}] ${describe(results[t.id], t)}`);
      }
    }
    graded += c.graded;
    pass += c.pass;
    rows.push([s.id, c.pass, c.graded, c.fail, c.opt, c.dep, c.setup, c.notRun].map(String));
  }
  const w = [22, 6, 7, 9, 9, 6, 6, 8];
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 8) : c.padStart(w[i] ?? 8))).join(' ');
  console.log(line(['group', 'pass', 'graded', 'req-fail', 'opt-fail', 'dep', 'setup', 'not-run']));
  for (const r of rows) console.log(line(r));
  console.log(line(['total', String(pass), String(graded), String(failures.length)]));
  console.log(`\ngraded (required + optimal): ${pass} of ${graded}; required failures: ${failures.length}`);
  for (const f of failures) console.log(`  required failure: ${f}`);
  for (const o of others) console.log(`  not passed: ${o}`);
  const strict = failures.filter((f) => STRICT_GROUPS.some((g) => f.startsWith(`${g}:`)));
  const ok = pass >= TARGET && failures.length <= MAX_REQUIRED_FAILURES && strict.length === 0;
  console.log(
    `acceptance (>= ${TARGET}, <= ${MAX_REQUIRED_FAILURES} required failures, none in ${STRICT_GROUPS.join(', ')}): ${ok ? 'met' : 'NOT met'}`,
  );
  if (!ok) process.exitCode = 1;
}

function describe(r: true | [string, string] | undefined, t: SuiteTest): string {
  if (r === undefined) return t.browser_only ? '(browser only: not run)' : '(not run)';
  if (r === true) return `(passed, but not ${(t.depends_on ?? []).join(', ')})`;
  return `(${r[0]}: ${r[1]})`;
}
