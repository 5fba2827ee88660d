import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type PassThrough, Transform, Writable } from 'node:stream';
import { Type as T } from '@sinclair/typebox';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PolicySlice, policySlice } from '../../test/helpers/policy.ts';
import { addResponseStage, RESPONSE_STAGE_ORDER, type ResponseStage, throughStages } from './response.ts';
import type { PolicyKind, RequestContext } from './types.ts';

/** Upper-cases the body; counts what it passed; `gone` once destroyed or finished. */
class Upper extends Transform {
  gone = false;
  bytes = 0;
  constructor() {
    super();
    this.on('close', () => {
      this.gone = true;
    });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e: null, d: Buffer) => void): void {
    this.bytes += chunk.length;
    cb(null, Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1'));
  }
}

/** Copies what passes (as the cache's store would). */
class Tap extends Transform {
  seen: Buffer[] = [];
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e: null, d: Buffer) => void): void {
    this.seen.push(chunk);
    cb(null, chunk);
  }
}

const made: { upper?: Upper; tap?: Tap; storeSawHeader?: unknown; storeSawStatus?: number } = {};

/**
 * A test kind that registers two stages per request, the store-like one first: they must run by
 * `order` (the upper-casing "compress" stage before the later "store" tap).
 */
const stagesKind = {
  name: 'stagesTest',
  phase: 'headers',
  schema: T.Object({}),
  create() {
    return function stagesTest(ctx: RequestContext) {
      const store: ResponseStage = {
        name: 'store',
        order: RESPONSE_STAGE_ORDER.compress + 10,
        onHead(head) {
          made.storeSawHeader = head.headers['x-staged'];
          made.storeSawStatus = head.status;
          made.tap = new Tap();
          return made.tap;
        },
      };
      const upper: ResponseStage = {
        name: 'upper',
        order: RESPONSE_STAGE_ORDER.compress,
        onHead(head) {
          head.headers['x-staged'] = 'upper';
          delete head.headers['content-length'];
          if (head.status === 200) head.status = 203;
          if (head.method === 'HEAD') return undefined;
          made.upper = new Upper();
          return made.upper;
        },
      };
      addResponseStage(ctx, store);
      addResponseStage(ctx, upper);
    };
  },
} as unknown as PolicyKind;

let upstream: Server;
let endlessClosed = false;
let upstreamUrl = '';
let slice: PolicySlice;
let gw = '';

