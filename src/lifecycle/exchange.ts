import type { ServerResponse } from 'node:http';
import type { RequestTarget } from '../net/target.ts';
import type { GatewayReply, GatewayRequest, RequestContext } from '../pipeline/types.ts';
import type { RouteMatch } from '../registry/index.ts';
import type { RouteEntry, Snapshot } from '../runtime.ts';
import type { RequestRecord } from '../telemetry/record.ts';
import type { Forwarding } from '../upstream/forward.ts';
import type { Upgrade } from '../upstream/websocket.ts';

/**
 * One request's whole life in one object of fixed shape, created where it enters (gateway.ts) and
 * passed to every step (handle.ts) and to the one module that writes answers (answer.ts):
 *
 * - `snapshot`: the configuration it is served under, read once (a reload mid-request changes nothing);
 * - `target`: the canonical request target (net/target.ts), the only path and query anything reads;
 * - `match` / `entry`: the route it resolved to and what that route does;
 * - `ctx`: the policy state, on routes with policies;
 * - `rec`: what telemetry learns (metrics, access log, span).
 *
 * Every field exists from the start (undefined until known), so every exchange has one hidden class.
 */
export class Exchange implements Forwarding {
  readonly req: GatewayRequest;
  readonly reply: GatewayReply;
  readonly rec: RequestRecord;
  readonly snapshot: Snapshot | null;
  /** The canonical target; undefined until parsed, and for a target that was rejected. */
  target: RequestTarget = NO_TARGET;
  match: RouteMatch | null = null;
  entry: RouteEntry | undefined = undefined;
  /** Policy state, on routes with policies only. */
  ctx: RequestContext | undefined = undefined;
  /** A CORS preflight for an operation whose OPTIONS the spec does not declare. */
  preflight = false;
  /** A WebSocket upgrade request (HTTP/1.1 `Upgrade: websocket`): its socket, until upgraded or answered. */
  upgrade: Upgrade | undefined = undefined;

  constructor(req: GatewayRequest, reply: GatewayReply, rec: RequestRecord, snapshot: Snapshot | null) {
    this.req = req;
    this.reply = reply;
    this.rec = rec;
    this.snapshot = snapshot;
  }

  /** The raw client response (HTTP/2 compat responses have the same surface). */
  get res(): ServerResponse {
    return this.reply.raw;
  }
}

/** The target of an exchange whose target was not parsed (or was rejected): `instance` stays empty. */
export const NO_TARGET: RequestTarget = Object.freeze({ path: '', query: '', semicolon: false });
