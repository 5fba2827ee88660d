/**
 * Which gateway.yaml fields a running gateway applies on reload (file watch or SIGHUP) and which
 * need a restart. Live fields change nothing that is bound: the listeners, the admin port, the
 * state store connection, the spec and policy folders and the tracing exporter stay as started.
 */
import type { GatewayConfig } from './schema.ts';
import { escapePointer } from './yaml.ts';

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
