import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from './certs.ts';

describe('test PKI helper', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await makeCertDir();
  });
  afterAll(() => removeCertDir(dir));

  it.each([
    { keyType: 'ec', algorithm: 'ec', detail: { namedCurve: 'prime256v1' } },
    { keyType: 'rsa', algorithm: 'rsa', detail: { modulusLength: 2048 } },
  ] as const)(
    'issues $keyType leaves signed by the CA, with DNS and loopback IP SANs',
    async ({ keyType, algorithm, detail }) => {
      const ca = await createCa({ keyType });
      const leaf = await ca.issue({ names: ['svc.example.com', '*.svc.example.com'] });
      const caCert = new X509Certificate(ca.cert);
      const cert = new X509Certificate(leaf.cert);

      expect(caCert.ca).toBe(true);
      expect(cert.ca).toBe(false);
      expect(cert.checkIssued(caCert)).toBe(true);
      expect(cert.verify(caCert.publicKey)).toBe(true);
      expect(cert.subjectAltName).toBe(
        'DNS:svc.example.com, DNS:*.svc.example.com, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
      );
      expect(cert.checkHost('a.svc.example.com')).toBe('*.svc.example.com');
      expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
      expect(cert.publicKey.asymmetricKeyType).toBe(algorithm);
      expect(cert.publicKey.asymmetricKeyDetails).toMatchObject(detail);
      expect(cert.checkPrivateKey(createPrivateKey(leaf.key))).toBe(true);
    },
  );

  it('caches the CA and leaves per process; fresh asks for new ones', async () => {
    const ca = await createCa();
    expect(await createCa()).toBe(ca);
    expect((await createCa({ fresh: true })).cert).not.toBe(ca.cert);
    const leaf = await ca.issue({ names: ['cached.example.com'] });
    expect(await ca.issue({ names: ['cached.example.com'] })).toBe(leaf);
    expect((await ca.issue({ names: ['cached.example.com'], fresh: true })).key).not.toBe(leaf.key);
  });

  it('writes PEM files whose paths fit a gateway.yaml certificate pair', async () => {
    const leaf = await (await createCa()).issue({ names: ['files.example.com'] });
    const paths = await writeCerts(dir, 'files', leaf);
    expect(paths).toEqual({ cert: `${dir}/files.crt`, key: `${dir}/files.key` });
    expect(await readFile(paths.cert, 'utf8')).toBe(leaf.cert);
    expect(await readFile(paths.key, 'utf8')).toBe(leaf.key);
  });
});
