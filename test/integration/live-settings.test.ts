/**
 * Issue 13, part 3: certificates and gateway.yaml settings reload in a running process (same PID),
 * on SIGHUP and, with `watch: true`, when the files change. A real TLS client reads the
 * certificate each new handshake gets; a broken pair keeps the old one with an error naming the
 * file; limits.bodyBytes and trustProxy take effect; fields that need a restart are logged as such.
 */
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { type CertPem, createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { type CliGateway, startCliGateway } from '../helpers/cli.ts';
import { parsePrometheus, value } from '../helpers/prometheus.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

/** Poll until `check` passes (reloads are asynchronous to the signal or the file write). */
/** Retry `check` until it passes (every 50 ms, 10 s at most). */
const eventually = (check: () => Promise<void> | void) =>
  vi.waitFor(check, { timeout: 10_000, interval: 50 });

/** SHA-256 fingerprint of the certificate a new TLS handshake with the gateway gets. */
function servedFingerprint(port: number, servername = 'api.example.test'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerX509Certificate();
      socket.end();
      if (!cert) reject(new Error('no peer certificate'));
      else resolve(cert.fingerprint256);
    });
    socket.once('error', reject);
  });
}

const fingerprint = (pair: CertPem) => new X509Certificate(pair.cert).fingerprint256;

const spec = (upstream: string) => ({
  openapi: '3.1.0',
  info: { title: 'Items', version: '1.0.0' },
  'x-portcullis': { basePath: '/items', upstreams: [{ url: upstream }] },
  paths: {
    '/echo': {
      get: { operationId: 'getEcho', responses: { '200': { description: 'ok' } } },
      post: { operationId: 'postEcho', responses: { '200': { description: 'ok' } } },
    },
  },
});

let upstream: TestUpstream;
let certDir: string;
let first: CertPem;
let second: CertPem;
let third: CertPem;
beforeAll(async () => {
  upstream = await startUpstream({ name: 'items' });
  certDir = await makeCertDir();
  const ca = await createCa();
  const names = ['api.example.test'];
  [first, second, third] = await Promise.all([
    ca.issue({ names, fresh: true }),
    ca.issue({ names, fresh: true }),
    ca.issue({ names, fresh: true }),
  ]);
});
afterAll(async () => {
  await upstream?.close();
  await removeCertDir(certDir);
});

function httpsPort(gw: CliGateway): number {
  const line = gw.logs.find((l) => l.msg === 'portcullis listening');
  return Number(new URL(String(line?.https)).port);
}

describe.each([
  { how: 'SIGHUP', watch: false },
  { how: 'the file watch', watch: true },
])('certificate rotation by $how', ({ how, watch }) => {
  let gw: CliGateway;
  let paths: CertPem;
  beforeAll(async () => {
    paths = await writeCerts(certDir, `gateway-${watch}`, first);
    gw = await startCliGateway({
      specs: { items: spec(upstream.url) },
      config: {
        watch,
        listen: {
          http: { port: 0, host: '127.0.0.1' },
          https: { port: 0, host: '127.0.0.1', cert: paths.cert, key: paths.key },
        },
      },
    });
  });
  afterAll(async () => {
    await gw?.stop();
  });
  const reload = () => {
    if (!watch) process.kill(gw.pid, 'SIGHUP');
  };

  it(`serves the new certificate to new handshakes after ${how}, same process`, async () => {
    expect(await servedFingerprint(httpsPort(gw))).toBe(fingerprint(first));
    await writeCerts(certDir, `gateway-${watch}`, second);
    reload();
    await eventually(async () => {
      expect(await servedFingerprint(httpsPort(gw))).toBe(fingerprint(second));
      expect(gw.logs).toContainEqual(expect.objectContaining({ msg: 'certificates reloaded' }));
    });
    expect(gw.child.exitCode).toBeNull();
  });

  it('keeps the old certificate when the new key does not match, naming the file', async () => {
    // The certificate of `third` with the key of `second`: a broken pair.
    await writeFile(paths.cert, third.cert);
    reload();
    await eventually(() => {
      expect(gw.logs).toContainEqual(
        expect.objectContaining({
          code: 'PC_CONFIG_INVALID',
          msg: expect.stringMatching(/\/listen\/https\/key: .*does not belong to the certificate .*\.crt/),
        }),
      );
      expect(gw.logs).toContainEqual(
        expect.objectContaining({ msg: 'certificates rejected; the previous ones keep serving' }),
      );
    });
    expect(await servedFingerprint(httpsPort(gw))).toBe(fingerprint(second));
    // Fixed: the matching key arrives, the new pair is served.
    await writeFile(paths.key, third.key);
    reload();
    await eventually(async () => {
      expect(await servedFingerprint(httpsPort(gw))).toBe(fingerprint(third));
    });
  });
});

