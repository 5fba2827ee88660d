/**
 * Test-time PKI: a private CA and leaf certificates signed by it, generated in memory with
 * `selfsigned` (it signs with a given CA key, so no `openssl` subprocess is needed). Nothing is
 * committed; the CA and every leaf are cached per process because RSA key generation costs
 * tens of milliseconds and the suite asks for the same names again and again.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';

/** RSA 2048 or ECDSA P-256. */
export type KeyType = 'rsa' | 'ec';

/** A certificate and its private key, both PEM. */
export interface CertPem {
  cert: string;
  key: string;
}

/** What to put in a leaf certificate. */
export interface IssueOptions {
  /** DNS names (SANs); the first one is also the subject CN. `*.example.com` wildcards are allowed. */
  names: string[];
  /** IP address SANs. Default `['127.0.0.1', '::1']`, so `https://127.0.0.1:port` verifies too. */
  ips?: string[];
  /** Issue a new key and certificate instead of the cached one for these names. Default false. */
  fresh?: boolean;
}

/** A private certificate authority. */
export interface Ca extends CertPem {
  /** Key type of the CA and of every leaf it issues (selfsigned signs with the leaf's algorithm). */
  keyType: KeyType;
  /** A leaf certificate for `names`, signed by this CA, valid from an hour ago for 30 days. */
  issue(options: IssueOptions): Promise<CertPem>;
}

/** Options for {@link createCa}. */
export interface CaOptions {
  /** Key type of the CA and its leaves. Default `'ec'` (P-256: fast to generate). */
  keyType?: KeyType;
  /** A new, distinct CA instead of the per-process one (e.g. "signed by someone else"). Default false. */
  fresh?: boolean;
}

const HOUR_MS = 3_600_000;
const VALID_DAYS = 30;
const DEFAULT_IPS = ['127.0.0.1', '::1'];

const sharedCas = new Map<KeyType, Promise<Ca>>();

/** The per-process CA for `keyType` (or a fresh one); issued leaves are cached per name set. */
export function createCa(options: CaOptions = {}): Promise<Ca> {
  const keyType = options.keyType ?? 'ec';
  if (options.fresh) return buildCa(keyType);
  let ca = sharedCas.get(keyType);
  if (!ca) {
    ca = buildCa(keyType);
    sharedCas.set(keyType, ca);
  }
  return ca;
}

/** A leaf for `names` from the shared CA of `keyType` (default `'ec'`). */
export async function issueCert(names: string[], keyType: KeyType = 'ec'): Promise<CertPem> {
  return (await createCa({ keyType })).issue({ names });
}

/** A temporary folder for PEM files; remove it with {@link removeCertDir} in afterAll. */
export function makeCertDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'portcullis-certs-'));
}

/** Removes a folder made by {@link makeCertDir}. */
export function removeCertDir(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true });
}

/**
 * Writes `<name>.crt` and `<name>.key` into `dir` and returns their paths, shaped like a
 * gateway.yaml certificate pair (`{ cert, key }`). Works for a CA too (its cert is the trust anchor).
 */
export async function writeCerts(dir: string, name: string, pair: CertPem): Promise<CertPem> {
  const paths = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await Promise.all([writeFile(paths.cert, pair.cert), writeFile(paths.key, pair.key, { mode: 0o600 })]);
  return paths;
}

function validity(): { notBeforeDate: Date; notAfterDate: Date } {
  // An hour of slack so a host clock slightly behind the test runner's does not reject the cert.
  const notBeforeDate = new Date(Date.now() - HOUR_MS);
  return { notBeforeDate, notAfterDate: new Date(notBeforeDate.getTime() + VALID_DAYS * 24 * HOUR_MS) };
}

function keyOptions(keyType: KeyType) {
  // sha256 explicitly: selfsigned defaults to sha1, which OpenSSL 3 rejects at the default security level.
  return keyType === 'ec'
    ? { keyType, curve: 'P-256' as const, algorithm: 'sha256' }
    : { keyType, keySize: 2048, algorithm: 'sha256' };
}

async function buildCa(keyType: KeyType): Promise<Ca> {
  const serial = Math.random().toString(36).slice(2, 10);
  const generated = await generate(
    [
      { name: 'commonName', value: `Portcullis Test CA ${serial}` },
      { name: 'organizationName', value: 'Portcullis Test' },
    ],
    {
      ...keyOptions(keyType),
      ...validity(),
      extensions: [
        { name: 'basicConstraints', cA: true, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
      ],
    },
  );
  const ca = { cert: generated.cert, key: generated.private };
  const leaves = new Map<string, Promise<CertPem>>();

  async function issueLeaf({ names, ips = DEFAULT_IPS }: IssueOptions): Promise<CertPem> {
    const leaf = await generate(
      [
        { name: 'commonName', value: names[0] ?? 'localhost' },
        { name: 'organizationName', value: 'Portcullis Test' },
      ],
      {
        ...keyOptions(keyType),
        ...validity(),
        ca,
        extensions: [
          { name: 'basicConstraints', cA: false },
          // keyEncipherment only means something for RSA key exchange.
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: keyType === 'rsa', critical: true },
          { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
          {
            name: 'subjectAltName',
            altNames: [
              ...names.map((value) => ({ type: 2 as const, value })),
              ...ips.map((ip) => ({ type: 7 as const, ip })),
            ],
          },
        ],
      },
    );
    return { cert: leaf.cert, key: leaf.private };
  }

  return {
    ...ca,
    keyType,
    issue(options) {
      if (options.fresh) return issueLeaf(options);
      const cacheKey = JSON.stringify([options.names, options.ips ?? DEFAULT_IPS]);
      let leaf = leaves.get(cacheKey);
      if (!leaf) {
        leaf = issueLeaf(options);
        leaves.set(cacheKey, leaf);
      }
      return leaf;
    },
  };
}
