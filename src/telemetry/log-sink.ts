/**
 * Where log lines go: an asynchronous, batched, bounded writer on a file descriptor (stdout).
 *
 * pino's default destination writes every line with a synchronous write(2): one system call per
 * request, and a stdout that reads slowly (a busy log shipper, a terminal, a full pipe) stops the
 * event loop. Here lines are appended to a buffer and written in batches by libuv's thread pool,
 * one write in flight at a time (lines keep their order). When the sink falls behind, the buffer
 * grows up to `maxBufferBytes`; past it new lines are dropped and counted (`dropped`, exported as
 * `portcullis_log_lines_dropped_total`), so a stalled stdout costs log lines, never requests.
 *
 * A batch never splits a line and, unless one line alone is longer, stays within `batchBytes`:
 * 64 KiB for a process that has stdout to itself, PIPE_BUF (4096 bytes) for processes that share
 * one (cluster workers): writes that small are atomic on a pipe, so their lines never interleave.
 *
 * Not a library's: sonic-boom (pino.destination) has the buffer bound but flushes synchronously
 * at exit, which never returns when the sink is stalled; shutdown here waits a bounded time.
 */
import { write as fsWrite, writeSync } from 'node:fs';

/** Largest write that is atomic on a pipe (Linux PIPE_BUF). */
export const ATOMIC_WRITE_BYTES = 4096;
/** A write in flight for longer than this at exit means the sink is stalled, ms. */
const STALLED_MS = 1000;
/** Delay before retrying a write that the sink refused for now (EAGAIN), ms. */
const RETRY_MS = 20;

export interface LogSinkOptions {
  /** File descriptor written to. Default 1 (stdout). */
  fd?: number;
  /** Bytes held while the sink is slower than the log; past this, lines are dropped and counted. Default 4 MiB. */
  maxBufferBytes?: number;
  /** Largest write (whole lines; one longer line is written alone). Default 65536. */
  batchBytes?: number;
  /** Longest an access-log line (writeDeferred) waits for a fuller batch, ms. Default 20. */
  maxDelayMs?: number;
}

/** Lines encoded into one buffer of up to `batchBytes`: what one write sends. */
interface Chunk {
  buf: Buffer;
  /** Bytes filled. */
  used: number;
  /** Lines it holds (counted when dropped). */
  lines: number;
}

/** A pino destination (`write(line)`) that batches, bounds and never blocks; see the module comment. */
export class LogSink {
  /** Lines dropped because the buffer was full (or the sink is gone: EPIPE). */
  dropped = 0;
  private readonly fd: number;
  private readonly maxBufferBytes: number;
  private readonly maxDelayMs: number;
  private readonly batchBytes: number;
  /**
   * Lines waiting, encoded as they arrive into chunks of `batchBytes` (the last one is being
   * filled): a line's string is garbage at once instead of surviving young-generation collections
   * while it waits, and a batch is written without re-encoding.
   */
  private chunks: Chunk[] = [];
  /** A written chunk's buffer, reused for the next one. */
  private spare: Buffer | undefined = undefined;
  /** Bytes of `chunks` plus the batch in flight. */
  private bufferedBytes = 0;
  /** A write is in flight. */
  private writing = false;
  /** The chunk in flight. */
  private inFlight: Chunk | undefined = undefined;
  /** performance.now() when the write in flight was started. */
  private writeStartedAt = 0;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** A write is scheduled for the end of this event-loop turn (setImmediate). */
  private soon = false;
  /** A line of `write` (not `writeDeferred`) waits: the next batch goes out without waiting for the timer. */
  private prompt = false;
  /** The sink refused for good (EPIPE, EBADF): every further line is dropped. */
  private broken = false;
  /** Resolved whenever the buffer becomes empty with nothing in flight. */
  private idle: Array<(written: boolean) => void> = [];

  constructor(options: LogSinkOptions = {}) {
    this.fd = options.fd ?? 1;
    this.maxBufferBytes = options.maxBufferBytes ?? 4 * 1024 * 1024;
    this.maxDelayMs = options.maxDelayMs ?? 20;
    this.batchBytes = options.batchBytes ?? 65536;
  }

  /** Bytes held (waiting or being written): 0 once everything reached the sink. */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  /**
   * Queue one line (ending in `\n`), written at the end of this event-loop turn with whatever
   * else was logged in it: pino's lines (startup, reloads, warnings), which an operator (or a
   * test) reads as they happen. Returns false when it was dropped.
   */
  write(line: string): boolean {
    if (!this.queue(line)) return false;
    this.prompt = true;
    if (!this.writing && !this.soon) {
      this.soon = true;
      setImmediate(this.writeSoon);
    }
    return true;
  }

  /**
   * Queue one line that may wait up to `maxDelayMs` for a fuller batch: the access log, one line
   * per request. Returns false when it was dropped.
   */
  writeDeferred(line: string): boolean {
    if (!this.queue(line)) return false;
    if (!this.writing && this.timer === undefined && !this.soon) {
      this.timer = setTimeout(this.writeBatch, this.maxDelayMs);
      this.timer.unref();
    }
    return true;
  }

