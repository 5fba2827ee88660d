/**
 * WebSocket proxying (RFC 6455 over HTTP/1.1). An upgrade request enters like any request: the
 * listener hands it to Fastify's routing with a response bound to its socket (gateway.ts), so
 * the whole lifecycle runs on it (canonical target, route match, every policy; a refusal is a
 * normal problem answer on the socket). The forwarder then sends it upstream as an upgrade on the
 * chosen upstream's pool (same balancer, sticky session and forwarding headers as any request);
 * an upstream that answers anything but 101 has that answer passed on. On 101 the two sockets are
 * joined by a Tunnel that relays frames untouched (see net/websocket-frames.ts for why).
 *
 * Over HTTP/2 (RFC 8441) the client sends an extended CONNECT (`:protocol websocket`): it is
 * routed as the GET it stands for, sent upstream as an HTTP/1.1 upgrade with a key of the
 * gateway's, answered 200 once the upstream said 101, and the stream carries the same frames.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ProblemError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { closeFrame, FrameBoundaries, GOING_AWAY } from '../net/websocket-frames.ts';
import type { RequestContext } from '../pipeline/types.ts';
import type { WebSocketSettings } from '../registry/types.ts';
import type { RouteEntry } from '../runtime.ts';
import { REQUEST_ID_HEADER, type RequestRecord } from '../telemetry/record.ts';
import { connectionTokens, DROP_RESPONSE, IDENTITY } from './forward.ts';

/** RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing into Sec-WebSocket-Accept. */
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** A Sec-WebSocket-Key: base64 of 16 bytes. */
const KEY = /^[A-Za-z0-9+/]{22}==$/;
/** Response headers of the upstream's 101 never passed on: the forwarder's hop-by-hop set, and its length. */
const DROP_101: ReadonlySet<string> = new Set([...DROP_RESPONSE, 'content-length']);
/** After the gateway's own close frames (or one peer's close), how long the other gets before its socket is destroyed. */
const CLOSE_LINGER_MS = 2_000;
/**
 * How long a close the gateway starts (idle, lifetime) may wait for a frame in progress to end
 * before the sockets are destroyed; at shutdown the grace period (limits.shutdownGraceMs) bounds it.
 */
const CLOSE_TIMEOUT_MS = 10_000;

/** Whether a request asks for a WebSocket (an `Upgrade` header naming `websocket`). */
export function wantsWebSocket(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return (
    req.method === 'GET' && typeof upgrade === 'string' && /(?:^|,)\s*websocket\s*(?:,|$)/i.test(upgrade)
  );
}

/** How an upgrade ended, for metrics and the close log line. */
export type TunnelEnd = 'client' | 'upstream' | 'idle-timeout' | 'lifetime' | 'shutdown' | 'error';

export interface WebSocketsOptions {
  logger: Logger;
  /** Drop the upstream's Server / X-Powered-By from the 101 (headers.hideUpstreamIdentity). */
  hideUpstreamIdentity: boolean;
  /** An upgrade succeeded (the 101 is out): the open-sockets gauge goes up. */
  opened(service: string): void;
  /** A tunnel closed: the gauge goes down. */
  closed(service: string): void;
}

/**
 * An upgrade request on its way through the lifecycle: the client's socket and early bytes,
 * until the forwarder reports the upstream's 101 (`upgraded`) or an answer is written.
 */
export class Upgrade {
  readonly socket: Duplex;
  /** Bytes the client sent after its request headers (early frames), relayed first. */
  readonly head: Buffer;
  /** An HTTP/2 extended CONNECT (RFC 8441): answered 200, the stream carries the frames. */
  readonly h2: boolean;
  /** The 101 (or h2 200) went out: the socket is the tunnel's. */
  done = false;
  /** The settings of the operation it reached (set by `refusal`). */
  settings: WebSocketSettings | undefined = undefined;
  service = '';
  private readonly hub: WebSockets;

  constructor(hub: WebSockets, socket: Duplex, head: Buffer, h2: boolean) {
    this.hub = hub;
    this.socket = socket;
    this.head = head;
    this.h2 = h2;
  }

