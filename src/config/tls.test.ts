import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Ca,
  type CertPem,
  createCa,
  makeCertDir,
  removeCertDir,
  writeCerts,
} from '../../test/helpers/certs.ts';
import { ConfigError } from '../errors.ts';
import {
  createTlsOptions,
  createUpstreamTlsOptions,
  DEFAULT_TLS12_CIPHERS,
  type HttpsListenerConfig,
  type TlsServerOptions,
} from './tls.ts';

type Server = https.Server | http2.Http2SecureServer | tls.Server;

let dir: string;
let ecCa: Ca;
let rsaCa: Ca;
type Name = 'default' | 'api' | 'www' | 'apps' | 'rsa';
/** PEM contents, and the same written to files (what gateway.yaml points at). */
let pems: Record<Name, CertPem>;
let files: Record<Name, CertPem>;
const servers: Server[] = [];

beforeAll(async () => {
  dir = await makeCertDir();
  [ecCa, rsaCa] = await Promise.all([createCa({ keyType: 'ec' }), createCa({ keyType: 'rsa' })]);
  const [def, api, www, apps, rsa] = await Promise.all([
    ecCa.issue({ names: ['default.test'] }),
    ecCa.issue({ names: ['api.example.com'] }),
    ecCa.issue({ names: ['www.example.org'] }),
    ecCa.issue({ names: ['*.apps.example.com'] }),
    rsaCa.issue({ names: ['rsa.example.com'] }),
  ]);
  const [fDefault, fApi, fWww, fApps, fRsa] = await Promise.all([
    writeCerts(dir, 'default', def),
    writeCerts(dir, 'api', api),
    writeCerts(dir, 'www', www),
    writeCerts(dir, 'apps', apps),
    writeCerts(dir, 'rsa', rsa),
  ]);
  pems = { default: def, api, www, apps, rsa };
  files = { default: fDefault, api: fApi, www: fWww, apps: fApps, rsa: fRsa };
});

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await removeCertDir(dir);
});

function listener(overrides: Partial<HttpsListenerConfig> = {}): HttpsListenerConfig {
  return {
    port: 0,
    host: '127.0.0.1',
    ...files.default,
    sni: {
      'api.example.com': files.api,
      'WWW.Example.org': files.www,
      '*.apps.example.com': files.apps,
      'rsa.example.com': files.rsa,
    },
    minVersion: 'TLSv1.2',
    ciphers: '',
    http2: true,
    ...overrides,
  };
}

async function listen(server: Server): Promise<number> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

function hello(): (req: { httpVersion: string }, res: { end(body: string): void }) => void {
  return (req, res) => res.end(`hello over HTTP/${req.httpVersion}`);
}

async function httpsServer(options: TlsServerOptions): Promise<number> {
  return listen(https.createServer(options, hello()));
}

async function http2Server(options: TlsServerOptions): Promise<number> {
  return listen(http2.createSecureServer({ ...options, allowHTTP1: true }, hello()));
}

interface Handshake {
  protocol: string | null;
  cipher: string;
  alpn: string | false | null;
  subject: string;
  altNames: string | undefined;
}

/** Connects, records what was negotiated, hangs up. Rejects with the handshake error. */
function handshake(port: number, options: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: [ecCa.cert, rsaCa.cert], ...options }, () => {
      const peer = socket.getPeerCertificate();
      resolve({
        protocol: socket.getProtocol(),
        cipher: socket.getCipher().name,
        alpn: socket.alpnProtocol,
        subject: peer.subject.CN as string,
        altNames: peer.subjectaltname,
      });
      socket.destroy();
    });
    socket.once('error', (err) => {
      socket.destroy();
      reject(err);
    });
  });
}

// The default certificate does not cover unknown names; only look at which certificate came back.
const anyName = { checkServerIdentity: () => undefined };

