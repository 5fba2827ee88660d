/**
 * Which gateway.yaml fields a running gateway applies on reload (file watch or SIGHUP) and which
 * need a restart. Live fields change nothing that is bound: the listeners, the admin port, the
 * state store connection, the spec and policy folders and the tracing exporter stay as started.
 *
 * Also the one way a running process re-reads gateway.yaml (`readSettings`, `settleSettings`) and
 * watches it with the certificate files (`watchSettings`): one process and the cluster primary
 * (cluster/primary.ts) share them.
 */
import { type FSWatcher, watch } from 'chokidar';
import { ConfigError, formatIssue } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { loadGatewayConfig } from './load.ts';
import type { GatewayConfig } from './schema.ts';
import { escapePointer } from './yaml.ts';

/** gateway.yaml and certificate edits closer together than this are applied as one reload. */
export const SETTINGS_DEBOUNCE_MS = 100;

/**
 * Fields (JSON pointers of gateway.yaml) applied without a restart. A field is live when it or a
 * parent is listed: `/limits` covers `/limits/bodyBytes`.
 */
export const LIVE_FIELDS = [
  '/trustProxy',
  '/limits',
  '/logLevel',
  '/headers',
  '/telemetry/sampleRatio',
  '/telemetry/accessLog',
  // `accessLog: { sample }` resolves to this field.
  '/telemetry/accessLogSample',
  // The certificate files (re-read too when only their content changed).
  '/listen/https/cert',
  '/listen/https/key',
  '/listen/https/sni',
] as const;

/** Bookkeeping fields of the resolved config, not settings. */
const IGNORED = new Set(['/baseDir', '/file']);

export interface SettingsChange {
  /** Live fields whose value changed (applied). */
  live: string[];
  /** Other fields whose value changed: logged as needing a restart, not applied. */
  restart: string[];
}

/** The fields that differ between two resolved configs, split into live and restart-only. */
export function diffSettings(before: GatewayConfig, after: GatewayConfig): SettingsChange {
  const changed: string[] = [];
  collect(before, after, '', changed);
  const isLive = (p: string) => LIVE_FIELDS.some((f) => p === f || p.startsWith(`${f}/`));
  return { live: changed.filter(isLive), restart: changed.filter((p) => !isLive(p)) };
}

/**
 * `before` with the live fields of `after`: what a running gateway serves with after a reload
 * (restart-only changes are not applied, so what is reported matches what is bound).
 */
export function applyLive(before: GatewayConfig, after: GatewayConfig): GatewayConfig {
  const next: GatewayConfig = {
    ...before,
    trustProxy: after.trustProxy,
    limits: after.limits,
    logLevel: after.logLevel,
    headers: after.headers,
    telemetry: {
      ...before.telemetry,
      sampleRatio: after.telemetry.sampleRatio,
      accessLog: after.telemetry.accessLog,
      accessLogSample: after.telemetry.accessLogSample,
    },
  };
  if (before.listen.https && after.listen.https)
    next.listen = {
      ...before.listen,
      https: {
        ...before.listen.https,
        cert: after.listen.https.cert,
        key: after.listen.https.key,
        sni: after.listen.https.sni,
      },
    };
  return next;
}

function collect(a: unknown, b: unknown, path: string, out: string[]): void {
  if (IGNORED.has(path)) return;
  if (isObject(a) && isObject(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)]))
      collect(a[key], b[key], `${path}/${escapePointer(key)}`, out);
    return;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path || '/');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Re-read gateway.yaml (`file`): the resolved config, or undefined when it fails, its errors logged
 * (file:line: field: problem) and the running settings kept.
 */
export async function readSettings(file: string, logger: Logger): Promise<GatewayConfig | undefined> {
  try {
    return await loadGatewayConfig({ file });
  } catch (err) {
    const issues = err instanceof ConfigError ? err.issues : [{ file, path: '', message: String(err) }];
    for (const i of issues) logger.error({ code: 'PC_CONFIG_INVALID', file: i.file }, formatIssue(i));
    logger.error('gateway.yaml rejected; the running settings are kept');
    return undefined;
  }
}

/**
 * What a running gateway moves to from `before` when gateway.yaml now reads `after`: `before`
 * with the live fields of `after` (applyLive), and what changed; fields that need a restart are
 * logged as not applied.
 */
export function settleSettings(
  before: GatewayConfig,
  after: GatewayConfig,
  logger: Logger,
): { change: SettingsChange; settings: GatewayConfig } {
  const change = diffSettings(before, after);
  if (change.restart.length > 0)
    logger.warn(
      { fields: change.restart },
      'gateway.yaml change needs a restart to take effect; not applied',
    );
  return { change, settings: applyLive(before, after) };
}

/** Every certificate and key file of the HTTPS listener (watched for rotation). */
export function certificateFiles(config: GatewayConfig): string[] {
  const https = config.listen.https;
  if (!https) return [];
  return [https.cert, https.key, ...Object.values(https.sni).flatMap((p) => [p.cert, p.key])];
}

/**
 * With `watch: true`: call `reload` when gateway.yaml or a certificate file of `config` changes,
 * once per burst of edits (SETTINGS_DEBOUNCE_MS). Resolves once the files are watched; undefined
 * when there is nothing to watch (no gateway.yaml, no HTTPS listener). A failing `reload` is logged.
 */
export async function watchSettings(
  config: GatewayConfig,
  logger: Logger,
  reload: () => Promise<void>,
): Promise<FSWatcher | undefined> {
  const files = [config.file, ...certificateFiles(config)].filter((f): f is string => f !== undefined);
  if (files.length === 0) return undefined;
  const watcher = watch(files, { ignoreInitial: true });
  let debounce: NodeJS.Timeout | undefined;
  watcher.on('all', () => {
    clearTimeout(debounce);
    debounce = setTimeout(
      () => void reload().catch((err: unknown) => logger.error({ err }, 'reload failed')),
      SETTINGS_DEBOUNCE_MS,
    );
  });
  watcher.on('error', (err) =>
    logger.error({ err, code: 'PC_WATCH_FAILED' }, 'gateway.yaml / certificate watcher failed'),
  );
  await new Promise<void>((ready) => watcher.once('ready', () => ready()));
  return watcher;
}
