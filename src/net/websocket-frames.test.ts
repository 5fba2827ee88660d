import { describe, expect, it } from 'vitest';
import { closeFrame, FrameBoundaries } from './websocket-frames.ts';

/** A frame as RFC 6455 §5.2 lays it out (the mask key is fixed: its value does not matter here). */
function frame(opcode: number, payloadLength: number, masked: boolean): Buffer {
  const len7 = payloadLength < 126 ? payloadLength : payloadLength < 65536 ? 126 : 127;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  const header = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  header[0] = 0x80 | opcode;
  header[1] = (masked ? 0x80 : 0) | len7;
  if (len7 === 126) header.writeUInt16BE(payloadLength, 2);
  if (len7 === 127) header.writeBigUInt64BE(BigInt(payloadLength), 2);
  if (masked) header.set([1, 2, 3, 4], 2 + ext);
  // A payload full of bytes that look like frame headers: only counting can skip them.
  return Buffer.concat([header, Buffer.alloc(payloadLength, 0x88)]);
}

const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000];

/** Feed `bytes` in chunks of `size` and collect every offset (in the whole stream) where a frame ended. */
function boundaries(bytes: Buffer, size: number): number[] {
  const t = new FrameBoundaries();
  const out: number[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    let chunk = bytes.subarray(offset, Math.min(offset + size, bytes.length));
    while (chunk.length > 0) {
      const n = t.scan(chunk, true);
      if (n === 0) {
        // At a boundary already: step over the next frame's first byte.
        t.scan(chunk.subarray(0, 1), false);
        offset += 1;
        chunk = chunk.subarray(1);
        if (t.atBoundary) out.push(offset);
        continue;
      }
      offset += n;
      chunk = chunk.subarray(n);
      if (t.atBoundary) out.push(offset);
    }
  }
  return out;
}

describe('FrameBoundaries', () => {
  for (const masked of [false, true]) {
    it(`finds the end of every frame (${masked ? 'masked' : 'unmasked'}; 7-bit, 16-bit and 64-bit lengths) however the bytes are split`, () => {
      const frames = SIZES.map((n) => frame(0x2, n, masked));
      const stream = Buffer.concat(frames);
      const expected: number[] = [];
      let end = 0;
      for (const f of frames) {
        end += f.length;
        expected.push(end);
      }
      for (const size of [1, 3, 7, 1000, 65536, stream.length])
        expect(boundaries(stream, size)).toEqual(expected);
    });
  }

  it('relays a whole chunk when not stopping, and stops at the first boundary when asked', () => {
    const t = new FrameBoundaries();
    const two = Buffer.concat([frame(0x1, 10, true), frame(0x1, 5, true)]);
    expect(t.scan(two.subarray(0, 8), false)).toBe(8);
    expect(t.atBoundary).toBe(false);
    // The rest of the first frame is 2 + 4 + 10 - 8 = 8 bytes: relayed, the second frame is not.
    expect(t.scan(two.subarray(8), true)).toBe(8);
    expect(t.atBoundary).toBe(true);
    expect(t.scan(two.subarray(16), true)).toBe(0);
  });

  it('notices a close frame', () => {
    const t = new FrameBoundaries();
    t.scan(frame(0x1, 3, false), false);
    expect(t.closeSeen).toBe(false);
    t.scan(closeFrame(1000, 'bye', false), false);
    expect(t.closeSeen).toBe(true);
    expect(t.atBoundary).toBe(true);
  });
});

describe('closeFrame', () => {
  it('writes code and reason, unmasked for clients', () => {
    const f = closeFrame(1001, 'going', false);
    expect([...f.subarray(0, 2)]).toEqual([0x88, 7]);
    expect(f.readUInt16BE(2)).toBe(1001);
    expect(f.subarray(4).toString()).toBe('going');
  });

  it('masks frames for upstreams (RFC 6455 §5.3)', () => {
    const f = closeFrame(1001, 'going', true);
    expect([...f.subarray(0, 2)]).toEqual([0x88, 0x80 | 7]);
    const mask = f.subarray(2, 6);
    const payload = Buffer.from(f.subarray(6).map((b, i) => b ^ (mask[i & 3] as number)));
    expect(payload.readUInt16BE(0)).toBe(1001);
    expect(payload.subarray(2).toString()).toBe('going');
  });

  it('keeps a control frame within 125 bytes', () => {
    const f = closeFrame(1001, 'x'.repeat(500), false);
    expect(f.length).toBe(2 + 125);
  });
});