  private queue(line: string): boolean {
    const chunks = this.chunks;
    let chunk = chunks[chunks.length - 1];
    const room = chunk === undefined ? 0 : chunk.buf.length - chunk.used;
    // A UTF-16 unit is at most 3 bytes of UTF-8: the exact length is needed only near a chunk's end.
    const bytes = line.length * 3 <= room ? line.length : Buffer.byteLength(line);
    if (this.broken || this.bufferedBytes + bytes > this.maxBufferBytes) {
      this.dropped++;
      return false;
    }
    if (chunk === undefined || bytes > room) chunk = this.newChunk(bytes);
    const written = chunk.buf.write(line, chunk.used);
    if (this.bufferedBytes + written > this.maxBufferBytes) {
      // Non-ASCII text took more bytes than its length promised: the line is not kept.
      this.dropped++;
      return false;
    }
    chunk.used += written;
    chunk.lines++;
    this.bufferedBytes += written;
    if (!this.writing && chunks.length > 1) this.writeBatch();
    return true;
  }

  /** A new chunk at the end, for a line of `bytes` (one longer than a batch gets a chunk of its own). */
  private newChunk(bytes: number): Chunk {
    const last = this.chunks[this.chunks.length - 1];
    // An empty chunk (its line was dropped) never stays in front of a full one.
    if (last !== undefined && last.used === 0) {
      this.chunks.pop();
      if (last.buf.length === this.batchBytes) this.spare = last.buf;
    }
    let buf: Buffer;
    if (bytes > this.batchBytes) buf = Buffer.allocUnsafe(bytes);
    else if (this.spare !== undefined) {
      buf = this.spare;
      this.spare = undefined;
    } else buf = Buffer.allocUnsafe(this.batchBytes);
    const chunk: Chunk = { buf, used: 0, lines: 0 };
    this.chunks.push(chunk);
    return chunk;
  }

  private readonly writeSoon = () => {
    this.soon = false;
    this.writeBatch();
  };

  /**
   * Write everything buffered; resolves true once it reached the sink, false when that took
   * longer than `timeoutMs` (a stalled sink: what is left is lost at exit).
   */
  flush(timeoutMs: number): Promise<boolean> {
    if (this.broken) return Promise.resolve(false);
    if (this.bufferedBytes === 0) return Promise.resolve(true);
    if (!this.writing) this.writeBatch();
    return new Promise((resolve) => {
      const timeout = setTimeout(() => resolve(false), timeoutMs);
      this.idle.push((written) => {
        clearTimeout(timeout);
        resolve(written);
      });
    });
  }

  /**
   * Last resort at process exit (no event loop left): write what is buffered synchronously,
   * unless the write in flight has been waiting on the sink for over STALLED_MS (a stalled
   * sink: a synchronous write could wait forever).
   */
  flushSync(): void {
    if (this.broken || (this.writing && performance.now() - this.writeStartedAt > STALLED_MS)) return;
    this.clearTimer();
    try {
      while (this.chunks.length > 0) {
        const chunk = this.chunks[0] as Chunk;
        if (chunk.used > 0) writeSync(this.fd, chunk.buf, 0, chunk.used);
        this.chunks.shift();
        this.bufferedBytes -= chunk.used;
      }
    } catch {
      // EAGAIN on a non-blocking sink, EPIPE: nothing more can be done at exit.
    }
  }

  private clearTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private readonly writeBatch = (): void => {
    this.clearTimer();
    const chunk = this.chunks[0];
    if (this.writing || chunk === undefined || chunk.used === 0) return;
    this.chunks.shift();
    this.prompt = false;
    this.writing = true;
    this.writeStartedAt = performance.now();
    this.inFlight = chunk;
    this.send(chunk.buf.subarray(0, chunk.used));
  };

  private send(data: Buffer): void {
    fsWrite(this.fd, data, 0, data.length, null, (err, written) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' || code === 'EBUSY') {
          setTimeout(() => this.send(data), RETRY_MS).unref();
          return;
        }
        this.fail();
        return;
      }
      if (written < data.length) {
        // A partial write (a file on a full disk, a signal): the rest.
        this.send(data.subarray(written));
        return;
      }
      const chunk = this.inFlight as Chunk;
      this.inFlight = undefined;
      this.bufferedBytes -= chunk.used;
      if (chunk.buf.length === this.batchBytes) this.spare = chunk.buf;
      this.writing = false;
      this.next();
    });
  }

  /** After a write: the next batch now if a full one waits, else on the timer, else idle. */
  private next(): void {
    const first = this.chunks[0];
    if (first === undefined || first.used === 0) {
      const waiting = this.idle;
      this.idle = [];
      for (const resolve of waiting) resolve(true);
    } else if (this.chunks.length > 1 || this.idle.length > 0 || this.prompt) {
      this.writeBatch();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(this.writeBatch, this.maxDelayMs);
      this.timer.unref();
    }
  }

  /** The sink is gone (EPIPE, EBADF...): drop what is held and every later line. */
  private fail(): void {
    this.broken = true;
    this.writing = false;
    this.dropped += (this.inFlight?.lines ?? 0) + this.chunks.reduce((n, c) => n + c.lines, 0);
    this.inFlight = undefined;
    this.chunks = [];
    this.bufferedBytes = 0;
    const waiting = this.idle;
    this.idle = [];
    for (const resolve of waiting) resolve(false);
  }
}
