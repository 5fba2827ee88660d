/**
 * The CLI: `portcullis start | validate | routes`. The only place that listens or exits.
 *
 * Only configuration code is imported statically. Fastify, undici and the gateway are imported
 * after the config is loaded, so that an OpenTelemetry SDK can be started first (its HTTP and
 * undici instrumentations must patch those modules before they load).
 */
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { loadGatewayConfig } from './config/load.ts';
import type { GatewayConfig } from './config/schema.ts';
import { ConfigError, type ConfigIssue, formatIssue } from './errors.ts';
import type { RouteChain } from './pipeline/chain.ts';
import { pinTickObjectShape } from './pipeline/tick-shape.ts';
import type { RouteDescription } from './registry/index.ts';
import { releaseStartupMemory } from './startup-memory.ts';

const USAGE: Record<string, string> = {
  main: `Usage: portcullis <command> [options]

Commands:
  start       Run the gateway (HTTP/HTTPS listeners and the admin port)
  validate    Load gateway.yaml, specs and policies; print the route table; exit 1 on any error
  routes      Print the route table (--json for JSON)
  explain     What the gateway would do with one request, calling no upstream
  test        Run a file of requests with expected outcomes (for CI); exit 1 on a mismatch
  waf-test    Run the WAF on a value or request and explain the verdict ('portcullis waf-test --help')
  help        Show help for a command ('portcullis help start')

Options:
  -c, --config <file>   gateway.yaml to use (default: ./gateway.yaml if present, else defaults)
  -h, --help            Show help for a command
  -v, --version         Print the version

Run 'portcullis <command> --help' for a command's options.`,
  start: `Usage: portcullis start [--config gateway.yaml] [--strict] [--pretty]

Serves the services in the openapi folder (default ./openapi) with the policies in ./policies.
A spec or policy file that fails is handled as on a reload: it is reported (file:line, and on
/readyz), the other services are served, and a failed policy file withholds the services it
protects (503) until it is fixed; when it cannot be told which those are, start refuses.
--strict refuses to start on any error, as validate does.
Reloads specs and policies on change and on SIGHUP; SIGTERM/SIGINT drain in-flight requests,
write out the buffered log lines and exit 0. --pretty logs human-readable lines for a terminal
(logFormat: pretty).
Environment variables (PORTCULLIS_*) override the file; see README.`,
  validate: `Usage: portcullis validate [--config gateway.yaml] [--strict] [--json]

Loads gateway.yaml, every spec and every policy file as start does: resolves $refs, checks
x-portcullis and route conflicts, checks that every policy rule's match names existing services,
operations and tags and selects at least one route, prints the route table. Exits 1 and prints
file:line: field: problem for every error.

Operations whose spec declares security that no auth policy enforces are printed as warnings
(exit 0); --strict makes them errors.`,
  explain: `Usage: portcullis explain <METHOD> <path> [-H 'name: value']... [--body <text> | --body-file <file>]
                          [--ip <address>] [--config gateway.yaml] [--json]

Runs the request through the gateway in this process, as start would serve it, and prints the
canonical target (or why it is refused), the route matched, each policy in phase order with its
rule (file#rule) and what it decided, the upstream group, and the answer. No upstream is called:
a request that would be forwarded says so. State is in memory and fresh (a rate limit sees the
first request of its window); a JWT is verified against the IdP's keys when they can be fetched.
Exits 1 on a configuration error.`,
  test: `Usage: portcullis test <cases.yaml> [--config gateway.yaml] [--json]

Runs each case of the file through the gateway as explain does and compares the outcome:
  - name: creating a pet needs an API key
    request: { method: POST, path: /petstore/pets, headers: { content-type: application/json }, body: { name: Rex } }
    expect: { status: 401, route: createPet, decisions: { auth: deny } }
expect takes status, route (operationId), service, code (PC_...), forwarded (true/false) and
decisions (policy kind: allow | deny | would-deny | error | not-reached). Prints ok / FAIL per
case with what differed; exits 1 on any mismatch or configuration error.`,
  routes: `Usage: portcullis routes [--config gateway.yaml] [--json]

Prints the route table: method, public path, operationId, service, upstreams.`,
};

/** Arguments a command takes after its name (the others take none). */
const POSITIONALS: Record<string, number> = { explain: 2, test: 1 };

/** Exit code for a command line that cannot be understood (unknown command or option). */
const EXIT_USAGE = 2;
/** Exit code of a `workers: N` worker the primary did not admit (EX_CONFIG): it is retried with backoff. */
const EXIT_NOT_ADMITTED = 78;

