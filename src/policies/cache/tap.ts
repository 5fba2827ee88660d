/**
 * The response the forwarder writes to when the cache forwards a request: it stands in for the
 * client response (the same writeHead / write / end / drain / close surface the forwarder uses) and
 * hands the upstream's answer to the cache, which decides per answer whether its body streams on to
 * the client as it comes (tee'd into the store up to a size), is only collected (a 304 that
 * refreshes a stored response, an error replaced by a stale one), or is dropped.
 *
 * Writes to the client go through `ClientSink` (lifecycle/answer.ts), never from here.
 */
import { EventEmitter } from 'node:events';
import type { OutgoingHttpHeaders } from 'node:http';

/** What happens to the body of the answer whose head just arrived. */
export type TapMode = 'stream' | 'collect' | 'discard';

/** Where the client's bytes go (lifecycle/answer.ts builds it over the raw response). */
export interface ClientSink {
  /** Body bytes; false: wait for `onDrain`. */
  write(chunk: Buffer): boolean;
  onDrain(fn: () => void): void;
  end(): void;
  /** Cut the client connection (the upstream failed after the head was sent). */
  destroy(err?: Error): void;
  /** Called once when the client goes away before the answer ended. */
  onClose(fn: () => void): void;
}

export interface TapHandler {
  /**
   * The head of the answer (the upstream's, or the forwarder's own problem for a failed upstream).
   * With `stream`, the handler has written the client's head and returns its sink.
   */
  head(
    status: number,
    headers: OutgoingHttpHeaders,
  ): { mode: TapMode; sink?: ClientSink; hold?: Promise<unknown> };
  /** The answer ended: its body when collected (or tee'd) and within `maxBytes`, else undefined. */
  end(body: Buffer | undefined): void;
  /** The answer failed before its end (upstream reset, client gone). */
  abort(): void;
}

/** A stand-in client response for the forwarder (see the module comment). */
export class Tap extends EventEmitter {
  headersSent = false;
  destroyed = false;
  writableEnded = false;
  shouldKeepAlive = true;
  statusCode = 0;
  private mode: TapMode = 'discard';
  private sink: ClientSink | undefined;
  private chunks: Buffer[] | undefined = [];
  private size = 0;
  private held: Buffer[] | undefined;
  private holding = false;
  private endWhenReleased = false;
  private readonly handler: TapHandler;
  private readonly maxBytes: number;
  private readonly keep: boolean;

  /**
   * `keep`: collect the body of a streamed answer too (to store it), up to `maxBytes`.
   * `client`: the client sink's close aborts the upstream exchange.
   */
  constructor(handler: TapHandler, maxBytes: number, keep: boolean) {
    super();
    this.handler = handler;
    this.maxBytes = maxBytes;
    this.keep = keep;
  }

  /** The client went away: the forwarder aborts its upstream request. */
  clientClosed(): void {
    if (this.writableEnded || this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
    this.handler.abort();
  }

  writeHead(status: number, headers: OutgoingHttpHeaders): this {
    this.headersSent = true;
    this.statusCode = status;
    const { mode, sink, hold } = this.handler.head(status, headers);
    this.mode = mode;
    this.sink = sink;
    if (mode === 'discard' || (mode === 'stream' && !this.keep)) this.chunks = undefined;
    if (hold) {
      this.holding = true;
      this.held = [];
      const release = () => {
        this.holding = false;
        const queued = this.held ?? [];
        this.held = undefined;
        for (const c of queued) this.sink?.write(c);
        if (this.endWhenReleased) this.finish();
        else this.emit('drain');
      };
      hold.then(release, release);
    }
    return this;
  }

  write(chunk: Buffer): boolean {
    if (this.chunks) {
      this.size += chunk.length;
      if (this.size > this.maxBytes) this.chunks = undefined;
      else this.chunks.push(chunk);
    }
    if (this.mode !== 'stream' || !this.sink) return true;
    if (this.holding) {
      this.held?.push(chunk);
      return false;
    }
    return this.sink.write(chunk);
  }

  override once(event: string | symbol, fn: (...args: unknown[]) => void): this {
    // The forwarder waits for 'drain' after a false write: the client's drain, or the hold's end.
    if (event === 'drain' && this.sink && !this.holding) {
      this.sink.onDrain(fn as () => void);
      return this;
    }
    return super.once(event, fn);
  }

  end(chunk?: Buffer | string): this {
    if (chunk !== undefined) this.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    this.writableEnded = true;
    if (this.holding) this.endWhenReleased = true;
    else this.finish();
    return this;
  }

  destroy(_err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.chunks = undefined;
    if (this.mode === 'stream') this.sink?.destroy();
    this.handler.abort();
    this.emit('close');
    return this;
  }

  private finish(): void {
    if (this.mode === 'stream') this.sink?.end();
    const body = this.chunks ? Buffer.concat(this.chunks, this.size) : undefined;
    this.chunks = undefined;
    this.handler.end(body);
    this.emit('close');
  }
}
