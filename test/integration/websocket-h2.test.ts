/**
 * WebSockets over HTTP/2 (RFC 8441), through a real gateway on TLS to a real `ws` upstream: the
 * h2 listener offers extended CONNECT; a CONNECT with `:protocol websocket` runs the same policy
 * chain as an HTTP/1.1 upgrade (401 without credentials, nothing upstream), is answered 200 with
 * the upstream's subprotocol once the upstream said 101, and its stream carries frames both ways.
 * Any other CONNECT gets a problem answer from the gateway.
 */
import { once } from 'node:events';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, makeCertDir, removeCertDir, writeCerts } from '../helpers/certs.ts';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { startWsUpstream, type WsUpstream } from '../helpers/ws-upstream.ts';

const API_KEY = 'k-websocket-h2-0123456789';

/** A masked client frame (RFC 6455 §5.2; payloads under 126 bytes are enough here). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = Buffer.from([0x1f, 0x2e, 0x3d, 0x4c]);
  const masked = Buffer.from(payload.map((b, i) => b ^ (mask[i & 3] as number)));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

/** Reads unmasked server frames off a stream, one at a time. */
function frameReader(stream: ClientHttp2Stream) {
  let buffered = Buffer.alloc(0);
  const waiting: Array<() => void> = [];
  stream.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (const w of waiting.splice(0)) w();
  });
  return async function next(): Promise<{ opcode: number; payload: Buffer }> {
    for (;;) {
      if (buffered.length >= 2) {
        const len = (buffered[1] as number) & 0x7f;
        const ext = len === 126 ? 2 : 0;
        const size = ext ? buffered.readUInt16BE(2) : len;
        if (buffered.length >= 2 + ext + size) {
          const out = {
            opcode: (buffered[0] as number) & 0x0f,
            payload: buffered.subarray(2 + ext, 2 + ext + size),
          };
          buffered = buffered.subarray(2 + ext + size);
          return out;
        }
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
  };
}

describe('WebSockets over HTTP/2 (RFC 8441)', () => {
  let up: WsUpstream;
  let gw: TestGateway;
  let certDir: string;
  let ca: string;
  let session: ClientHttp2Session;
  let origin: string;
  const logs = captureLogs();

  beforeAll(async () => {
    up = await startWsUpstream({ protocols: ['chat.v2'] });
    const authority = await createCa();
    ca = authority.cert;
    certDir = await makeCertDir();
    const pair = await writeCerts(certDir, 'gateway', await authority.issue({ names: ['localhost'] }));
    gw = await startGateway(
      {
        svc: spec({
          basePath: '/svc',
          upstreams: [up.url],
          operations: { 'GET /echo': 'echo', 'GET /keyed/echo': 'keyedEcho' },
        }),
        off: spec({
          title: 'Off',
          basePath: '/off',
          upstreams: [up.url],
          operations: { 'GET /echo': 'offEcho' },
          extra: { websocket: false },
        }),
      },
      { listen: { https: { port: 0, host: '127.0.0.1', ...pair } } },
      {
        logger: logs.logger,
        files: { 'policies/secrets/keys.yaml': `robot: ${API_KEY}\n` },
        policies: {
          ws: [
            {
              match: { service: 'svc', operations: ['keyedEcho'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' } },
            },
            // Body-reading policies: the open stream of a CONNECT is frames, never a body to read.
            { match: { service: 'svc', operations: ['echo'] }, waf: {}, validate: {} },
          ],
        },
      },
    );
    origin = (gw.addresses.https ?? '').replace('127.0.0.1', 'localhost');
    session = connect(origin, { ca });
    await once(session, 'remoteSettings');
  });
  afterAll(async () => {
    session?.close();
    await gw?.close();
    await up?.close();
    if (certDir) await removeCertDir(certDir);
  });

  function extendedConnect(path: string, headers: Record<string, string> = {}) {
    const stream = session.request(
      {
        ':method': 'CONNECT',
        ':protocol': 'websocket',
        ':scheme': 'https',
        ':path': path,
        'sec-websocket-version': '13',
        ...headers,
      },
      { endStream: false },
    );
    const response = once(stream, 'response') as Promise<[IncomingHttpHeaders]>;
    return { stream, response: response.then(([h]) => h) };
  }

  /** The status and problem code of a refused CONNECT (the stream then ends). */
  async function refusedWith(path: string, headers: Record<string, string> = {}) {
    const { stream, response } = extendedConnect(path, headers);
    const h = await response;
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => {
      body += c;
    });
    await once(stream, 'end');
    return { status: Number(h[':status']), type: h['content-type'], code: JSON.parse(body).code as string };
  }

  it('offers extended CONNECT', () => {
    expect(session.remoteSettings.enableConnectProtocol).toBe(true);
  });

  it('opens a WebSocket on a stream: 200 with the subprotocol, frames echoed, close passed both ways', async () => {
    const before = up.seen.length;
    const { stream, response } = extendedConnect('/svc/echo?room=1', {
      'sec-websocket-protocol': 'chat.v1, chat.v2',
    });
    const h = await response;
    expect(h[':status']).toBe(200);
    expect(h['sec-websocket-protocol']).toBe('chat.v2');
    expect(h['sec-websocket-accept']).toBeUndefined();
    const seen = up.seen[before];
    expect(seen?.url).toBe('/echo?room=1');
    expect(seen?.headers['x-forwarded-proto']).toBe('https');
    expect(seen?.headers['sec-websocket-key']).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    // The upgrade is logged once answered, while its stream stays open as the socket.
    await expect
      .poll(() =>
        logs.lines.find((l) => l.msg === 'request' && l.websocket === true && l.route === '/svc/echo'),
      )
      .toMatchObject({ method: 'GET', status: 200, service: 'svc' });
    const next = frameReader(stream);
    stream.write(clientFrame(0x1, Buffer.from('hello over h2')));
    const echoed = await next();
    expect(echoed.opcode).toBe(0x1);
    expect(echoed.payload.toString()).toBe('hello over h2');
    const binary = Buffer.from([0, 0x88, 0xff, 1]);
    stream.write(clientFrame(0x2, binary));
    expect(await next()).toEqual({ opcode: 0x2, payload: binary });
    // Close 4003 from the client: the upstream gets it, and its answering close comes back.
    const closes = up.closes.length;
    const reason = Buffer.concat([Buffer.from([0x0f, 0xa3]), Buffer.from('h2 bye')]);
    stream.write(clientFrame(0x8, reason));
    const closing = await next();
    expect(closing.opcode).toBe(0x8);
    expect(closing.payload.readUInt16BE(0)).toBe(4003);
    await expect.poll(() => up.closes.slice(closes)).toEqual([{ code: 4003, reason: 'h2 bye' }]);
    stream.end();
    await once(stream, 'close');
  });

  it('runs the policy chain: 401 without credentials and nothing upstream; 403 where websocket is false', async () => {
    const before = up.seen.length;
    expect(await refusedWith('/svc/keyed/echo')).toMatchObject({
      status: 401,
      type: expect.stringMatching(/^application\/problem\+json/),
      code: 'PC_UNAUTHORIZED',
    });
    expect(await refusedWith('/off/echo')).toMatchObject({ status: 403, code: 'PC_WEBSOCKET_REFUSED' });
    expect(await refusedWith('/svc/nowhere')).toMatchObject({ status: 404, code: 'PC_ROUTE_NOT_FOUND' });
    expect(up.seen.length).toBe(before);
    const { stream, response } = extendedConnect('/svc/keyed/echo', { 'x-api-key': API_KEY });
    expect((await response)[':status']).toBe(200);
    expect(up.seen.length).toBe(before + 1);
    stream.close();
  });

  it('answers any other CONNECT with a 405 problem from the gateway', async () => {
    const before = up.seen.length;
    const stream = session.request(
      { ':method': 'CONNECT', ':authority': 'example.test:443' },
      { endStream: false },
    );
    const [h] = (await once(stream, 'response')) as [IncomingHttpHeaders];
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => {
      body += c;
    });
    await once(stream, 'end');
    expect(h[':status']).toBe(405);
    expect(h['content-type']).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(body).code).toBe('PC_METHOD_NOT_ALLOWED');
    // Another protocol on an operation's path is not a WebSocket either.
    expect(await refusedWith('/svc/echo', { ':protocol': 'connect-udp' })).toMatchObject({
      status: 405,
      code: 'PC_METHOD_NOT_ALLOWED',
    });
    expect(up.seen.length).toBe(before);
  });
});