beforeAll(async () => {
  upstream = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/endless') {
      // Writes until the gateway goes away.
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('tick\n'), 5);
      res.on('close', () => {
        clearInterval(timer);
        endlessClosed = true;
      });
      return;
    }
    const n = Number(url.searchParams.get('n') ?? 0);
    if (n > 0) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(n) });
      const piece = Buffer.alloc(64 * 1024, 'a');
      let left = n;
      const pump = () => {
        while (left > 0) {
          const p = piece.subarray(0, Math.min(left, piece.length));
          left -= p.length;
          if (!res.write(p)) return res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' }).end('hello world');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  slice = await policySlice({ kind: stagesKind, config: {}, upstreams: [upstreamUrl] });
  gw = await slice.app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(async () => {
  await slice?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
});

describe('response stages (pipeline/response.ts) in the forwarder', () => {
  it('run in stage order: the first edits status and headers and transforms the body, the store stage sees the result', async () => {
    const res = await request(`${gw}/x`);
    expect(res.statusCode).toBe(203);
    expect(res.headers['x-staged']).toBe('upper');
    expect(res.headers['content-length']).toBeUndefined();
    expect(await res.body.text()).toBe('HELLO WORLD');
    expect(made.storeSawHeader).toBe('upper');
    expect(made.storeSawStatus).toBe(203);
    expect(Buffer.concat(made.tap?.seen ?? []).toString()).toBe('HELLO WORLD');
  });

  it('HEAD: the head is edited like GET and no stream is involved', async () => {
    const res = await request(`${gw}/x`, { method: 'HEAD' });
    expect(res.statusCode).toBe(203);
    expect(res.headers['x-staged']).toBe('upper');
    expect(await res.body.text()).toBe('');
  });

  it('carry a 20 MB body through with backpressure, every byte in order', async () => {
    const n = 20 * 1024 * 1024;
    const res = await request(`${gw}/x?n=${n}`);
    let got = 0;
    let wrong = 0;
    for await (const chunk of res.body) {
      got += (chunk as Buffer).length;
      if ((chunk as Buffer).some((b) => b !== 0x41)) wrong++;
    }
    expect(got).toBe(n);
    expect(wrong).toBe(0);
    expect(made.upper?.bytes).toBe(n);
  });

  it('a client that goes away destroys the stages’ streams and the upstream request', async () => {
    const ac = new AbortController();
    // A client of its own: the aborted connection is gone when the test ends.
    const client = new Client(gw);
    const res = await client.request({ path: '/endless', method: 'GET', signal: ac.signal });
    const it = res.body[Symbol.asyncIterator]();
    const first = await it.next();
    expect(String(first.value)).toContain('TICK');
    const upper = made.upper as Upper;
    expect(upper.gone).toBe(false);
    ac.abort();
    await expect(it.next()).rejects.toThrow();
    await new Promise<void>((resolve) => {
      if (upper.gone) resolve();
      else upper.once('close', () => resolve());
    });
    expect(upper.destroyed).toBe(true);
    expect(upper.writableFinished).toBe(false);
    await expect.poll(() => endlessClosed).toBe(true);
    await client.destroy();
  });
});

describe('throughStages (the one join of stages to the client: forwarded, cached and mock answers)', () => {
  const sink = () => {
    const got: Buffer[] = [];
    const w = new Writable({
      write(chunk: Buffer, _enc, cb) {
        got.push(chunk);
        cb();
      },
    });
    return { w, got };
  };
  const logOf = () => {
    const lines: { obj: object; msg: string }[] = [];
    return { lines, log: { warn: (obj: object, msg: string) => lines.push({ obj, msg }) } };
  };

  /** A stage that halves the body (as compression shrinks it): the client gets what it leaves. */
  const halve = () =>
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        cb(null, chunk.subarray(0, chunk.length / 2));
      },
    });

  it('carries the body through every stage in order to the client, counting what the client got', async () => {
    const { w, got } = sink();
    const { lines, log } = logOf();
    const rec = { id: 'r1', bytes: 0 };
    const first = throughStages([new Upper(), new Tap(), halve()], w, log, rec);
    first.end(Buffer.from('hello!'));
    await new Promise((r) => w.on('finish', r));
    expect(Buffer.concat(got).toString()).toBe('HEL');
    expect(rec.bytes).toBe(3);
    expect(lines).toEqual([]);
  });

  it('without a client, joins the stages and a counter, and leaves the last one to the caller', async () => {
    const upper = new Upper();
    const streams = [upper, halve()];
    const { log } = logOf();
    const rec = { id: 'r2', bytes: 0 };
    const first = throughStages(streams, undefined, log, rec);
    expect(first).toBe(upper);
    expect(streams).toHaveLength(3);
    first.end('abcd');
    const chunks: Buffer[] = [];
    for await (const c of streams[2] as PassThrough) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('AB');
    expect(rec.bytes).toBe(2);
  });

  it('logs a stage that fails with the request id, but not a client going away', async () => {
    const failing = new Transform({
      transform(_c, _e, cb) {
        cb(new Error('stage broke'));
      },
    });
    const a = sink();
    const { lines, log } = logOf();
    throughStages([failing], a.w, log, { id: 'r3', bytes: 0 }).write('x');
    await new Promise((r) => a.w.on('close', r));
    expect(lines).toEqual([
      { obj: expect.objectContaining({ reqId: 'r3' }), msg: 'response stage failed mid-response' },
    ]);

    const b = sink();
    const quiet = logOf();
    const upper = new Upper();
    throughStages([upper], b.w, quiet.log, undefined);
    b.w.destroy();
    await new Promise((r) => upper.on('close', r));
    expect(upper.gone).toBe(true);
    expect(quiet.lines).toEqual([]);
  });
});
