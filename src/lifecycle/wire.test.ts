import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, test } from 'vitest';
import { compileCidrs } from '../net/cidr.ts';
import { PublicReply, PublicRequest } from './wire.ts';

/** A real node:http server whose handler gets the gateway's request and reply. */
let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

const silent = { warn() {} };

async function serve(
  trusted: string[],
  handler: (req: PublicRequest, reply: PublicReply) => void,
): Promise<number> {
  const live = { trust: compileCidrs(trusted) };
  const s = createServer((raw: IncomingMessage, res: ServerResponse) =>
    handler(new PublicRequest(raw, live, silent), new PublicReply(res)),
  );
  server = s;
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return (s.address() as AddressInfo).port;
}

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('PublicRequest', () => {
  test('ip: X-Forwarded-For is believed from trusted peers only, walked back to the first untrusted hop', async () => {
    let seen: string[] = [];
    const echo = (req: PublicRequest, reply: PublicReply) => {
      seen.push(req.ip, req.protocol);
      reply.send('ok');
    };
    let port = await serve([], echo);
    await call(port, 'GET', '/', { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' });
    expect(seen).toEqual(['127.0.0.1', 'http']);
    await new Promise<void>((resolve) => server?.close(() => resolve()));

    seen = [];
    port = await serve(['127.0.0.1/32', '10.0.0.0/8'], echo);
    // 198.51.100.7 is not trusted: it is the client, whatever it claimed before itself.
    await call(port, 'GET', '/', {
      'x-forwarded-for': '192.0.2.1, 198.51.100.7, 10.1.2.3',
      'x-forwarded-proto': 'http, HTTPS',
    });
    expect(seen).toEqual(['198.51.100.7', 'https']);
  });

  test('query: the raw query string parsed on first read; no query is an empty object', async () => {
    const got: unknown[] = [];
    const port = await serve([], (req, reply) => {
      got.push(req.query);
      reply.send();
    });
    await call(port, 'GET', '/x?a=1&b=two%20words&a=2');
    await call(port, 'GET', '/x');
    expect(got[0]).toEqual({ a: ['1', '2'], b: 'two words' });
    expect(got[1]).toEqual({});
  });
});

describe('PublicReply', () => {
  test('a string gets text/plain and its byte length; a HEAD answer keeps the headers without the body', async () => {
    const port = await serve([], (_req, reply) => {
      reply.code(200).header('X-One', 'a').send('héllo');
    });
    const get = await call(port, 'GET', '/');
    expect(get).toMatchObject({ status: 200, body: 'héllo' });
    expect(get.headers).toMatchObject({
      'content-type': 'text/plain; charset=utf-8',
      'content-length': '6',
      'x-one': 'a',
    });
    const head = await call(port, 'HEAD', '/');
    expect(head.body).toBe('');
    expect(head.headers['content-length']).toBe('6');
  });

  test('a HEAD answer keeps a Content-Length set for its GET', async () => {
    const port = await serve([], (_req, reply) => {
      reply.header('content-length', '42').send('');
    });
    expect((await call(port, 'HEAD', '/')).headers['content-length']).toBe('42');
    // A GET gets the length of what is sent.
    expect((await call(port, 'GET', '/')).headers['content-length']).toBe('0');
  });

  test('a Buffer is application/octet-stream unless typed; nothing sent is Content-Length 0', async () => {
    const port = await serve([], (req, reply) => {
      if (req.url === '/buf') reply.send(Buffer.from([1, 2, 3]));
      else if (req.url === '/typed') reply.header('content-type', 'image/png').send(Buffer.from([1]));
      else reply.code(202).send();
    });
    const buf = await call(port, 'GET', '/buf');
    expect(buf.headers).toMatchObject({ 'content-type': 'application/octet-stream', 'content-length': '3' });
    expect((await call(port, 'GET', '/typed')).headers['content-type']).toBe('image/png');
    const none = await call(port, 'GET', '/none');
    expect(none).toMatchObject({ status: 202, body: '' });
    expect(none.headers['content-length']).toBe('0');
  });

  test('204 carries neither Content-Type nor Content-Length, even with a body given', async () => {
    const port = await serve([], (_req, reply) => {
      reply.code(204).header('content-type', 'text/plain').send('ignored');
    });
    const res = await call(port, 'GET', '/');
    expect(res.status).toBe(204);
    expect(res.headers['content-type']).toBeUndefined();
    expect(res.headers['content-length']).toBeUndefined();
  });

  test('a stream is piped (chunked); redirect sets Location; Set-Cookie values accumulate', async () => {
    const port = await serve([], (req, reply) => {
      if (req.url === '/stream')
        reply.header('content-type', 'text/csv').send(Readable.from(['a,b\n', '1,2\n']));
      else if (req.url === '/go') reply.redirect('https://example.com/', 308);
      else reply.header('set-cookie', 'a=1').header('Set-Cookie', ['b=2', 'c=3']).send('x');
    });
    const stream = await call(port, 'GET', '/stream');
    expect(stream.body).toBe('a,b\n1,2\n');
    expect(stream.headers['transfer-encoding']).toBe('chunked');
    const go = await call(port, 'GET', '/go');
    expect(go).toMatchObject({ status: 308, headers: { location: 'https://example.com/' } });
    expect((await call(port, 'GET', '/c')).headers['set-cookie']).toEqual(['a=1', 'b=2', 'c=3']);
  });

  test('sent: false until written or hijacked; a second send writes nothing', async () => {
    const states: boolean[] = [];
    const port = await serve([], (req, reply) => {
      states.push(reply.sent);
      if (req.url === '/hijack') {
        reply.hijack();
        states.push(reply.sent);
        reply.raw.writeHead(201).end('raw');
        return;
      }
      reply.send('first');
      states.push(reply.sent);
      reply.code(500).send('second');
    });
    expect((await call(port, 'GET', '/')).body).toBe('first');
    expect(await call(port, 'GET', '/hijack')).toMatchObject({ status: 201, body: 'raw' });
    expect(states).toEqual([false, true, false, true]);
  });
});
