/**
 * TLS building blocks: server options for the HTTPS listener (default certificate, SNI,
 * protocol floor, cipher policy, ALPN) and client options for HTTPS upstreams. Everything
 * is read, parsed and checked here, once, at load; the handshake path only looks up a map.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import type { GatewayConfig } from './schema.ts';
import { escapePointer } from './yaml.ts';

/**
 * TLS 1.2 suites used when `listen.https.ciphers` is empty: forward-secret AEAD only (ECDHE with
 * AES-GCM or ChaCha20-Poly1305), for both ECDSA and RSA certificates — the Mozilla "intermediate"
 * list without DHE (which would need custom DH parameters). TLS 1.3 suites are not part of this
 * string: Node keeps its own TLS 1.3 defaults (all AEAD) unless `TLS_*` names are given.
 */
export const DEFAULT_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Key-exchange groups offered, best first. */
export const ECDH_CURVES = 'X25519:P-256:P-384';

/** The resolved `listen.https` block of gateway.yaml. */
export type HttpsListenerConfig = NonNullable<GatewayConfig['listen']['https']>;

/** Called by the TLS stack with the client's SNI name; `undefined` context means "use the default". */
export type SniCallback = (
  servername: string,
  cb: (err: Error | null, ctx?: tls.SecureContext) => void,
) => void;

/**
 * Options accepted alike by `https.createServer` and `http2.createSecureServer({ ...opts, allowHTTP1: true })`.
 * `http2.createSecureServer` sets its own ALPN list (h2, then http/1.1 with allowHTTP1); ours says the same.
 */
export interface TlsServerOptions {
  /** Default private key (PEM), served when no SNI entry matches. */
  key: Buffer;
  /** Default certificate chain (PEM). */
  cert: Buffer;
  /** Picks the per-host certificate from `listen.https.sni`. */
  SNICallback: SniCallback;
  /** Lowest protocol accepted: `listen.https.minVersion`, TLSv1.2 or TLSv1.3. */
  minVersion: tls.SecureVersion;
  /** OpenSSL cipher list for TLS 1.2. */
  ciphers: string;
  /** Always true: the server's cipher order wins over the client's. */
  honorCipherOrder: boolean;
  /** Key-exchange groups ({@link ECDH_CURVES}). */
  ecdhCurve: string;
  /** `['h2', 'http/1.1']` when `listen.https.http2`, else `['http/1.1']`. */
  ALPNProtocols: string[];
}

/** Options for HTTPS upstream connections. */
export interface UpstreamTlsConfig {
  /** Path of a PEM bundle of CAs to trust instead of the system roots. Default: system roots. */
  ca?: string;
  /** Refuse upstreams whose certificate does not verify. Default true. */
  rejectUnauthorized?: boolean;
  /** SNI name sent and checked against the upstream certificate. Default: the upstream's host name. */
  servername?: string;
}

/** undici `connect` options (`new Client(url, { connect })`, `new Pool(url, { connect })`). */
export interface UpstreamTlsOptions {
  /** Trusted CA certificates (PEM), read once at load. Absent: system roots. */
  ca?: Buffer;
  rejectUnauthorized: boolean;
  servername?: string;
}

/** Where configuration errors are reported: the file and the JSON pointer of the block. */
export interface ConfigLocation {
  /** File named in errors. Default `gateway.yaml`. */
  file?: string;
  /** JSON pointer of the block holding the options, e.g. `/x-portcullis/upstreams/0/tls`. Default ``. */
  path?: string;
}

