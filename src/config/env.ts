/**
 * Environment overrides for gateway.yaml. A variable that is set (and not empty) wins over the
 * file; the merged result is then checked by the same schema as the file.
 *
 * | Variable                   | Overrides               | Value                                     |
 * | -------------------------- | ----------------------- | ----------------------------------------- |
 * | `PORTCULLIS_CONFIG`        | (which file to load)    | path; `--config` wins over it             |
 * | `PORTCULLIS_HTTP_PORT`     | `listen.http.port`      | integer 0–65535 (0: a free port)          |
 * | `PORTCULLIS_HTTP_HOST`     | `listen.http.host`      | bind address                              |
 * | `PORTCULLIS_HTTPS_PORT`    | `listen.https.port`     | integer 0–65535; needs `listen.https` in the file (cert, key) |
 * | `PORTCULLIS_ADMIN_PORT`    | `admin.port`            | integer 0–65535                           |
 * | `PORTCULLIS_ADMIN_HOST`    | `admin.host`            | bind address                              |
 * | `PORTCULLIS_ADMIN_HOSTS`   | `admin.hosts`           | comma-separated Host names the admin port answers; `*`: any |
 * | `PORTCULLIS_OPENAPI_DIR`   | `openapi`               | folder, relative to the working directory |
 * | `PORTCULLIS_POLICIES_DIR`  | `policies`              | folder, relative to the working directory |
 * | `PORTCULLIS_REDIS_URL`     | `state.redis`           | `redis://` or `rediss://` URL             |
 * | `PORTCULLIS_OTLP_ENDPOINT` | `telemetry.otlp`        | `http://` or `https://` URL               |
 * | `PORTCULLIS_SAMPLE_RATIO`  | `telemetry.sampleRatio` | number 0–1                                |
 * | `PORTCULLIS_TRUST_PROXY`   | `trustProxy`            | comma-separated IP addresses / CIDRs      |
 * | `PORTCULLIS_LOG_LEVEL`     | `logLevel`              | fatal, error, warn, info, debug, trace, silent |
 * | `PORTCULLIS_WATCH`         | `watch`                 | true / false (also 1 / 0)                 |
 * | `PORTCULLIS_ZONE`          | `zone`                  | the gateway's zone, for preferZone         |
 * | `PORTCULLIS_WORKERS`       | `workers`               | an integer 1–256, or `auto` (one per core) |
 *
 * An empty variable counts as unset, so `FOO=${FOO:-}` in compose files does not override.
 * A value that cannot be read is a ConfigError issue with file `environment` and the
 * variable's name as its path.
 */
import ipaddr from 'ipaddr.js';
import type { ConfigIssue } from '../errors.ts';

/** The `file` named by issues about environment variables. */
export const ENV_SOURCE = 'environment';

/** The variable naming the config file (used when no `--config` is given). */
export const CONFIG_FILE_VAR = 'PORTCULLIS_CONFIG';

/** How a variable's text becomes a config value. */
export type EnvValueKind =
  | 'port'
  | 'string'
  | 'path'
  | 'number'
  | 'boolean'
  | 'cidr-list'
  | 'list'
  | 'redis-url'
  | 'http-url'
  | 'workers';

/** One supported environment variable. */
export interface EnvVar {
  name: string;
  /** One line for `portcullis --help`. */
  description: string;
  /** JSON pointer of the gateway.yaml field it overrides; absent for PORTCULLIS_CONFIG. */
  pointer?: string;
  kind: EnvValueKind;
}

/** Every environment variable Portcullis reads, in the order `--help` prints them. */
export const ENV_VARS: readonly EnvVar[] = [
  { name: CONFIG_FILE_VAR, kind: 'path', description: 'gateway.yaml to load when --config is not given' },
  {
    name: 'PORTCULLIS_HTTP_PORT',
    kind: 'port',
    pointer: '/listen/http/port',
    description: 'plain HTTP port',
  },
  {
    name: 'PORTCULLIS_HTTP_HOST',
    kind: 'string',
    pointer: '/listen/http/host',
    description: 'plain HTTP bind address',
  },
  {
    name: 'PORTCULLIS_HTTPS_PORT',
    kind: 'port',
    pointer: '/listen/https/port',
    description: 'HTTPS port (listen.https with cert and key must be in gateway.yaml)',
  },
  {
    name: 'PORTCULLIS_ADMIN_PORT',
    kind: 'port',
    pointer: '/admin/port',
    description: 'admin port (0: a free port)',
  },
  {
    name: 'PORTCULLIS_ADMIN_HOST',
    kind: 'string',
    pointer: '/admin/host',
    description: 'admin bind address',
  },
  {
    name: 'PORTCULLIS_ADMIN_HOSTS',
    kind: 'list',
    pointer: '/admin/hosts',
    description: 'comma-separated Host names the admin port answers (* for any)',
  },
  {
    name: 'PORTCULLIS_OPENAPI_DIR',
    kind: 'path',
    pointer: '/openapi',
    description: 'folder of OpenAPI specs',
  },
  {
    name: 'PORTCULLIS_POLICIES_DIR',
    kind: 'path',
    pointer: '/policies',
    description: 'folder of policy files',
  },
  {
    name: 'PORTCULLIS_REDIS_URL',
    kind: 'redis-url',
    pointer: '/state/redis',
    description: 'Redis URL for shared state',
  },
  {
    name: 'PORTCULLIS_OTLP_ENDPOINT',
    kind: 'http-url',
    pointer: '/telemetry/otlp',
    description: 'OTLP/HTTP endpoint for traces',
  },
  {
    name: 'PORTCULLIS_SAMPLE_RATIO',
    kind: 'number',
    pointer: '/telemetry/sampleRatio',
    description: 'trace sampling ratio, 0 to 1',
  },
  {
    name: 'PORTCULLIS_TRUST_PROXY',
    kind: 'cidr-list',
    pointer: '/trustProxy',
    description: 'comma-separated proxy addresses/CIDRs whose X-Forwarded-* is believed',
  },
  {
    name: 'PORTCULLIS_LOG_LEVEL',
    kind: 'string',
    pointer: '/logLevel',
    description: 'log level (info, debug, ...)',
  },
  {
    name: 'PORTCULLIS_WATCH',
    kind: 'boolean',
    pointer: '/watch',
    description: 'reload specs and policies on change',
  },
  {
    name: 'PORTCULLIS_ZONE',
    kind: 'string',
    pointer: '/zone',
    description: "the gateway's zone (upstreams of it are preferred by services with preferZone)",
  },
  {
    name: 'PORTCULLIS_WORKERS',
    kind: 'workers',
    pointer: '/workers',
    description: 'worker processes: an integer, or auto for one per core',
  },
];