async function main(argv: string[]): Promise<number> {
  // `waf-test` needs no configuration and has its own options (src/policies/waf/cli.ts).
  if (argv[0] === 'waf-test' || (argv[0] === 'help' && argv[1] === 'waf-test')) {
    const { wafTestCli } = await import('./policies/waf/cli.ts');
    return wafTestCli(argv[0] === 'help' ? ['--help'] : argv.slice(1));
  }
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    // parseArgs throws TypeError with a readable message for unknown options and missing values.
    console.error(`portcullis: ${(err as Error).message}\n\n${USAGE.main}`);
    return EXIT_USAGE;
  }
  const { values, positionals } = parsed;
  // `portcullis help [command]` is the same as `portcullis [command] --help`.
  const helpCommand = positionals[0] === 'help';
  const command = helpCommand ? positionals[1] : positionals[0];
  if (values.version) {
    const pkg = await import('../package.json', { with: { type: 'json' } });
    console.log(pkg.default.version);
    return 0;
  }
  if (!command) {
    console.log(USAGE.main);
    return 0;
  }
  if (!(command in USAGE) || command === 'main') {
    console.error(`portcullis: unknown command "${command}"\n\n${USAGE.main}`);
    return EXIT_USAGE;
  }
  if (values.help || helpCommand) {
    console.log(USAGE[command]);
    return 0;
  }
  const extra = positionals.slice(1 + (POSITIONALS[command] ?? 0));
  if (extra.length > 0) {
    console.error(`portcullis: unexpected argument "${extra[0]}"\n\n${USAGE[command]}`);
    return EXIT_USAGE;
  }

  // A `workers: N` worker takes its configuration from the primary, which owns loading (src/cluster).
  if (cluster.isWorker) return startWorker();
  let config: GatewayConfig;
  try {
    config = await loadGatewayConfig({ file: values.config });
  } catch (err) {
    return reportConfigError(err);
  }

  switch (command) {
    case 'start':
      if (values.pretty === true) config.logFormat = 'pretty';
      if (config.workers > 1) {
        const { runPrimary } = await import('./cluster/primary.ts');
        return runPrimary(config, { strict: values.strict === true }).catch(reportConfigError);
      }
      return start(config, { strict: values.strict === true });
    case 'explain':
    case 'test':
      return explainOrTest(config, command, positionals.slice(1), values);
    case 'validate':
    case 'routes':
      return printRoutes(config, command, { json: values.json === true, strict: values.strict === true });
    default:
      return 2;
  }
}

async function startWorker(): Promise<number> {
  const { receiveConfig, joinCluster } = await import('./cluster/worker.ts');
  const { config, sharedStore } = await receiveConfig();
  return start(config, { worker: joinCluster(sharedStore) });
}

async function start(
  config: GatewayConfig,
  { strict, worker }: { strict?: boolean; worker?: import('./cluster/worker.ts').ClusterWorker } = {},
): Promise<number> {
  // First of all, before telemetry, Redis or Fastify load: the nextTick workaround (tick-shape.ts).
  pinTickObjectShape();
  // Telemetry starts here, before the dynamic import below loads Fastify and undici. The SDK is
  // itself imported dynamically: with telemetry.otlp unset, none of OpenTelemetry loads.
  let tracing: import('./telemetry/types.ts').Tracing | undefined;
  if (config.telemetry.otlp) {
    const { startTracing } = await import('./telemetry/tracing.ts');
    const pkg = await import('../package.json', { with: { type: 'json' } });
    tracing = startTracing(config.telemetry, { version: pkg.default.version });
  }
  const { createGateway } = await import('./gateway.ts');
  let gateway: Awaited<ReturnType<typeof createGateway>>;
  try {
    gateway = await createGateway(config, { tracing, worker, strict });
  } catch (err) {
    await tracing?.shutdown().catch(() => undefined);
    return reportConfigError(err);
  }
  if (worker && !(await worker.admit(gateway))) {
    await gateway.close().catch(() => undefined);
    return EXIT_NOT_ADMITTED;
  }
  let addresses: Awaited<ReturnType<typeof gateway.listen>>;
  try {
    addresses = await gateway.listen();
  } catch (err) {
    // Typically EADDRINUSE / EACCES: say which listener, release what did bind, exit non-zero.
    gateway.logger.fatal({ err, code: (err as NodeJS.ErrnoException).code }, 'cannot listen');
    await gateway.close().catch(() => undefined);
    return 1;
  }
  releaseStartupMemory();
  return new Promise<number>((resolveExit) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        gateway.logger.warn({ signal }, 'second signal: exiting now');
        resolveExit(1);
        return;
      }
      stopping = true;
      gateway.logger.info({ signal }, 'shutting down: draining in-flight requests');
      gateway.close().then(
        async () => {
          gateway.logger.info('shutdown complete');
          // Every access-log line of the drained requests reaches stdout (bounded: a stalled
          // stdout must not hold the exit).
          const { flushLogs } = await import('./logger.ts');
          await flushLogs();
          resolveExit(0);
        },
        (err: unknown) => {
          gateway.logger.error({ err }, 'shutdown failed');
          resolveExit(1);
        },
      );
    };
    if (worker) return worker.serve(gateway, addresses, stop);
    process.on('SIGHUP', () => {
      if (stopping) return;
      gateway.logger.info({ signal: 'SIGHUP' }, 'reloading configuration');
      gateway.reload().catch((err: unknown) => gateway.logger.error({ err }, 'reload failed'));
    });
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