const HTTPS_POINTER = '/listen/https';
// A host name, optionally behind one leading `*.` label: not `*`, `a.*.com` or `*.*.com`.
const SNI_NAME = /^(\*\.)?[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;

/**
 * Build TLS server options from the resolved HTTPS listener: default certificate, SNI certificates
 * (exact names and `*.example.com` one-label wildcards, case-insensitive; an unknown name gets the
 * default), TLS 1.2+ only, modern ciphers ({@link DEFAULT_TLS12_CIPHERS} when `ciphers` is empty),
 * ALPN h2 + http/1.1 when `http2`. Each PEM file is read once and each SNI secure context is built
 * here, not per handshake. Paths are used as given (the loader resolves them against gateway.yaml).
 * @param file named in errors. Default `gateway.yaml`.
 * @throws ConfigError naming every unreadable, malformed or mismatched file by its field, e.g.
 *   `/listen/https/sni/api.example.com/cert`, and an SNI name that is not a host or `*.domain`.
 */
export async function createTlsOptions(
  https: HttpsListenerConfig,
  file = 'gateway.yaml',
): Promise<TlsServerOptions> {
  const issues: ConfigIssue[] = [];
  const read = cachedReader();
  const ciphers = https.ciphers.trim() === '' ? DEFAULT_TLS12_CIPHERS : https.ciphers;
  const contextOptions = {
    minVersion: https.minVersion,
    ciphers,
    honorCipherOrder: true,
    ecdhCurve: ECDH_CURVES,
  } satisfies tls.SecureContextOptions;

  try {
    tls.createSecureContext(contextOptions);
  } catch (err) {
    issues.push({
      file,
      path: `${HTTPS_POINTER}/ciphers`,
      message: `not a usable OpenSSL cipher list: ${reason(err)}`,
    });
  }

  const [loadedDefault, entries] = await Promise.all([
    loadPair(https, HTTPS_POINTER, read, file),
    Promise.all(
      Object.entries(https.sni).map(async ([name, paths]) => {
        const pointer = `${HTTPS_POINTER}/sni/${escapePointer(name)}`;
        return { host: normalizeHost(name), pointer, ...(await loadPair(paths, pointer, read, file)) };
      }),
    ),
  ]);
  issues.push(...loadedDefault.issues, ...entries.flatMap((entry) => entry.issues));

  const seen = new Set<string>();
  for (const { host, pointer } of entries) {
    if (!SNI_NAME.test(host)) {
      issues.push({ file, path: pointer, message: 'must be a host name or "*." followed by a domain' });
    } else if (seen.has(host)) {
      issues.push({
        file,
        path: pointer,
        message: `duplicates another SNI entry for "${host}" (names ignore case)`,
      });
    }
    seen.add(host);
  }
  const defaultPair = loadedDefault.pair;
  if (issues.length > 0 || !defaultPair) throw new ConfigError(issues);

  const exact = new Map<string, tls.SecureContext>();
  const wildcard = new Map<string, tls.SecureContext>();
  for (const { host, pair } of entries) {
    if (!pair) continue; // unreachable: a missing pair left an issue above
    const context = tls.createSecureContext({ ...contextOptions, key: pair.key, cert: pair.cert });
    if (host.startsWith('*.')) wildcard.set(host.slice(2), context);
    else exact.set(host, context);
  }

  return {
    key: defaultPair.key,
    cert: defaultPair.cert,
    SNICallback: createSniCallback(exact, wildcard),
    ...contextOptions,
    ALPNProtocols: https.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
  };
}

/**
 * undici `connect` options for an HTTPS upstream; the CA bundle is read and checked once, here.
 * @throws ConfigError at `<where.path>/ca` when the CA file is unreadable or holds no PEM certificate.
 */
export async function createUpstreamTlsOptions(
  config: UpstreamTlsConfig,
  where: ConfigLocation = {},
): Promise<UpstreamTlsOptions> {
  const options: UpstreamTlsOptions = { rejectUnauthorized: config.rejectUnauthorized ?? true };
  if (config.servername !== undefined) options.servername = config.servername;
  if (config.ca === undefined) return options;

  const issue = { file: where.file ?? 'gateway.yaml', path: `${where.path ?? ''}/ca` };
  let ca: Buffer;
  try {
    ca = await readFile(config.ca);
  } catch (err) {
    throw new ConfigError([{ ...issue, message: `cannot read ${config.ca}: ${reason(err)}` }], {
      cause: err,
    });
  }
  try {
    new X509Certificate(ca);
  } catch (err) {
    throw new ConfigError([{ ...issue, message: `${config.ca} holds no PEM certificate` }], { cause: err });
  }
  options.ca = ca;
  return options;
}

/** Exact names first, then the one-label wildcard for the parent domain; else the default context. */
function createSniCallback(exact: Map<string, tls.SecureContext>, wildcard: Map<string, tls.SecureContext>) {
  return function selectCertificate(
    servername: string,
    cb: (err: Error | null, ctx?: tls.SecureContext) => void,
  ) {
    const host = normalizeHost(servername);
    const dot = host.indexOf('.');
    cb(null, exact.get(host) ?? (dot > 0 ? wildcard.get(host.slice(dot + 1)) : undefined));
  };
}

interface PemPair {
  key: Buffer;
  cert: Buffer;
}

/**
 * Reads and checks one cert/key pair; problems become issues at `<pointer>/cert` or `<pointer>/key`,
 * cert before key whatever order the reads finish in, so the report is stable.
 */
async function loadPair(
  paths: { cert: string; key: string },
  pointer: string,
  read: (path: string) => Promise<Buffer>,
  file: string,
): Promise<{ pair?: PemPair; issues: ConfigIssue[] }> {
  const issues: ConfigIssue[] = [];
  const issue = (field: 'cert' | 'key', message: string) =>
    issues.push({ file, path: `${pointer}/${field}`, message });
  const [certRead, keyRead] = await Promise.allSettled([read(paths.cert), read(paths.key)]);
  if (certRead.status === 'rejected') issue('cert', `cannot read ${paths.cert}: ${reason(certRead.reason)}`);
  if (keyRead.status === 'rejected') issue('key', `cannot read ${paths.key}: ${reason(keyRead.reason)}`);
  if (certRead.status === 'rejected' || keyRead.status === 'rejected') return { issues };

  let x509: X509Certificate | undefined;
  try {
    x509 = new X509Certificate(certRead.value);
  } catch {
    issue('cert', `${paths.cert} holds no PEM certificate`);
  }
  let privateKey: KeyObject | undefined;
  try {
    privateKey = createPrivateKey(keyRead.value);
  } catch {
    issue('key', `${paths.key} holds no unencrypted PEM private key`);
  }
  if (!x509 || !privateKey) return { issues };
  if (!x509.checkPrivateKey(privateKey)) {
    issue('key', `${paths.key} does not belong to the certificate ${paths.cert}`);
    return { issues };
  }
  return { pair: { cert: certRead.value, key: keyRead.value }, issues };
}

/** A file shared by several entries (one key for many names) is read once. */
function cachedReader(): (path: string) => Promise<Buffer> {
  const files = new Map<string, Promise<Buffer>>();
  return (path) => {
    let content = files.get(path);
    if (!content) {
      content = readFile(path);
      files.set(path, content);
    }
    return content;
  };
}

function normalizeHost(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function reason(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.message : String(err);
}