  /**
   * Why the request may not be upgraded on `entry`, or undefined: WebSockets turned off for the
   * operation or service, a mock service, or a handshake the upstream could not accept either.
   */
  refusal(entry: RouteEntry, headers: IncomingHttpHeaders): ProblemError | undefined {
    const settings = entry.route.websocket ?? entry.service.settings.websocket;
    if (settings === false || entry.service.settings.mock) {
      return new ProblemError(
        'PC_WEBSOCKET_REFUSED',
        entry.service.settings.mock
          ? 'A mock service does not take WebSocket upgrades'
          : 'This operation does not take WebSocket upgrades (x-portcullis websocket: false)',
      );
    }
    const version = headers['sec-websocket-version'];
    if (version !== '13') {
      return new ProblemError('PC_WEBSOCKET_VERSION', undefined, {
        headers: { 'sec-websocket-version': '13' },
      });
    }
    const key = headers['sec-websocket-key'];
    if (typeof key !== 'string' || !KEY.test(key.trim())) {
      return new ProblemError('PC_WEBSOCKET_HANDSHAKE', 'Missing or malformed Sec-WebSocket-Key');
    }
    // The bytes after the headers are frames: a declared body would be read as frames upstream.
    if (headers['transfer-encoding'] !== undefined || (headers['content-length'] ?? '0') !== '0') {
      return new ProblemError('PC_WEBSOCKET_HANDSHAKE', 'An upgrade request carries no body');
    }
    this.settings = settings;
    this.service = entry.service.name;
    return undefined;
  }

  /**
   * The upstream answered 101 on `upstreamSocket`. Checks that its handshake answers the client's
   * (Accept from the client's key, a subprotocol and extensions the client offered), writes the
   * 101 with the policies' response headers, and joins the sockets. A handshake that does not
   * match is a 502 and the upstream socket is closed.
   */
  upgraded(
    res: ServerResponse,
    req: IncomingHttpHeaders,
    headers: IncomingHttpHeaders,
    upstreamSocket: Duplex,
    ctx: Pick<RequestContext, 'responseHeaders' | 'responseEdits'> | undefined,
    rec: RequestRecord | undefined,
  ): ProblemError | undefined {
    const mismatch = handshakeMismatch(req, headers);
    if (mismatch || res.destroyed || this.socket.destroyed) {
      upstreamSocket.destroy();
      return mismatch
        ? new ProblemError('PC_UPSTREAM_ERROR', `The upstream's WebSocket handshake is invalid: ${mismatch}`)
        : undefined;
    }
    const out: OutgoingHttpHeaders = {};
    const hide = this.hub.options.hideUpstreamIdentity;
    // As for any response: the fields the upstream's Connection names are hop-by-hop too.
    const listed = headers.connection ? connectionTokens(headers.connection) : undefined;
    for (const name in headers) {
      if (DROP_101.has(name) || listed?.has(name) || (hide && IDENTITY.has(name))) continue;
      out[name] = headers[name];
    }
    if (ctx) {
      for (const name in ctx.responseHeaders) out[name] = ctx.responseHeaders[name];
      for (const edit of ctx.responseEdits) edit(101, out);
    }
    if (rec) {
      out[REQUEST_ID_HEADER] = rec.id;
      rec.websocket = 'upgraded';
    }
    this.done = true;
    if (this.h2) {
      // RFC 8441 §5: a 2xx answers the CONNECT; no Accept (the key was the gateway's), no connection headers.
      delete out['sec-websocket-accept'];
      res.writeHead(200, out);
      // Logged, counted and traced now, like a 101: the stream stays open as the socket.
      rec?.observedNow();
    } else {
      out.connection = 'Upgrade';
      out.upgrade = 'websocket';
      res.writeHead(101, out);
      res.end();
    }
    this.hub.open(this, upstreamSocket, rec);
    return undefined;
  }
}

/** What is wrong with an upstream's 101 for this request, or undefined when it is consistent. */
function handshakeMismatch(req: IncomingHttpHeaders, res: IncomingHttpHeaders): string | undefined {
  const key = String(req['sec-websocket-key']).trim();
  const expected = createHash('sha1')
    .update(key + ACCEPT_GUID)
    .digest('base64');
  if (res['sec-websocket-accept'] !== expected) return 'Sec-WebSocket-Accept does not match the key';
  const protocol = res['sec-websocket-protocol'];
  if (protocol !== undefined) {
    const offered = tokens(req['sec-websocket-protocol']);
    if (!offered.includes(protocol.trim())) return `subprotocol "${protocol}" was not offered`;
  }
  const extensions = res['sec-websocket-extensions'];
  if (extensions !== undefined) {
    const offered = new Set(extensionNames(req['sec-websocket-extensions']));
    for (const name of extensionNames(extensions))
      if (!offered.has(name)) return `extension "${name}" was not offered`;
  }
  return undefined;
}

function tokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value.join(',') : value).split(',').map((t) => t.trim());
}

/** `permessage-deflate; client_max_window_bits, x-foo` → [permessage-deflate, x-foo]. */
function extensionNames(value: string | string[] | undefined): string[] {
  return tokens(value).map((t) => (t.split(';')[0] ?? '').trim().toLowerCase());
}

/**
 * The gateway's WebSockets: the open tunnels (for shutdown and the gauge). Tunnels hold nothing
 * of the configuration snapshot: a reload leaves them as they are.
 */
export class WebSockets {
  readonly options: WebSocketsOptions;
  private readonly tunnels = new Set<Tunnel>();
  private closing = false;
  private drained: (() => void) | undefined;

  constructor(options: WebSocketsOptions) {
    this.options = options;
  }

  /** Open tunnels now. */
  get size(): number {
    return this.tunnels.size;
  }

  /** Track an upgrade request from the moment it arrives: `socket` is the client's socket (HTTP/1.1) or stream (`h2`, RFC 8441). */
  begin(socket: Duplex, head: Buffer, h2: boolean): Upgrade {
    return new Upgrade(this, socket, head, h2);
  }

  open(upgrade: Upgrade, upstream: Duplex, rec: RequestRecord | undefined): void {
    const { logger, opened, closed } = this.options;
    const service = upgrade.service;
    const settings = upgrade.settings as WebSocketSettings;
    const tunnel = new Tunnel(upgrade.socket, upstream, upgrade.head, settings, (end, info) => {
      this.tunnels.delete(tunnel);
      if (this.tunnels.size === 0) this.drained?.();
      closed(service);
      logger.info(
        {
          reqId: rec?.id,
          service,
          route: rec?.template,
          upstream: rec?.upstream,
          end,
          durationMs: Math.round(performance.now() - info.start),
          bytesIn: info.bytesIn,
          bytesOut: info.bytesOut,
        },
        'websocket closed',
      );
    });
    this.tunnels.add(tunnel);
    opened(service);
    if (this.closing) tunnel.close('shutdown');
  }

  /**
   * Shutdown: every open socket gets a close frame 1001 both ways (at the next frame boundary).
   * Resolves once every tunnel has closed (bound it with `destroyAll`).
   */
  goingAway(): Promise<void> {
    this.closing = true;
    for (const t of this.tunnels) t.close('shutdown');
    if (this.tunnels.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.drained = resolve;
    });
  }

  /** The end of the grace period: destroy every socket still open, both sides. */
  destroyAll(): void {
    for (const t of this.tunnels) t.destroy();
  }
}

interface TunnelInfo {
  start: number;
  /** Bytes relayed client → upstream. */
  bytesIn: number;
  /** Bytes relayed upstream → client. */
  bytesOut: number;
}

/** One direction of a tunnel. */
interface Side {
  readonly from: Duplex;
  readonly to: Duplex;
  readonly frames: FrameBoundaries;
  /** Frames written `to` are masked (client → upstream). */
  readonly masked: boolean;
  /** Stop relaying at the next frame boundary and send `closing` instead. */
  stopping: boolean;
  /** The gateway's close frame went out: nothing more is relayed this way. */
  stopped: boolean;
}

/**
 * Two sockets of one WebSocket joined: frames relayed both ways with backpressure (a side that
 * cannot write pauses the other's reads), TCP half-closes passed on, and the gateway's own close
 * (1001) put between frames on idle timeout, lifetime and shutdown.
 */
class Tunnel {
  private readonly up: Side;
  private readonly down: Side;
  private readonly info: TunnelInfo = { start: performance.now(), bytesIn: 0, bytesOut: 0 };
  private readonly idle: NodeJS.Timeout;
  private readonly lifetime: NodeJS.Timeout;
  private end: TunnelEnd | undefined;
  /** The gateway is closing it (timeouts, shutdown). */
  private closing = false;
  private closeReason = '';
  private open = 2;
  private readonly onClosed: (end: TunnelEnd, info: TunnelInfo) => void;