describe('createTlsOptions: SNI', () => {
  let port: number;
  beforeAll(async () => {
    port = await httpsServer(await createTlsOptions(listener()));
  });

  it.each([
    { case: 'an exact name gets its own certificate', servername: 'api.example.com', cn: 'api.example.com' },
    {
      case: 'a second exact name gets its own certificate',
      servername: 'www.example.org',
      cn: 'www.example.org',
    },
    { case: 'names match regardless of case', servername: 'API.Example.COM', cn: 'api.example.com' },
    { case: 'a one-label wildcard matches', servername: 'shop.apps.example.com', cn: '*.apps.example.com' },
    {
      case: 'an RSA certificate is served next to ECDSA ones',
      servername: 'rsa.example.com',
      cn: 'rsa.example.com',
    },
  ])('$case', async ({ servername, cn }) => {
    // Hostname verification stays on: the served certificate must be valid for the requested name.
    const got = await handshake(port, { servername });
    expect(got.subject).toBe(cn);
    expect(got.altNames).toContain(`DNS:${cn}`);
  });

  it.each([
    { case: 'an unknown name', servername: 'unknown.test' },
    { case: 'two labels under a wildcard', servername: 'a.b.apps.example.com' },
    { case: 'the wildcard parent itself', servername: 'apps.example.com' },
    { case: 'no SNI at all (client connects by IP)', servername: undefined },
  ])('$case gets the default certificate', async ({ servername }) => {
    const got = await handshake(port, { ...anyName, ...(servername ? { servername } : {}) });
    expect(got.subject).toBe('default.test');
  });

  it('the default certificate verifies for its own name', async () => {
    expect((await handshake(port, { servername: 'default.test' })).subject).toBe('default.test');
  });
});

