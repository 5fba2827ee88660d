/**
 * Trace and span ids for the gateway's spans: random, from the operating system's CSPRNG, drawn
 * a few kilobytes at a time and hex-encoded once per draw, so an id is a substring. (The SDK's
 * RandomIdGenerator draws Math.random per id; this is cheaper and not guessable.)
 */
import { randomFillSync } from 'node:crypto';
import type { IdGenerator } from '@opentelemetry/sdk-trace-base';

/** Random bytes per draw: ids for about 128 requests. */
const POOL_BYTES = 4096;
/** W3C: an all-zero id is invalid. */
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

export class PooledIdGenerator implements IdGenerator {
  private readonly pool = Buffer.allocUnsafe(POOL_BYTES);
  private hex = '';
  private pos = 0;

  generateTraceId(): string {
    const id = this.take(32);
    return id === ZERO_TRACE_ID ? this.generateTraceId() : id;
  }

  generateSpanId(): string {
    const id = this.take(16);
    return id === ZERO_SPAN_ID ? this.generateSpanId() : id;
  }

  private take(digits: number): string {
    if (this.pos + digits > this.hex.length) {
      this.hex = randomFillSync(this.pool).toString('hex');
      this.pos = 0;
    }
    const id = this.hex.substring(this.pos, this.pos + digits);
    this.pos += digits;
    return id;
  }
}

/** UUIDs per draw of random bytes (16 bytes each). */
const UUIDS_PER_DRAW = 128;
/** `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`: 36 characters. */
const UUID_CHARS = 36;
const HEX = '0123456789abcdef';

/**
 * Random (version 4, RFC 9562 §5.4) UUIDs for request ids, from the operating system's CSPRNG
 * like `crypto.randomUUID()`, but formatted 128 at a time into one string, so an id is one
 * substring of it. `randomUUID()` builds each id from 20 hex pieces: about 570 bytes of garbage per
 * request in a heap sample of the gateway, against one 36-character slice here.
 */
export class PooledUuids {
  private readonly bytes = Buffer.allocUnsafe(16 * UUIDS_PER_DRAW);
  private readonly text = Buffer.allocUnsafe(UUID_CHARS * UUIDS_PER_DRAW);
  private all = '';
  private next = UUIDS_PER_DRAW;

  take(): string {
    if (this.next === UUIDS_PER_DRAW) this.draw();
    const at = this.next++ * UUID_CHARS;
    return this.all.slice(at, at + UUID_CHARS);
  }

  private draw(): void {
    const { bytes, text } = this;
    randomFillSync(bytes);
    let t = 0;
    for (let i = 0; i < bytes.length; i++) {
      let b = bytes[i] as number;
      const k = i & 15;
      // RFC 9562: version 4 in the high digit of byte 6, variant 10 in the high bits of byte 8.
      if (k === 6) b = (b & 0x0f) | 0x40;
      else if (k === 8) b = (b & 0x3f) | 0x80;
      if (k === 4 || k === 6 || k === 8 || k === 10) text[t++] = 0x2d; // '-'
      text[t++] = HEX.charCodeAt(b >> 4);
      text[t++] = HEX.charCodeAt(b & 15);
    }
    this.all = text.toString('latin1', 0, t);
    this.next = 0;
  }
}
