import type { IncomingHttpHeaders } from 'node:http';
import { connect as h2connect } from 'node:http2';
import {
  createServer as createHttpsServer,
  type Server as HttpsServer,
  request as httpsRequest,
} from 'node:https';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startUpstream, type TestUpstream } from '../helpers/upstream.ts';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** Subject CN of the certificate the gateway presented. */
  peerCn: string;
}

describe('TLS termination through the gateway', () => {
  let certDir: string;
  let caPem: string;
  let up: TestUpstream;
  let tlsUp: HttpsServer;
  let tlsUpUrl: string;
  const tlsUpSeen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  let gw: TestGateway;
  let httpsUrl: URL;
  let legacyControl: tls.Server;

  beforeAll(async () => {
    const ca = await createCa();
    caPem = ca.cert;
    certDir = await makeCertDir();
    const pair = async (name: string, names: string[]) =>
      writeCerts(certDir, name, await ca.issue({ names }));
    const [defaultPair, api, shop, apps] = await Promise.all([
      pair('default', ['default.example.test']),
      pair('api', ['api.example.test']),
      pair('shop', ['shop.example.test']),
      pair('apps', ['*.apps.example.test']),
    ]);

    up = await startUpstream({ name: 'plain' });

    // An HTTPS upstream whose certificate comes from a CA nobody trusts by default.
    const privateCa = await createCa({ fresh: true });
    const upstreamCa = await writeCerts(certDir, 'upstream-ca', privateCa);
    const upstreamLeaf = await privateCa.issue({ names: ['localhost'] });
    tlsUp = createHttpsServer(upstreamLeaf, (req, res) => {
      tlsUpSeen.push({ url: req.url ?? '', headers: req.headers });
      req.resume();
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ upstream: 'tls', url: req.url }));
    });
    await new Promise<void>((resolve) => tlsUp.listen(0, '127.0.0.1', resolve));
    tlsUpUrl = `https://127.0.0.1:${(tlsUp.address() as AddressInfo).port}`;

    gw = await startGateway(
      {
        svc: spec({ title: 'Svc', basePath: '/svc', upstreams: [up.url] }),
        secure: spec({
          title: 'Secure',
          basePath: '/secure',
          upstreams: [tlsUpUrl],
          extra: { tls: { ca: upstreamCa.cert } },
        }),
        untrusted: spec({ title: 'Untrusted', basePath: '/untrusted', upstreams: [tlsUpUrl] }),
      },
      {
        listen: {
          http: { port: 0, host: '127.0.0.1', redirectToHttps: true },
          https: {
            port: 0,
            host: '127.0.0.1',
            ...defaultPair,
            sni: { 'api.example.test': api, 'shop.example.test': shop, '*.apps.example.test': apps },
          },
        },
      },
    );
    httpsUrl = new URL(gw.addresses.https ?? '');

    // Control for the protocol floor: proves this client really can speak TLS 1.0/1.1 here.
    legacyControl = tls.createServer({
      ...(await ca.issue({ names: ['default.example.test'] })),
      minVersion: 'TLSv1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    await new Promise<void>((resolve) => legacyControl.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await gw?.close();
    await up?.close();
    tlsUp?.closeAllConnections();
    await new Promise((resolve) => (tlsUp ? tlsUp.close(resolve) : resolve(undefined)));
    await new Promise((resolve) => (legacyControl ? legacyControl.close(resolve) : resolve(undefined)));
    if (certDir) await removeCertDir(certDir);
  });

  /** An HTTPS/1.1 request to the gateway with SNI `servername`, verified against the test CA. */
  function get(path: string, servername: string, verify = true): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: httpsUrl.hostname,
          port: httpsUrl.port,
          path,
          servername,
          headers: { host: servername },
          ca: caPem,
          agent: false,
          ...(verify ? {} : { checkServerIdentity: () => undefined }),
        },
        (res) => {
          const peerCn = String((res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN ?? '');
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            body += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, peerCn }));
        },
      );
      req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end();
    });
  }

  /** A bare TLS handshake; resolves with the negotiated protocol or rejects with the TLS error. */
  function handshake(port: number, options: tls.ConnectionOptions): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        ca: caPem,
        servername: 'default.example.test',
        ...options,
      });
      socket.setTimeout(5000, () => socket.destroy(new Error('handshake timed out')));
      socket.once('secureConnect', () => {
        const protocol = socket.getProtocol() ?? '';
        socket.destroy();
        resolve(protocol);
      });
      socket.once('error', reject);
    });
  }

  describe('certificates by SNI', () => {
    it.each([
      { servername: 'api.example.test', cn: 'api.example.test' },
      { servername: 'shop.example.test', cn: 'shop.example.test' },
      { servername: 'SHOP.Example.Test', cn: 'shop.example.test' },
      { servername: 'tenant1.apps.example.test', cn: '*.apps.example.test' },
      { servername: 'default.example.test', cn: 'default.example.test' },
    ])(
      '$servername gets the certificate for $cn, and the upstream gets the request over https',
      async ({ servername, cn }) => {
        const before = up.seen.length;
        const res = await get('/svc/items?q=1', servername);
        expect(res.peerCn).toBe(cn);
        expect(res.status).toBe(200);
        const body = JSON.parse(res.body) as {
          upstream: string;
          url: string;
          headers: Record<string, string>;
        };
        expect(body).toMatchObject({ upstream: 'plain', url: '/items?q=1' });
        expect(body.headers['x-forwarded-proto']).toBe('https');
        expect(body.headers['x-forwarded-host']).toBe(servername);
        expect(body.headers.forwarded).toMatch(/;proto=https$/);
        expect(up.seen.length).toBe(before + 1);
      },
    );

    it.each([
      { case: 'an unknown name', servername: 'other.example.test' },
      { case: 'two labels under the wildcard', servername: 'a.b.apps.example.test' },
    ])('$case gets the default certificate', async ({ servername }) => {
      const res = await get('/svc/items', servername, false);
      expect(res.peerCn).toBe('default.example.test');
    });
  });

  describe('protocol versions', () => {
    // OpenSSL 3 does not even offer TLS < 1.2 at its default security level.
    const legacyClient = { ciphers: 'DEFAULT@SECLEVEL=0' };

    it.each(['TLSv1', 'TLSv1.1'] as const)('refuses a %s handshake', async (version) => {
      const client = { ...legacyClient, minVersion: version, maxVersion: version };
      expect(
        await handshake(legacyControl.address() ? (legacyControl.address() as AddressInfo).port : 0, client),
      ).toBe(version);
      await expect(handshake(Number(httpsUrl.port), client)).rejects.toMatchObject({
        code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
      });
    });

    it.each(['TLSv1.2', 'TLSv1.3'] as const)('accepts %s', async (version) => {
      expect(await handshake(Number(httpsUrl.port), { minVersion: version, maxVersion: version })).toBe(
        version,
      );
    });
  });

  it('serves HTTP/2 (ALPN h2) and forwards the request', async () => {
    const session = h2connect(httpsUrl.origin, { ca: caPem, servername: 'api.example.test' });
    try {
      const answer = await new Promise<{ status: number; body: string; alpn: string | false | undefined }>(
        (resolve, reject) => {
          session.on('error', reject);
          const stream = session.request({ ':path': '/svc/items/7', ':authority': 'api.example.test' });
          let status = 0;
          let body = '';
          stream.setEncoding('utf8');
          stream.on('response', (headers) => {
            status = Number(headers[':status']);
          });
          stream.on('data', (c: string) => {
            body += c;
          });
          stream.on('end', () => resolve({ status, body, alpn: session.alpnProtocol }));
          stream.on('error', reject);
          stream.setTimeout(5000, () => stream.close());
        },
      );
      expect(answer.alpn).toBe('h2');
      expect(answer.status).toBe(200);
      const body = JSON.parse(answer.body) as {
        upstream: string;
        url: string;
        headers: Record<string, string>;
      };
      expect(body).toMatchObject({ upstream: 'plain', url: '/items/7' });
      expect(body.headers['x-forwarded-proto']).toBe('https');
      expect(body.headers['x-forwarded-host']).toBe('api.example.test');
    } finally {
      session.close();
    }
  });

  describe('plain listener with redirectToHttps', () => {
    it('answers 308 with the https Location on the bound HTTPS port, keeping path and query', async () => {
      const before = up.seen.length;
      const res = await request(`${gw.url}/svc/items?x=1&y=2`, {
        method: 'POST',
        headers: { host: 'api.example.test:8080' },
        body: 'kept by 308',
      });
      await res.body.dump();
      expect(res.statusCode).toBe(308);
      expect(res.headers.location).toBe(`https://api.example.test:${httpsUrl.port}/svc/items?x=1&y=2`);
      expect(up.seen.length).toBe(before);
      const followed = await get('/svc/items?x=1&y=2', 'api.example.test');
      expect(followed.status).toBe(200);
    });

    it('refuses to build a Location from a Host header that is not a host', async () => {
      const res = await request(`${gw.url}/svc/items`, { headers: { host: 'evil.example@attacker.test' } });
      expect(res.statusCode).toBe(400);
      expect(res.headers.location).toBeUndefined();
      await res.body.dump();
    });
  });

  describe('HTTPS upstreams', () => {
    it('reaches an upstream signed by a private CA named in x-portcullis.tls.ca', async () => {
      const before = tlsUpSeen.length;
      const res = await get('/secure/items/1', 'api.example.test');
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ upstream: 'tls', url: '/items/1' });
      expect(tlsUpSeen.length).toBe(before + 1);
      expect(tlsUpSeen.at(-1)?.headers['x-forwarded-proto']).toBe('https');
    });

    it('answers 502 problem+json, without the upstream address, when the CA is not trusted', async () => {
      const before = tlsUpSeen.length;
      const res = await get('/untrusted/items/1', 'api.example.test');
      expect(res.status).toBe(502);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(res.body)).toMatchObject({ code: 'PC_UPSTREAM_ERROR', status: 502 });
      expect(res.body).not.toContain(new URL(tlsUpUrl).port);
      expect(tlsUpSeen.length).toBe(before);
    });
  });
});