describe('gateway.yaml live fields on SIGHUP', () => {
  let gw: CliGateway;
  const base = (extra: Record<string, unknown>) => ({
    listen: { http: { port: 0, host: '127.0.0.1' } },
    admin: { port: 0, host: '127.0.0.1' },
    watch: false,
    logLevel: 'info',
    ...extra,
  });
  beforeAll(async () => {
    gw = await startCliGateway({
      specs: { items: spec(upstream.url) },
      config: { limits: { bodyBytes: 1000 } },
    });
  });
  afterAll(async () => {
    await gw?.stop();
  });
  /**
   * The status of a POST of `bytes`. A 413 may be sent before the body is read, and the close that
   * follows can reset the connection before the client reads it: such a send is tried again.
   */
  const post = async (bytes: number): Promise<number> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await fetch(`${gw.url}/items/echo`, { method: 'POST', body: 'x'.repeat(bytes) });
        await r.arrayBuffer();
        return r.status;
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  };

  it('limits.bodyBytes: 413 above the old limit, then 200 once raised, same process', async () => {
    expect(await post(3000)).toBe(413);
    await writeFile(join(gw.dir, 'gateway.yaml'), stringify(base({ limits: { bodyBytes: 100_000 } })));
    process.kill(gw.pid, 'SIGHUP');
    await eventually(async () => {
      expect(await post(3000)).toBe(200);
      // Logged once the policies are rebuilt too, a little after the listener has the new limit.
      expect(gw.logs).toContainEqual(
        expect.objectContaining({ msg: 'gateway.yaml reloaded', fields: ['/limits/bodyBytes'] }),
      );
    });
  });

  it('trustProxy: X-Forwarded-For from 127.0.0.1 is believed once it is trusted', async () => {
    const realIp = async () => {
      const before = upstream.seen.length;
      const res = await fetch(`${gw.url}/items/echo`, { headers: { 'x-forwarded-for': '198.51.100.7' } });
      await res.arrayBuffer();
      expect(res.status).toBe(200);
      return upstream.seen.slice(before).find((r) => r.url === '/echo')?.headers['x-real-ip'];
    };
    expect(await realIp()).toBe('127.0.0.1');
    await writeFile(
      join(gw.dir, 'gateway.yaml'),
      stringify(base({ limits: { bodyBytes: 100_000 }, trustProxy: ['127.0.0.1/32'] })),
    );
    process.kill(gw.pid, 'SIGHUP');
    await eventually(async () => {
      expect(await realIp()).toBe('198.51.100.7');
    });
  });

  it('a field that needs a restart is logged as such and not applied', async () => {
    const port = Number(new URL(gw.url).port);
    await writeFile(
      join(gw.dir, 'gateway.yaml'),
      stringify(
        base({
          listen: { http: { port: port + 1, host: '127.0.0.1' } },
          limits: { bodyBytes: 100_000 },
          trustProxy: ['127.0.0.1/32'],
        }),
      ),
    );
    process.kill(gw.pid, 'SIGHUP');
    await eventually(() => {
      expect(gw.logs).toContainEqual(
        expect.objectContaining({
          msg: 'gateway.yaml change needs a restart to take effect; not applied',
          fields: ['/listen/http/port'],
        }),
      );
    });
    expect(await post(10)).toBe(200);
  });

  it('a gateway.yaml that fails keeps the running settings, naming file:line', async () => {
    await writeFile(join(gw.dir, 'gateway.yaml'), 'limits:\n  bodyBytes: lots\n');
    process.kill(gw.pid, 'SIGHUP');
    await eventually(() => {
      expect(gw.logs).toContainEqual(
        expect.objectContaining({ msg: 'gateway.yaml rejected; the running settings are kept' }),
      );
    });
    expect(gw.logs).toContainEqual(
      expect.objectContaining({
        code: 'PC_CONFIG_INVALID',
        msg: expect.stringMatching(/gateway\.yaml:2: \/limits\/bodyBytes: /),
      }),
    );
    expect(await post(3000)).toBe(200);
  });
});

describe('one SIGHUP, one reload of the specs and policies', () => {
  let gw: CliGateway;
  const settings = (bodyBytes: number) => ({
    listen: { http: { port: 0, host: '127.0.0.1' } },
    admin: { port: 0, host: '127.0.0.1' },
    watch: false,
    logLevel: 'info',
    limits: { bodyBytes },
  });
  beforeAll(async () => {
    gw = await startCliGateway({
      specs: { items: spec(upstream.url) },
      config: { admin: { port: 0, host: '127.0.0.1' }, limits: { bodyBytes: 1000 } },
    });
  });
  afterAll(async () => {
    await gw?.stop();
  });
  const reloads = async () => {
    const text = await (await fetch(`${gw.admin}/metrics`)).text();
    return value(parsePrometheus(text), 'portcullis_config_reloads_total', { result: 'success' });
  };
  const applied = () => gw.logs.filter((l) => l.msg === 'gateway.yaml reloaded').length;

  it('counts one reload per SIGHUP, with or without live gateway.yaml changes', async () => {
    const start = await reloads();
    // Nothing changed: the specs and policies are reloaded (they may have), once.
    process.kill(gw.pid, 'SIGHUP');
    await eventually(async () => expect(await reloads()).toBe(start + 1));
    // A live field changed: applying it reloads the specs and policies, and that is the one reload.
    // Each SIGHUP's own log line comes after its reload; a second reload of the first SIGHUP
    // would be counted by the time the second SIGHUP's line is out (reloads run one at a time).
    for (const [i, bodyBytes] of [2000, 3000].entries()) {
      await writeFile(join(gw.dir, 'gateway.yaml'), stringify(settings(bodyBytes)));
      process.kill(gw.pid, 'SIGHUP');
      await eventually(() => expect(applied()).toBe(i + 1));
    }
    expect(await reloads()).toBe(start + 3);
  });
});