describe('createTlsOptions: protocol versions and ciphers', () => {
  let port: number;
  let legacyPort: number;
  let legacyCiphersPort: number;
  beforeAll(async () => {
    port = await httpsServer(await createTlsOptions(listener()));
    // An operator's cipher list that would allow TLS 1.0 suites: the protocol floor alone must refuse them.
    legacyCiphersPort = await httpsServer(await createTlsOptions(listener({ ciphers: 'HIGH:@SECLEVEL=0' })));
    // Control: proves the legacy client below really can complete a TLS 1.0/1.1 handshake.
    legacyPort = await listen(
      tls.createServer({ ...pems.default, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    );
  });

  // OpenSSL 3 refuses to even offer TLS < 1.2 at the default security level.
  const legacy = { ciphers: 'DEFAULT@SECLEVEL=0', ...anyName };

  const versions = ['TLSv1', 'TLSv1.1'] as const;
  const rows = versions.flatMap((version) =>
    [undefined, 'api.example.com'].flatMap((servername) =>
      (['modern', 'legacy-friendly'] as const).map((ciphers) => ({ version, servername, ciphers })),
    ),
  );

  it.each(rows)(
    'refuses a $version handshake (SNI: $servername, $ciphers cipher list) with a protocol_version alert',
    async ({ version, servername, ciphers }) => {
      const client = {
        ...legacy,
        minVersion: version,
        maxVersion: version,
        ...(servername ? { servername } : {}),
      };
      expect((await handshake(legacyPort, client)).protocol).toBe(version);
      await expect(handshake(ciphers === 'modern' ? port : legacyCiphersPort, client)).rejects.toMatchObject({
        code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
      });
    },
  );

  it.each(['TLSv1.2', 'TLSv1.3'] as const)('accepts %s', async (version) => {
    const got = await handshake(port, {
      servername: 'api.example.com',
      minVersion: version,
      maxVersion: version,
    });
    expect(got.protocol).toBe(version);
  });

  it.each([
    { key: 'ECDSA', servername: 'api.example.com', cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256' },
    { key: 'RSA', servername: 'rsa.example.com', cipher: 'ECDHE-RSA-AES128-GCM-SHA256' },
  ])(
    'negotiates a forward-secret AEAD suite over TLS 1.2 with an $key certificate',
    async ({ servername, cipher }) => {
      const got = await handshake(port, { servername, maxVersion: 'TLSv1.2' });
      expect(got.cipher).toBe(cipher);
    },
  );

  it.each([
    { cipher: 'ECDHE-ECDSA-AES128-SHA', cert: 'default', servername: undefined, why: 'CBC with SHA-1 MAC' },
    {
      cipher: 'ECDHE-ECDSA-AES128-SHA',
      cert: 'api',
      servername: 'api.example.com',
      why: 'CBC with SHA-1 MAC',
    },
    { cipher: 'ECDHE-RSA-AES128-SHA', cert: 'rsa', servername: 'rsa.example.com', why: 'CBC with SHA-1 MAC' },
    { cipher: 'AES128-SHA', cert: 'rsa', servername: 'rsa.example.com', why: 'no forward secrecy, CBC' },
    { cipher: 'AES128-GCM-SHA256', cert: 'rsa', servername: 'rsa.example.com', why: 'no forward secrecy' },
  ] as const)(
    'refuses the TLS 1.2 suite $cipher ($why) for the $cert certificate',
    async ({ cipher, cert, servername }) => {
      const client = {
        ...anyName,
        maxVersion: 'TLSv1.2' as const,
        ciphers: cipher,
        ...(servername ? { servername } : {}),
      };
      // Control: a server that allows the suite, with the same certificate, does complete this handshake.
      const permissivePort = await listen(tls.createServer({ ...pems[cert], ciphers: cipher }));
      expect((await handshake(permissivePort, client)).cipher).toBe(cipher);

      await expect(handshake(port, client)).rejects.toMatchObject({
        code: 'ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE',
      });
    },
  );

  it('minVersion TLSv1.3 refuses TLS 1.2 clients', async () => {
    const strictPort = await httpsServer(await createTlsOptions(listener({ minVersion: 'TLSv1.3' })));
    await expect(handshake(strictPort, { maxVersion: 'TLSv1.2', ...anyName })).rejects.toMatchObject({
      code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
    });
    expect((await handshake(strictPort, { servername: 'api.example.com' })).protocol).toBe('TLSv1.3');
  });

  it('an empty cipher list means the built-in modern list; a given list is used as is', async () => {
    expect((await createTlsOptions(listener())).ciphers).toBe(DEFAULT_TLS12_CIPHERS);
    const only = 'ECDHE-ECDSA-AES256-GCM-SHA384';
    const customPort = await httpsServer(await createTlsOptions(listener({ ciphers: only })));
    const got = await handshake(customPort, { servername: 'api.example.com', maxVersion: 'TLSv1.2' });
    expect(got.cipher).toBe(only);
  });
});

describe('createTlsOptions: ALPN and HTTP versions', () => {
  it('negotiates h2 when http2 is on, and still serves HTTP/1.1 clients', async () => {
    const port = await http2Server(await createTlsOptions(listener({ http2: true })));
    const got = await handshake(port, { servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
    expect(got.alpn).toBe('h2');

    const session = http2.connect(`https://127.0.0.1:${port}`, {
      ca: ecCa.cert,
      servername: 'api.example.com',
    });
    try {
      const stream = session.request({ ':path': '/' });
      stream.setEncoding('utf8');
      let body = '';
      stream.on('data', (chunk: string) => {
        body += chunk;
      });
      await once(stream, 'end');
      expect(body).toBe('hello over HTTP/2.0');
    } finally {
      session.close();
    }

    expect(await getHttp1(port)).toBe('hello over HTTP/1.1');
  });

  it('offers only http/1.1 when http2 is off', async () => {
    const options = await createTlsOptions(listener({ http2: false }));
    expect(options.ALPNProtocols).toEqual(['http/1.1']);
    const port = await httpsServer(options);
    const got = await handshake(port, { servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
    expect(got.alpn).toBe('http/1.1');
    expect(await getHttp1(port)).toBe('hello over HTTP/1.1');
  });
});

function getHttp1(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: '127.0.0.1', port, path: '/', servername: 'api.example.com', ca: ecCa.cert, agent: false },
      (res) => {
        res.setEncoding('utf8');
        let body = '';
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve(body));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

describe('createTlsOptions: configuration errors', () => {
  async function configError(https: HttpsListenerConfig, file?: string): Promise<ConfigError> {
    const err = await createTlsOptions(https, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }

  it('names the SNI field and the file when a certificate cannot be read', async () => {
    const missing = join(dir, 'missing.crt');
    const err = await configError(
      listener({ sni: { 'api.example.com': { cert: missing, key: files.api.key } } }),
      '/etc/portcullis/gateway.yaml',
    );
    expect(err.code).toBe('PC_CONFIG_INVALID');
    expect(err.issues).toEqual([
      {
        file: '/etc/portcullis/gateway.yaml',
        path: '/listen/https/sni/api.example.com/cert',
        message: expect.stringContaining('ENOENT'),
      },
    ]);
  });

  it('reports every broken file at once, defaulting the file name to gateway.yaml', async () => {
    const err = await configError(
      listener({
        key: join(dir, 'nope.key'),
        sni: { 'www.example.org': { cert: files.www.cert, key: join(dir, 'gone.key') } },
      }),
    );
    expect(err.issues.map((i) => `${i.file} ${i.path}`)).toEqual([
      'gateway.yaml /listen/https/key',
      'gateway.yaml /listen/https/sni/www.example.org/key',
    ]);
  });

  it('rejects a file that is not PEM, and a key that belongs to another certificate', async () => {
    const garbage = join(dir, 'garbage.pem');
    await writeFile(garbage, 'not a certificate\n');
    const err = await configError(
      listener({
        cert: garbage,
        sni: { 'api.example.com': { cert: files.api.cert, key: files.www.key } },
      }),
    );
    expect(err.issues.map((i) => i.path)).toEqual([
      '/listen/https/cert',
      '/listen/https/sni/api.example.com/key',
    ]);
    expect(err.issues[1]?.message).toContain('does not belong to the certificate');
  });

  it.each([
    { name: 'api.*.example.com', problem: 'a wildcard that is not the first label' },
    { name: '*.*.example.com', problem: 'a two-label wildcard' },
    { name: '*', problem: 'a bare wildcard' },
  ])('rejects the SNI name $name ($problem)', async ({ name }) => {
    const err = await configError(listener({ sni: { [name]: files.api } }));
    expect(err.issues.map((i) => i.path)).toEqual([`/listen/https/sni/${name}`]);
  });

  it('rejects two SNI entries for the same name in different case', async () => {
    const err = await configError(
      listener({ sni: { 'api.example.com': files.api, 'API.example.com': files.api } }),
    );
    expect(err.issues.map((i) => i.path)).toEqual(['/listen/https/sni/API.example.com']);
  });

  it('rejects a cipher list OpenSSL does not know', async () => {
    const err = await configError(listener({ ciphers: 'NOT-A-CIPHER' }));
    expect(err.issues.map((i) => i.path)).toEqual(['/listen/https/ciphers']);
  });
});

describe('createUpstreamTlsOptions', () => {
  let privateCa: Ca;
  let caPath: string;
  let port: number;
  let namedPort: number;

  beforeAll(async () => {
    // A CA of its own, so nothing else in this file (or the system store) can vouch for the upstream.
    privateCa = await createCa({ fresh: true });
    caPath = (await writeCerts(dir, 'upstream-ca', privateCa)).cert;
    port = await listen(https.createServer(await privateCa.issue({ names: ['localhost'] }), hello()));
    const internal = await privateCa.issue({ names: ['upstream.internal'], ips: [] });
    namedPort = await listen(https.createServer(internal, hello()));
  });

  async function get(origin: string, connect: Awaited<ReturnType<typeof createUpstreamTlsOptions>>) {
    const client = new Client(origin, { connect });
    try {
      const res = await client.request({ method: 'GET', path: '/' });
      return { status: res.statusCode, body: await res.body.text() };
    } finally {
      // destroy, not close: with undici 7.30.2, close() after an ERR_TLS_CERT_ALTNAME_INVALID never settles.
      await client.destroy();
    }
  }

  it('trusts an upstream signed by the configured private CA', async () => {
    const connect = await createUpstreamTlsOptions({ ca: caPath });
    expect(await get(`https://127.0.0.1:${port}`, connect)).toEqual({
      status: 200,
      body: 'hello over HTTP/1.1',
    });
  });

  it('refuses the same upstream without the CA', async () => {
    const connect = await createUpstreamTlsOptions({});
    await expect(get(`https://127.0.0.1:${port}`, connect)).rejects.toMatchObject({
      code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
  });

  it('checks the certificate against servername when the upstream is addressed by IP', async () => {
    const origin = `https://127.0.0.1:${namedPort}`;
    const named = await createUpstreamTlsOptions({ ca: caPath, servername: 'upstream.internal' });
    expect((await get(origin, named)).status).toBe(200);
    await expect(get(origin, await createUpstreamTlsOptions({ ca: caPath }))).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  it('rejectUnauthorized: false accepts an unverifiable upstream', async () => {
    const connect = await createUpstreamTlsOptions({ rejectUnauthorized: false });
    expect((await get(`https://127.0.0.1:${port}`, connect)).status).toBe(200);
  });

  it('names the field when the CA file is missing or not a certificate', async () => {
    const where = { file: 'openapi/petstore.yaml', path: '/x-portcullis/tls' };
    const missing = await createUpstreamTlsOptions({ ca: join(dir, 'no-ca.pem') }, where).catch(
      (e: unknown) => e,
    );
    expect(missing).toBeInstanceOf(ConfigError);
    expect((missing as ConfigError).issues[0]).toMatchObject({ ...where, path: '/x-portcullis/tls/ca' });

    const garbage = join(dir, 'garbage-ca.pem');
    await writeFile(garbage, 'nope');
    const notPem = await createUpstreamTlsOptions({ ca: garbage }).catch((e: unknown) => e);
    expect((notPem as ConfigError).issues[0]).toMatchObject({ file: 'gateway.yaml', path: '/ca' });
  });
});
