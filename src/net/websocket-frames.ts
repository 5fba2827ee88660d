/**
 * Just enough of RFC 6455 framing for a proxy that relays frames untouched: where one frame ends
 * (so the gateway can put its own close frame between two frames, never inside one), whether a
 * close frame went by, and how to write a close frame. Payloads are never parsed, unmasked or
 * copied: per frame the tracker reads its 2 to 14 header bytes and skips the payload by count.
 *
 * Why not terminate the protocol with `ws` on both sides: relaying frames keeps the handshake
 * end to end (Sec-WebSocket-Accept, the subprotocol and permessage-deflate are the client's and
 * the upstream's own, compressed frames are never inflated and deflated again), sets no message
 * size limit of its own, and costs a header parse per frame instead of a copy per message. The
 * gateway only needs frame awareness to close sockets itself (shutdown, timeouts), which this does.
 */
import { randomFillSync } from 'node:crypto';

/** Opcode of a close frame. */
const CLOSE_OPCODE = 0x8;
/** 1001: the endpoint is going away (server shutting down, timeouts). */
export const GOING_AWAY = 1001;
/** The longest close reason: a control frame payload is at most 125 bytes, 2 of them the code. */
const MAX_REASON_BYTES = 123;

/**
 * Follows the frames of one direction of a WebSocket connection, chunk by chunk. A frame is a
 * 2-byte header, an extended length (0, 2 or 8 bytes), a mask key when masked (4 bytes), then the
 * payload.
 */
export class FrameBoundaries {
  private readonly header = Buffer.alloc(14);
  /** Header bytes of the current frame read so far (0: at a frame boundary, or in its payload). */
  private have = 0;
  /** Header length of the current frame, known once its first 2 bytes are read. */
  private need = 2;
  /** Payload bytes of the current frame still to come. */
  private payloadLeft = 0;
  /** A close frame's header went by: this direction is closing. */
  closeSeen = false;

  /** True between two frames: a frame of the gateway's own can be written now. */
  get atBoundary(): boolean {
    return this.have === 0 && this.payloadLeft === 0;
  }

  /**
   * Follow `chunk`. Returns how many of its bytes belong to frames the caller should relay: all of
   * them, or with `stopAtBoundary` only those up to the first frame boundary (0 when already at one).
   */
  scan(chunk: Buffer, stopAtBoundary: boolean): number {
    if (stopAtBoundary && this.atBoundary) return 0;
    const length = chunk.length;
    let i = 0;
    while (i < length) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, length - i);
        this.payloadLeft -= take;
        i += take;
        if (stopAtBoundary && this.payloadLeft === 0) return i;
        continue;
      }
      this.header[this.have++] = chunk[i++] as number;
      if (this.have === 2) {
        const len7 = (this.header[1] as number) & 0x7f;
        const masked = ((this.header[1] as number) & 0x80) !== 0;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
        if (((this.header[0] as number) & 0x0f) === CLOSE_OPCODE) this.closeSeen = true;
      }
      if (this.have >= 2 && this.have === this.need) {
        this.payloadLeft = this.payloadLength();
        this.have = 0;
        this.need = 2;
        if (stopAtBoundary && this.payloadLeft === 0) return i;
      }
    }
    return i;
  }

  private payloadLength(): number {
    const h = this.header;
    const len7 = (h[1] as number) & 0x7f;
    if (len7 === 126) return h.readUInt16BE(2);
    // 2^53 bytes is beyond any real frame: a Number holds every length that can arrive.
    if (len7 === 127) return h.readUInt32BE(2) * 2 ** 32 + h.readUInt32BE(6);
    return len7;
  }
}

/**
 * A close frame with `code` and `reason` (cut to 123 bytes of whole characters). Frames a client sends are masked
 * (RFC 6455 §5.3): `masked` for the upstream side, unmasked for the client side.
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  let cut = reason;
  // Cut whole characters: a reason must stay valid UTF-8 (RFC 6455 §5.5.1).
  while (Buffer.byteLength(cut) > MAX_REASON_BYTES) cut = cut.slice(0, -1);
  const text = Buffer.from(cut, 'utf8');
  const payload = Buffer.alloc(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  const header = Buffer.from([0x80 | CLOSE_OPCODE, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([header, payload]);
  const mask = randomFillSync(Buffer.alloc(4));
  for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i & 3] as number);
  return Buffer.concat([header, mask, payload]);
}