async function printRoutes(
  config: GatewayConfig,
  command: string,
  { json, strict }: { json: boolean; strict: boolean },
): Promise<number> {
  const { loadSpecs } = await import('./runtime.ts');
  const { buildRouteTable, describeRoutes } = await import('./registry/index.ts');
  const loaded = await loadSpecs(config.openapi);
  const { services } = loaded;
  const found: ConfigIssue[] = [...loaded.issues];
  let rows: ReturnType<typeof describeRoutes> = [];
  try {
    rows = describeRoutes(buildRouteTable(services));
  } catch (err) {
    if (err instanceof ConfigError) found.push(...err.issues);
    else throw err;
  }
  if (command === 'validate' && config.listen.https) {
    // `start` would read and match the certificates; validate should fail on what start fails on.
    const { createTlsOptions } = await import('./config/tls.ts');
    await createTlsOptions(config.listen.https, config.file ?? 'gateway.yaml').catch((err: unknown) => {
      if (err instanceof ConfigError) found.push(...err.issues);
      else throw err;
    });
  }
  // With the specs sound, load everything as `start` would (policies included, hooks created) to
  // show what each route gets and to fail on what start would fail on.
  let routes: RouteRow[] = rows.map((r) => ({ ...r, policies: [] }));
  let uncovered: ConfigIssue[] = [];
  if (found.length === 0) {
    const { Runtime, findUncoveredSecurity } = await import('./runtime.ts');
    const { POLICY_KINDS } = await import('./policies/index.ts');
    const { createMemoryStore } = await import('./state/memory.ts');
    const { createLogger } = await import('./logger.ts');
    const store = createMemoryStore();
    const runtime = new Runtime({
      config,
      logger: createLogger('silent'),
      store,
      kinds: POLICY_KINDS,
      healthChecks: false,
    });
    try {
      const snapshot = await runtime.load('strict');
      const applied = new Map<string, RouteRow['policies']>();
      for (const e of snapshot.entries.values()) {
        applied.set(`${e.route.service} ${e.route.operationId}`, e.chain.applied);
      }
      routes = rows.map((r) => ({ ...r, policies: applied.get(`${r.service} ${r.operationId}`) ?? [] }));
      if (command === 'validate') uncovered = findUncoveredSecurity(snapshot);
    } catch (err) {
      if (err instanceof ConfigError) found.push(...err.issues);
      else throw err;
    } finally {
      await runtime.close();
      await store.close();
    }
  }
  // Security the spec declares but nothing enforces: a warning, an error with --strict.
  if (strict) found.push(...uncovered);
  const issues = await withLines(found);
  const warnings = strict ? [] : await withLines(uncovered);
  if (json) console.log(JSON.stringify({ routes, errors: issues, warnings }, null, 2));
  else {
    printTable(routes);
    if (command === 'validate' && issues.length === 0) {
      console.log(`\nOK: ${services.length} service(s), ${rows.length} route(s).`);
    }
  }
  for (const w of warnings) console.error(formatIssue({ ...w, message: `warning: ${w.message}` }));
  if (issues.length > 0) {
    for (const i of issues) console.error(formatIssue(i));
    console.error(`\n${issues.length} error(s).`);
    return 1;
  }
  if (warnings.length > 0) console.error(`\n${warnings.length} warning(s) (errors with --strict).`);
  return 0;
}

/**
 * Route-table conflicts (two services on one basePath, ...) are found after the specs' sources
 * are gone, so they carry no line; look it up from the file so every printed issue is file:line.
 */
