/**
 * Per-request observation: the request id, then — once the response closes — the metrics, the
 * access log line and the end of the SERVER span. The end is taken from the raw response's
 * 'close' event because forwarded replies are hijacked (nothing else sees every answer end).
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../logger.ts';
import type { CidrMatcher } from '../net/cidr.ts';
import { createAccessLog } from './access-log.ts';
import { PooledUuids } from './ids.ts';
import type { Metrics } from './metrics.ts';
import { REQUEST_ID_HEADER, RequestRecord } from './record.ts';
import type { RequestTracer } from './types.ts';

/** An X-Request-Id a trusted peer may hand us: short, printable, nothing a log line could be broken by. */
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
/** Status logged and counted when the client went away before a response was complete (nginx's). */
export const CLIENT_CLOSED = 499;

/** What the observer needs from a request (lifecycle/wire.ts; a FastifyRequest fits too). */
export interface ObservedRequest {
  method: string;
  headers: IncomingHttpHeaders;
  /** Client address after trustProxy. */
  ip: string;
  raw: {
    url?: string;
    httpVersion: string;
    socket: { remoteAddress?: string; encrypted?: boolean } | TLSSocket;
  };
}

/** What the observer needs from a reply (lifecycle/wire.ts; a FastifyReply fits too). */
export interface ObservedReply {
  raw: ServerResponse;
  /** Headers of the answers the reply writes itself (problems, mocks) are only readable here. */
  getHeader(name: string): unknown;
}

export interface ObserverOptions {
  logger: Logger;
  metrics: Metrics;
  /** Present only when tracing is on. */
  tracer?: RequestTracer;
  /** Peers whose X-Request-Id is believed (gateway.yaml trustProxy). */
  trustProxy: CidrMatcher;
  /** Write one access-log line per request (telemetry.accessLog). Default true. */
  accessLog?: boolean;
  /** Share of successful requests logged (telemetry.accessLog.sample). Default 1. */
  accessLogSample?: number;
}

/** Observes requests; `begin` once per request, before anything can answer it. */
export interface Observer {
  /**
   * Start observing: picks the request id (the caller puts it on the response), starts the
   * SERVER span when tracing is on, and arranges the end-of-request accounting.
   */
  begin(req: ObservedRequest, reply: ObservedReply, path: string): RequestRecord;
}

export function createObserver(opts: ObserverOptions): Observer {
  const uuids = new PooledUuids();
  const { logger, metrics, tracer, trustProxy } = opts;
  const accessLog =
    opts.accessLog === false
      ? undefined
      : createAccessLog(logger, {
          sample: opts.accessLogSample,
          traceId: tracer ? (rec) => (rec.span ? tracer.traceId(rec.span) : undefined) : undefined,
        });

  const finish = (rec: RequestRecord, reply: ObservedReply) => {
    const res = reply.raw;
    const end = performance.now();
    const ms = end - rec.start;
    // writableEnded, not writableFinished: HTTP/2 compat responses have only the former.
    // An upgraded HTTP/2 WebSocket is observed when its 200 is out; its stream stays open (RFC 8441).
    const complete = res.writableEnded || rec.websocket === 'upgraded';
    const status = complete || res.headersSent ? res.statusCode : CLIENT_CLOSED;
    metrics.requestDone(rec, status, ms / 1000);
    if (rec.websocket !== 'no') metrics.websocketUpgrade(rec, status);
    if (accessLog !== undefined) {
      let bytes = rec.bytes;
      // The reply wrote the answer itself (a problem, a mock): its length is only in its headers.
      if (bytes === 0 && rec.attempts === 0 && rec.method !== 'HEAD')
        bytes = Number(reply.getHeader('content-length') ?? 0) || 0;
      accessLog(rec, status, bytes, ms, !complete);
    }
    if (rec.span && tracer) tracer.endServer(rec.span, rec, status, end);
  };

  return {
    begin(req, reply, path) {
      const sent = req.headers[REQUEST_ID_HEADER];
      const id =
        typeof sent === 'string' && REQUEST_ID.test(sent) && trustProxy(req.raw.socket.remoteAddress)
          ? sent
          : uuids.take();
      const rec = new RequestRecord(id, req.method, path, req.ip, metrics, tracer);
      if (tracer) {
        rec.span = tracer.startServer(
          {
            start: rec.start,
            method: req.method,
            path,
            scheme: (req.raw.socket as TLSSocket).encrypted ? 'https' : 'http',
            clientIp: req.ip,
            host: req.headers.host ?? (req.headers[':authority'] as string | undefined),
            userAgent: req.headers['user-agent'],
            httpVersion: req.raw.httpVersion,
            requestId: id,
          },
          req.headers,
        );
      }
      const end = () => {
        if (rec.observed) return;
        rec.observed = true;
        finish(rec, reply);
      };
      // `on`, not `once`: a response emits 'close' once, and once() would wrap and remove the listener per request.
      reply.raw.on('close', end);
      rec.observedNow = end;
      return rec;
    },
  };
}
