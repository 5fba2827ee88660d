/**
 * A 50 MB body compressed on its way through a real gateway process: streamed (the client decodes
 * the first half before the upstream sends the second, so nothing waits for the whole body), decoded
 * back to the exact upstream bytes, with the gateway's peak memory growing far less than the body.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Transform } from 'node:stream';
import zlib from 'node:zlib';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliGateway, processMemory, startCliGateway } from '../helpers/cli.ts';
import { spec } from '../helpers/gateway.ts';

const MB = 1_000_000;
const BIG = 50 * MB;
/** Warm-up transfer per encoding: grows the heap to its steady state before the baseline. */
const WARM = 10 * MB;
/**
 * How far the gateway's peak resident memory may rise while 3 x 50 MB flow through compressors:
 * less than one body (measured here: 5-15 MiB). Holding back the input is caught by the gate below
 * whatever the memory.
 */
const MAX_GROWTH = 50 * MB;
const PIECE = 64 * 1024;

/**
 * Deterministic base64 text (random bytes, so it compresses to about 3/4, never to nothing):
 * piece `i` of a body is the same on every call.
 */
function piece(i: number): Buffer {
  const raw = Buffer.alloc((PIECE / 4) * 3);
  // xorshift32, seeded per piece.
  let x = Math.imul(i + 1, 2654435761) >>> 0 || 1;
  for (let k = 0; k < raw.length; k += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    raw.writeUInt32LE(x >>> 0, k);
  }
  return Buffer.from(raw.toString('base64'));
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

describe('compressing a 50 MB streamed body in a gateway process', () => {
  let upstream: Server;
  let gw: CliGateway;
  /** Released by the client once it decoded `gateAt` bytes; the upstream waits for it halfway. */
  let gate: { at: number; open: () => void; opened: Promise<void> } | undefined;
  const sent = new Map<string, string>();

  beforeAll(async () => {
    upstream = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const n = Number(url.searchParams.get('n'));
      const id = url.searchParams.get('id') ?? '';
      const headers: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8' };
      if (url.searchParams.get('sized') === '1') headers['content-length'] = String(n);
      res.writeHead(200, headers);
      const hash = createHash('sha256');
      let offset = 0;
      let i = 0;
      const pump = async (): Promise<void> => {
        while (offset < n) {
          if (gate && offset >= n / 2) await gate.opened;
          const p = piece(i++);
          const chunk = p.length <= n - offset ? p : p.subarray(0, n - offset);
          offset += chunk.length;
          hash.update(chunk);
          if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
          if (res.destroyed) return;
        }
        sent.set(id, hash.digest('hex'));
        res.end();
      };
      void pump();
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    gw = await startCliGateway({
      specs: { big: spec({ basePath: '/big', upstreams: [upUrl], operations: { 'GET /big': 'big' } }) },
      policies: { compress: [{ match: { service: 'big' }, compress: {} }] },
    });
  });
  afterAll(async () => {
    const code = await gw?.stop();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
    expect(code).toBe(0);
  });

  const DECODERS: Record<string, () => Transform> = {
    br: () => zlib.createBrotliDecompress(),
    zstd: () => zlib.createZstdDecompress(),
    gzip: () => zlib.createGunzip(),
  };

  /** Fetch `n` bytes in `enc`; decode as it streams; the decoded length and hash, and the wire bytes. */
  async function fetchDecoded(enc: string, n: number, sized: boolean, id: string) {
    const res = await request(`${gw.url}/big/big?n=${n}&sized=${sized ? 1 : 0}&id=${id}`, {
      headers: { 'accept-encoding': enc },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-encoding']).toBe(enc);
    const decoder = (DECODERS[enc] as () => Transform)();
    let wire = 0;
    res.body.on('data', (c: Buffer) => {
      wire += c.length;
    });
    res.body.pipe(decoder);
    const hash = createHash('sha256');
    let decoded = 0;
    for await (const chunk of decoder) {
      decoded += (chunk as Buffer).length;
      hash.update(chunk as Buffer);
      if (gate && decoded >= gate.at) gate.open();
    }
    return { decoded, hash: hash.digest('hex'), wire };
  }

  it('streams 50 MB per encoding, decoded to the exact upstream bytes, with bounded memory', async () => {
    for (const enc of ['br', 'zstd', 'gzip']) {
      const warm = await fetchDecoded(enc, WARM, true, `warm-${enc}`);
      expect(warm.decoded).toBe(WARM);
    }
    const before = await processMemory(gw.pid);
    const cases: Array<[string, boolean]> = [
      ['br', true],
      ['zstd', false],
      ['gzip', false],
    ];
    for (const [enc, sized] of cases) {
      // The client must decode 20 MB before the upstream sends its second half: a gateway that
      // held the body back would wait forever here.
      let open = () => {};
      const opened = new Promise<void>((r) => {
        open = r;
      });
      gate = { at: 20 * MB, open, opened };
      const id = `big-${enc}`;
      const got = await fetchDecoded(enc, BIG, sized, id);
      gate = undefined;
      expect(got.decoded).toBe(BIG);
      expect(got.hash).toBe(sent.get(id));
      expect(got.wire).toBeLessThan(BIG);
      console.info(
        `${enc}${sized ? ' (Content-Length)' : ' (chunked)'}: 50 MB → ${mib(got.wire)} on the wire`,
      );
    }
    const after = await processMemory(gw.pid);
    const growth = after.peak - before.rss;
    console.info(
      `gateway memory: VmRSS before ${mib(before.rss)} (VmHWM ${mib(before.peak)}), VmHWM after ${mib(after.peak)}: peak growth ${mib(growth)} over 3 x 50 MB compressed`,
    );
    expect(growth).toBeLessThan(MAX_GROWTH);
  });
});
