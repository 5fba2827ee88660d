/**
 * The public listener's request and reply: what Fastify's Request and Reply gave the lifecycle,
 * without its router, hooks and content-type parsers in the request path. Fastify still owns the
 * listener (sockets, HTTP/2, TLS, server timeouts, graceful close); every request on it comes here
 * first (gateway.ts `dispatch`). Measured side by side with `npm run bench` (bench/README.md):
 * without Fastify's routing and its Request/Reply objects, 49.8 → 46.1 CPU µs a proxied request.
 *
 * Semantics kept from Fastify 5 (with `trustProxy` as a function): `ip` is the first address,
 * walking X-Forwarded-For back from the peer, that is not trusted (@fastify/proxy-addr);
 * `protocol` believes X-Forwarded-Proto from a trusted peer only; `send` writes strings, Buffers
 * and streams with the same default Content-Type and Content-Length, none on 1xx/204 answers,
 * and HEAD answers carry the headers of the GET (Node drops their body).
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { pipeline, type Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import proxyAddr from '@fastify/proxy-addr';
import { parse as parseQuery } from 'fast-querystring';
import type { CidrMatcher } from '../net/cidr.ts';
import type { StageFailureLog } from '../pipeline/response.ts';
import type { GatewayReply, GatewayRequest } from '../pipeline/types.ts';

/** What the trust function of one listener reads, swapped on a reload (gateway.yaml trustProxy). */
export interface Trust {
  trust: CidrMatcher;
}

export class PublicRequest implements GatewayRequest {
  readonly raw: IncomingMessage;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly log: StageFailureLog;
  readonly #live: Trust;
  #ip: string | undefined = undefined;
  #query: Record<string, unknown> | undefined = undefined;

  constructor(raw: IncomingMessage | Http2ServerRequest, live: Trust, log: StageFailureLog) {
    // An HTTP/2 compat request has the surface the lifecycle reads (method, url, headers, socket).
    this.raw = raw as IncomingMessage;
    this.method = raw.method ?? 'GET';
    this.url = raw.url ?? '/';
    this.headers = raw.headers;
    this.#live = live;
    this.log = log;
  }

  /** The client address after trustProxy, computed once (Fastify recomputed it on every read). */
  get ip(): string {
    if (this.#ip === undefined) {
      const trust = this.#live.trust;
      const peer = this.raw.socket?.remoteAddress ?? '';
      // Nothing to walk unless the peer itself is trusted.
      if (!trust(peer) || this.headers['x-forwarded-for'] === undefined) this.#ip = peer;
      else {
        const all = proxyAddr.all(this.raw, (address: string) => trust(address));
        this.#ip = all[all.length - 1] ?? peer;
      }
    }
    return this.#ip;
  }

  get protocol(): string {
    const socket = this.raw.socket as TLSSocket | undefined;
    const forwarded = this.headers['x-forwarded-proto'];
    if (forwarded && socket && this.#live.trust(socket.remoteAddress ?? '')) {
      const value = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
      // The nearest proxy's entry; a scheme is case-insensitive (RFC 3986 §3.1).
      return value
        .slice(value.lastIndexOf(',') + 1)
        .trim()
        .toLowerCase();
    }
    return socket?.encrypted ? 'https' : 'http';
  }

  /** The raw query string's parameters, as Fastify's default parser gave them. */
  get query(): Record<string, unknown> {
    if (this.#query === undefined) {
      const q = this.url.indexOf('?');
      this.#query = q === -1 ? {} : (parseQuery(this.url.slice(q + 1)) as Record<string, unknown>);
    }
    return this.#query;
  }
}

/** Content-Type of a payload sent without one (Fastify's defaults). */
const TEXT = 'text/plain; charset=utf-8';
const BINARY = 'application/octet-stream';
const JSON_TYPE = 'application/json; charset=utf-8';

export class PublicReply implements GatewayReply {
  readonly raw: ServerResponse;
  #status = 200;
  #headers: OutgoingHttpHeaders = {};
  #hijacked = false;

  constructor(raw: ServerResponse | Http2ServerResponse) {
    // An HTTP/2 compat response has the surface written here (writeHead, end, headersSent).
    this.raw = raw as ServerResponse;
  }

  get sent(): boolean {
    return this.#hijacked || this.raw.writableEnded;
  }

  get statusCode(): number {
    return this.#status;
  }

  code(status: number): this {
    this.#status = status;
    return this;
  }

  header(name: string, value: unknown = ''): this {
    const key = name.toLowerCase();
    const headers = this.#headers;
    const existing = headers[key];
    if (key === 'set-cookie' && existing !== undefined) {
      const list = Array.isArray(existing) ? existing : [String(existing)];
      if (Array.isArray(value)) list.push(...value.map(String));
      else list.push(String(value));
      headers[key] = list;
    } else if (Array.isArray(value)) headers[key] = value.map(String);
    else headers[key] = value as string | number;
    return this;
  }

  headers(values: object): this {
    for (const [name, value] of Object.entries(values)) if (value !== undefined) this.header(name, value);
    return this;
  }

  getHeader(name: string): unknown {
    return this.#headers[name.toLowerCase()] ?? this.raw.getHeader(name);
  }

  hijack(): this {
    this.#hijacked = true;
    return this;
  }

  redirect(url: string, status: number): this {
    return this.header('location', url).code(status).send();
  }

  send(payload?: unknown): this {
    if (this.sent || this.raw.headersSent) return this;
    const res = this.raw;
    const headers = this.#headers;
    const status = this.#status;
    if (payload === undefined || payload === null) {
      // RFC 9110 §8.6: no Content-Length on 1xx, 204 and 304 answers; HEAD keeps what was set.
      if (status >= 200 && status !== 204 && status !== 304 && res.req?.method !== 'HEAD')
        headers['content-length'] = '0';
      res.writeHead(status, headers);
      res.end();
      return this;
    }
    if (status < 200 || status === 204) {
      delete headers['content-type'];
      delete headers['content-length'];
      res.writeHead(status, headers);
      res.end();
      const stream = payload as Partial<Readable>;
      if (typeof stream.resume === 'function') {
        stream.on?.('error', () => {});
        stream.resume();
      }
      return this;
    }
    if (typeof (payload as Partial<Readable>).pipe === 'function') {
      res.writeHead(status, headers);
      // A failing source ends the response (cut short: its headers are out); a client gone ends the source.
      pipeline(payload as Readable, res, () => {});
      return this;
    }
    let body: string | Buffer;
    if (typeof payload === 'string') {
      body = payload;
      headers['content-type'] ??= TEXT;
    } else if (Buffer.isBuffer(payload)) {
      body = payload;
      headers['content-type'] ??= BINARY;
    } else {
      body = JSON.stringify(payload);
      headers['content-type'] ??= JSON_TYPE;
    }
    const length = Buffer.byteLength(body);
    // A HEAD answer may carry the length its GET would have (set by the caller).
    if (headers['content-length'] === undefined || res.req?.method !== 'HEAD')
      headers['content-length'] = String(length);
    res.writeHead(status, headers);
    res.end(body);
    return this;
  }
}