  constructor(
    client: Duplex,
    upstream: Duplex,
    head: Buffer,
    settings: WebSocketSettings,
    onClosed: (end: TunnelEnd, info: TunnelInfo) => void,
  ) {
    this.onClosed = onClosed;
    this.up = side(client, upstream, true);
    this.down = side(upstream, client, false);
    this.idle = setTimeout(() => this.close('idle-timeout'), settings.idleTimeoutMs);
    this.lifetime = setTimeout(() => this.close('lifetime'), settings.maxLifetimeMs);
    for (const s of [client, upstream]) (s as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    if (head.length > 0) this.relay(this.up, head);
    this.wire(this.up, 'client');
    this.wire(this.down, 'upstream');
  }

  /** Close both ways with 1001 at the next frame boundaries (idempotent). */
  close(why: TunnelEnd): void {
    if (this.closing) return;
    this.closing = true;
    this.end ??= why;
    this.closeReason =
      why === 'shutdown'
        ? 'gateway shutting down'
        : why === 'lifetime'
          ? 'lifetime exceeded'
          : 'idle timeout';
    for (const s of [this.up, this.down]) {
      if (s.stopped) continue;
      // A direction whose peer already sent its close frame needs none from the gateway.
      if (s.frames.closeSeen && s.frames.atBoundary) {
        s.stopped = true;
        continue;
      }
      s.stopping = true;
      if (s.frames.atBoundary) this.sendClose(s);
    }
    this.destroyIn(CLOSE_TIMEOUT_MS);
    this.endIfStopped();
  }

  /** Destroy both sockets now. */
  destroy(): void {
    this.end ??= 'shutdown';
    this.up.from.destroy();
    this.down.from.destroy();
  }

  private wire(s: Side, name: 'client' | 'upstream'): void {
    const { from, to } = s;
    from.on('data', (chunk: Buffer) => this.relay(s, chunk));
    from.on('end', () => {
      this.end ??= name;
      if (!to.destroyed) to.end();
    });
    from.on('error', () => {
      this.end ??= 'error';
      from.destroy();
      to.destroy();
    });
    from.on('close', () => {
      this.end ??= name;
      if (!to.destroyed) {
        to.end();
        this.destroyIn(CLOSE_LINGER_MS);
      }
      if (--this.open === 0) {
        clearTimeout(this.idle);
        clearTimeout(this.lifetime);
        clearTimeout(this.destroyTimer);
        this.onClosed(this.end, this.info);
      }
    });
    from.resume();
  }

  private relay(s: Side, chunk: Buffer): void {
    if (s.stopped) return;
    this.idle.refresh();
    let out = chunk;
    if (s.stopping) {
      const n = s.frames.scan(chunk, true);
      out = chunk.subarray(0, n);
    } else s.frames.scan(chunk, false);
    // Who ended the socket: whoever sent the first close frame (not who closed TCP first).
    if (this.end === undefined && s.frames.closeSeen) this.end = s.masked ? 'client' : 'upstream';
    if (out.length > 0) {
      if (s.masked) this.info.bytesIn += out.length;
      else this.info.bytesOut += out.length;
      if (!s.to.write(out) && !s.from.isPaused()) {
        s.from.pause();
        s.to.once('drain', () => s.from.resume());
      }
    }
    if (s.stopping && s.frames.atBoundary) this.sendClose(s);
  }

  private sendClose(s: Side): void {
    s.stopping = false;
    s.stopped = true;
    if (!s.to.destroyed && s.to.writable) s.to.write(closeFrame(GOING_AWAY, this.closeReason, s.masked));
    this.endIfStopped();
  }

  /** The other way is relayed until it stops too; once both have, end the sockets. */
  private endIfStopped(): void {
    if (!this.up.stopped || !this.down.stopped) return;
    this.up.to.end();
    this.down.to.end();
    this.destroyIn(CLOSE_LINGER_MS);
  }

  private deadline = Number.POSITIVE_INFINITY;
  private destroyTimer: NodeJS.Timeout | undefined;
  /** Destroy both sockets `ms` from now, unless an earlier such deadline is already set (a peer that never closes). */
  private destroyIn(ms: number): void {
    const at = performance.now() + ms;
    if (at >= this.deadline) return;
    this.deadline = at;
    clearTimeout(this.destroyTimer);
    this.destroyTimer = setTimeout(() => this.destroy(), ms);
    this.destroyTimer.unref();
  }
}

function side(from: Duplex, to: Duplex, masked: boolean): Side {
  return { from, to, frames: new FrameBoundaries(), masked, stopping: false, stopped: false };
}
