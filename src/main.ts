/**
 * The CLI: `portcullis start | validate | routes`. The only place that listens or exits.
 *
 * Only configuration code is imported statically. Fastify, undici and the gateway are imported
 * after the config is loaded, so that an OpenTelemetry SDK can be started first (its HTTP and
 * undici instrumentations must patch those modules before they load).
 */
import { parseArgs } from 'node:util';
import { loadGatewayConfig } from './config/load.ts';
import type { GatewayConfig } from './config/schema.ts';
import { ConfigError, formatIssue } from './errors.ts';

const USAGE: Record<string, string> = {
  main: `Usage: portcullis <command> [options]

Commands:
  start       Run the gateway (HTTP/HTTPS listeners and the admin port)
  validate    Load gateway.yaml and every spec; print the route table; exit 1 on any error
  routes      Print the route table (--json for JSON)

Options:
  -c, --config <file>   gateway.yaml to use (default: ./gateway.yaml if present, else defaults)
  -h, --help            Show help for a command
  -v, --version         Print the version

Run 'portcullis <command> --help' for a command's options.`,
  start: `Usage: portcullis start [--config gateway.yaml]

Serves the services in the openapi folder (default ./openapi) with the policies in ./policies.
Reloads specs on change; SIGTERM/SIGINT drain in-flight requests and exit 0.
Environment variables (PORTCULLIS_*) override the file; see README.`,
  validate: `Usage: portcullis validate [--config gateway.yaml]

Loads gateway.yaml and every spec, resolves $refs, checks x-portcullis and route conflicts,
prints the route table. Exits 1 and prints file:line: field: problem for every error.`,
  routes: `Usage: portcullis routes [--config gateway.yaml] [--json]

Prints the route table: method, public path, operationId, service, upstreams.`,
};

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      json: { type: 'boolean' },
    },
  });
  const command = positionals[0];
  if (values.version) {
    const pkg = await import('../package.json', { with: { type: 'json' } });
    console.log(pkg.default.version);
    return 0;
  }
  if (!command || !(command in USAGE) || command === 'main') {
    console.log(USAGE.main);
    return values.help || !command ? 0 : 2;
  }
  if (values.help) {
    console.log(USAGE[command]);
    return 0;
  }

  let config: GatewayConfig;
  try {
    config = await loadGatewayConfig({ file: values.config });
  } catch (err) {
    return reportConfigError(err);
  }

  switch (command) {
    case 'start':
      return start(config);
    case 'validate':
    case 'routes':
      return printRoutes(config, command, values.json === true);
    default:
      return 2;
  }
}

async function start(config: GatewayConfig): Promise<number> {
  // Telemetry starts here, before the dynamic import below loads Fastify and undici.
  const { createGateway } = await import('./gateway.ts');
  let gateway: Awaited<ReturnType<typeof createGateway>>;
  try {
    gateway = await createGateway(config);
  } catch (err) {
    return reportConfigError(err);
  }
  await gateway.listen();
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
        () => {
          gateway.logger.info('shutdown complete');
          resolveExit(0);
        },
        (err: unknown) => {
          gateway.logger.error({ err }, 'shutdown failed');
          resolveExit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

async function printRoutes(config: GatewayConfig, command: string, json: boolean): Promise<number> {
  const { loadSpecs } = await import('./runtime.ts');
  const { buildRouteTable, describeRoutes } = await import('./registry/index.ts');
  const { services, issues } = await loadSpecs(config.openapi);
  let rows: ReturnType<typeof describeRoutes> = [];
  try {
    rows = describeRoutes(buildRouteTable(services));
  } catch (err) {
    if (err instanceof ConfigError) issues.push(...err.issues);
    else throw err;
  }
  if (json) console.log(JSON.stringify({ routes: rows, errors: issues }, null, 2));
  else {
    printTable(rows);
    if (command === 'validate' && issues.length === 0) {
      console.log(`\nOK: ${services.length} service(s), ${rows.length} route(s).`);
    }
  }
  if (issues.length > 0) {
    for (const i of issues) console.error(formatIssue(i));
    console.error(`\n${issues.length} error(s).`);
    return 1;
  }
  return 0;
}

function printTable(rows: Array<{ service: string; method: string; path: string; operationId: string; upstreams: string[]; mock: boolean }>): void {
  const table = rows.map((r) => [r.method, r.path, r.operationId, r.service, r.mock ? '(mock)' : r.upstreams.join(' ')]);
  const header = ['METHOD', 'PATH', 'OPERATION', 'SERVICE', 'UPSTREAMS'];
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] ?? '').length)));
  for (const r of [header, ...table]) console.log(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
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