/** A variable that was set and read, ready to be written at `pointer`. */
export interface EnvOverride {
  name: string;
  pointer: string;
  kind: EnvValueKind;
  value: unknown;
}

/** The value of a variable, or undefined when it is unset or empty. */
export function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name]?.trim();
  return raw ? raw : undefined;
}

/**
 * Read every overriding variable that is set. Values are converted to their type here; range
 * and enum checks are left to the schema, which runs on the merged result.
 */
export function readEnvOverrides(env: NodeJS.ProcessEnv): {
  overrides: EnvOverride[];
  issues: ConfigIssue[];
} {
  const overrides: EnvOverride[] = [];
  const issues: ConfigIssue[] = [];
  for (const v of ENV_VARS) {
    if (!v.pointer) continue;
    const text = envValue(env, v.name);
    if (text === undefined) continue;
    const parsed = parseEnvValue(v.kind, text);
    if ('error' in parsed) issues.push(envIssue(v.name, parsed.error));
    else overrides.push({ name: v.name, pointer: v.pointer, kind: v.kind, value: parsed.value });
  }
  return { overrides, issues };
}

/** An issue about one variable. */
export function envIssue(name: string, message: string): ConfigIssue {
  return { file: ENV_SOURCE, path: name, message };
}

function parseEnvValue(kind: EnvValueKind, text: string): { value: unknown } | { error: string } {
  switch (kind) {
    case 'port':
      return /^\d+$/.test(text)
        ? { value: Number(text) }
        : { error: `must be an integer port, got "${text}"` };
    case 'number': {
      const n = Number(text);
      return Number.isFinite(n) ? { value: n } : { error: `must be a number, got "${text}"` };
    }
    case 'boolean': {
      const t = text.toLowerCase();
      if (t === 'true' || t === '1') return { value: true };
      if (t === 'false' || t === '0') return { value: false };
      return { error: `must be true or false, got "${text}"` };
    }
    case 'list':
      return { value: splitList(text) };
    case 'cidr-list': {
      const entries = splitList(text);
      const bad = entries.map((e, i) => [e, i] as const).filter(([e]) => !isAddressOrCidr(e));
      if (bad.length > 0) {
        const list = bad.map(([e, i]) => `entry ${i} "${e}"`).join(', ');
        return { error: `${list}: must be an IP address or CIDR (e.g. 10.0.0.0/8)` };
      }
      return { value: entries };
    }
    case 'redis-url':
      return checkUrl(text, ['redis:', 'rediss:']) ?? { value: text };
    case 'http-url':
      return checkUrl(text, ['http:', 'https:']) ?? { value: text };
    case 'workers':
      if (text.toLowerCase() === 'auto') return { value: 'auto' };
      return /^\d+$/.test(text)
        ? { value: Number(text) }
        : { error: `must be an integer or auto, got "${text}"` };
    default:
      return { value: text };
  }
}

/** A comma-separated value's entries, trimmed, empty ones dropped. */
function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function checkUrl(text: string, protocols: string[]): { error: string } | undefined {
  const problem = urlProblem(text, protocols);
  return problem ? { error: problem } : undefined;
}

/** Why `text` is not a URL with one of `protocols`, or undefined when it is one. */
export function urlProblem(text: string, protocols: string[]): string | undefined {
  const expected = `must be a ${protocols.map((p) => `${p}//`).join(' or ')} URL`;
  if (!URL.canParse(text)) return `${expected}, got "${text}"`;
  const url = new URL(text);
  return protocols.includes(url.protocol) ? undefined : `${expected}, got "${url.protocol}//..."`;
}

/**
 * An IPv4 address in dotted-quad form, an IPv6 address, or either with a `/prefix`. Stricter than
 * `ipaddr.parse`, which also takes `10` or `0x0a.1` as IPv4 — forms that in a trust list are
 * far more likely typos than intent.
 */
export function isAddressOrCidr(entry: string): boolean {
  const slash = entry.indexOf('/');
  const addr = slash === -1 ? entry : entry.slice(0, slash);
  const prefix = slash === -1 ? undefined : entry.slice(slash + 1);
  const v4 = ipaddr.IPv4.isValidFourPartDecimal(addr);
  const v6 = !v4 && ipaddr.IPv6.isValid(addr);
  if (!v4 && !v6) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (v4 ? 32 : 128);
}
