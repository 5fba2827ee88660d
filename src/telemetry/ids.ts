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