async function withLines(issues: ConfigIssue[]): Promise<ConfigIssue[]> {
  const { readSource } = await import('./config/yaml.ts');
  return Promise.all(
    issues.map(async (issue) => {
      if (issue.line !== undefined || !issue.path) return issue;
      try {
        const line = (await readSource(issue.file)).lineOf(issue.path);
        return line === undefined ? issue : { ...issue, line };
      } catch {
        return issue; // unreadable or unparsable: the issue already says so
      }
    }),
  );
}

/** A route as `validate` / `routes` print it: the table row plus the policies it gets, in phase order. */
type RouteRow = RouteDescription & { policies: RouteChain['applied'] };

function printTable(rows: RouteRow[]): void {
  const table = rows.map((r) => [
    r.method,
    r.path,
    r.operationId,
    r.service,
    r.mock ? '(mock)' : r.upstreams.join(' '),
    r.policies.map((p) => `${p.kind}${p.mode === 'dry-run' ? '(dry-run)' : ''}@${p.label}`).join(' ') || '-',
  ]);
  const header = [
    'METHOD',
    'PATH',
    'OPERATION',
    'SERVICE',
    'UPSTREAMS',
    'POLICIES (kind@file#rule, phase order)',
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] ?? '').length)));
  for (const r of [header, ...table])
    console.log(
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    );
}

function parseCommandLine(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      json: { type: 'boolean' },
      header: { type: 'string', short: 'H', multiple: true },
      body: { type: 'string' },
      'body-file': { type: 'string' },
      ip: { type: 'string' },
      strict: { type: 'boolean' },
      pretty: { type: 'boolean' },
    },
  });
}

/** `portcullis explain METHOD PATH` and `portcullis test FILE` (src/explain.ts). */
async function explainOrTest(
  config: GatewayConfig,
  command: 'explain' | 'test',
  args: string[],
  values: ReturnType<typeof parseCommandLine>['values'],
): Promise<number> {
  const usage = () => {
    console.error(
      `portcullis: ${command} needs ${command === 'explain' ? 'a method and a path' : 'a cases file'}\n\n${USAGE[command]}`,
    );
    return EXIT_USAGE;
  };
  const { createExplainer, formatExplanation, readCases, mismatches } = await import('./explain.ts');
  if (command === 'explain') {
    const [method, path] = args;
    if (!method || !path?.startsWith('/')) return usage();
    const headers: Record<string, string> = {};
    for (const h of values.header ?? []) {
      const colon = h.indexOf(':');
      if (colon <= 0) {
        console.error(`portcullis: -H "${h}" is not "name: value"`);
        return EXIT_USAGE;
      }
      headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
    }
    let body = values.body;
    if (values['body-file'] !== undefined) {
      const { readFile } = await import('node:fs/promises');
      body = await readFile(values['body-file'], 'utf8');
    }
    let explainer: Awaited<ReturnType<typeof createExplainer>>;
    try {
      explainer = await createExplainer(config);
    } catch (err) {
      return reportConfigError(err);
    }
    try {
      const e = await explainer.explain({ method, path, headers, body, ip: values.ip });
      console.log(values.json ? JSON.stringify(e, null, 2) : formatExplanation(e));
      return 0;
    } finally {
      await explainer.close();
    }
  }
  const [file] = args;
  if (!file) return usage();
  let cases: Awaited<ReturnType<typeof readCases>>;
  let explainer: Awaited<ReturnType<typeof createExplainer>>;
  try {
    cases = await readCases(file);
    explainer = await createExplainer(config);
  } catch (err) {
    return reportConfigError(err);
  }
  let failed = 0;
  const results: Array<{ name: string; ok: boolean; mismatches: string[] }> = [];
  try {
    for (const c of cases) {
      const found = mismatches(c, await explainer.explain(c.request));
      if (found.length > 0) failed++;
      results.push({ name: c.name, ok: found.length === 0, mismatches: found });
      if (values.json) continue;
      console.log(
        `${found.length === 0 ? 'ok  ' : 'FAIL'}  ${c.name}${found.length > 0 ? `  (${file}:${c.line})` : ''}`,
      );
      for (const m of found) console.log(`        ${m}`);
    }
  } finally {
    await explainer.close();
  }
  if (values.json)
    console.log(JSON.stringify({ cases: results, passed: cases.length - failed, failed }, null, 2));
  else console.log(`\n${cases.length} case(s): ${cases.length - failed} passed, ${failed} failed.`);
  return failed > 0 ? 1 : 0;
}

function reportConfigError(err: unknown): number {
  if (err instanceof ConfigError) {
    for (const i of err.issues) console.error(formatIssue(i));
    console.error(`\n${err.issues.length} configuration error(s); nothing started.`);
    return 1;
  }
  console.error(err);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
