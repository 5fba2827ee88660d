/**
 * The life of a request on the public listener, top to bottom:
 *
 * 1. canonical target (net/target.ts): decoded once; an ambiguous target is a 400 here, before
 *    anything else reads it;
 * 2. route match on the canonical path (a CORS preflight may match the operation it asks about);
 *    no route: a pass-through service forwards it, else 404/405;
 * 3. the route's policy chain (pipeline/chain.ts), in phase order; a rejection is a problem;
 * 4. the answer (answer.ts): a policy's own answer, a mock, or the forwarder.
 *
 * Fastify stays the listener: it owns the sockets (HTTP/1.1, HTTP/2, TLS), the server timeouts
 * and the graceful close. Every request on it reaches `handle` through the gateway's `dispatch`
 * (gateway.ts), with the gateway's own request and reply (wire.ts): `request.ip` after trustProxy,
 * answers written once. Nothing of Fastify's router, hooks or parsers is in the request path.
 */
import { ProblemError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { canonicalTarget, targetProblem } from '../net/target.ts';
import { createContext, runChainThen } from '../pipeline/chain.ts';
import { PREFLIGHT_PHASES } from '../pipeline/types.ts';
import { cacheOfServiceFor } from '../policies/cache/cache.ts';
import { isUnsafe } from '../policies/cache/serve.ts';
import { toProblem } from '../problem.ts';
import type { Route } from '../registry/types.ts';
import { passThroughEntry, type RouteEntry } from '../runtime.ts';
import type { Forward } from '../upstream/forward.ts';
import {
  answerCached,
  answerDirect,
  answerForward,
  answerMock,
  answerNotRouted,
  answerProblem,
  answerRedirect,
} from './answer.ts';
import type { Exchange } from './exchange.ts';

/** What the lifecycle needs from the gateway; built once per public listener. */
export interface Lifecycle {
  forward: Forward;
  logger: Logger;
}

/** Serve one request. Never throws: every failure becomes an answer. */
export function handle(ex: Exchange, lc: Lifecycle): undefined {
  const { snapshot, req, rec } = ex;
  if (!snapshot) return answerProblem(ex, new ProblemError('PC_SHUTTING_DOWN', 'Not ready'));
  try {
    ex.target = canonicalTarget(req.raw.url ?? '/');
  } catch (err) {
    return answerProblem(ex, toProblem(err));
  }
  const target = ex.target;
  const path = target.path;
  const table = snapshot.table;
  let match = table.find(req.method, path);
  if (!match && req.method === 'OPTIONS') {
    // A CORS preflight for an operation whose OPTIONS the spec does not declare: its cors policy answers.
    const wanted = req.headers['access-control-request-method'];
    if (typeof wanted === 'string' && req.headers.origin) {
      match = table.find(wanted.toUpperCase(), path);
      ex.preflight = match !== null;
    }
  }
  let entry: RouteEntry | undefined;
  if (match) {
    if (target.semicolon && !declaresPathParameters(match.route)) {
      return answerProblem(ex, targetProblem('path-parameter'));
    }
    ex.match = match;
    entry = snapshot.entries.get(match.route);
    if (!entry) return answerProblem(ex, new ProblemError('PC_INTERNAL'));
    rec.matched(entry.route, entry.service.settings.basePath);
  } else {
    // A path the spec does not declare: 404/405, unless its service passes such paths through,
    // with the policies of the rules that select the whole service (runtime.ts passThroughRoute).
    const pass = table.passThrough(path);
    entry = pass ? passThroughEntry(snapshot, pass, req.method, path) : undefined;
    if (!entry) return answerNotRouted(ex, table.allowedMethods(path));
    if (target.semicolon) return answerProblem(ex, targetProblem('path-parameter'));
    rec.passThrough = entry.service.name;
  }
  ex.entry = entry;
  if (ex.upgrade) {
    // Refused before the chain: the operation takes no WebSockets, or no upstream could accept this handshake.
    const refused = ex.upgrade.refusal(entry, req.headers);
    if (refused) return answerProblem(ex, refused);
  }
  if (entry.chain.hooks.length === 0) {
    if (ex.preflight) return answerNotRouted(ex, table.allowedMethods(path));
    return respond(ex, lc);
  }
  const ctx = createContext(req, ex.reply, entry.route, entry.service, match?.params ?? NO_PARAMS, target);
  ex.ctx = ctx;
  rec.ctx = ctx;
  rec.chain = entry.chain;
  // A chain whose hooks all returned synchronously is finished without any promise (see runChain).
  runChainThen(
    entry.chain,
    ctx,
    ex.preflight ? PREFLIGHT_PHASES : undefined,
    () => afterChain(ex, lc),
    (err: unknown) => policyFailed(ex, lc, err),
  );
}

/** Serve one request on the plain-HTTP listener of an HTTPS gateway: 308 to HTTPS. */
export function redirect(ex: Exchange, httpsPort: number): undefined {
  try {
    ex.target = canonicalTarget(ex.req.raw.url ?? '/');
  } catch (err) {
    return answerProblem(ex, toProblem(err));
  }
  const authority = ex.req.headers.host ?? 'localhost';
  // The Host header is the client's: only a plain host[:port] may shape the Location.
  if (!HOST_HEADER.test(authority)) {
    return answerProblem(ex, new ProblemError('PC_BAD_REQUEST', 'Invalid Host header'));
  }
  const host = authority.replace(/:\d+$/, '');
  const { path, query } = ex.target;
  const port = httpsPort === 443 ? '' : `:${httpsPort}`;
  answerRedirect(ex, `https://${host}${port}${path}${query === '' ? '' : `?${query}`}`);
}

/** A Host header fit for a redirect Location: DNS name, IPv4 or [IPv6], optional port. */
const HOST_HEADER = /^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::\d{1,5})?$/i;

function afterChain(ex: Exchange, lc: Lifecycle): undefined {
  try {
    const ctx = ex.ctx;
    if (ctx?.answer) return answerDirect(ex, ctx.answer.status, ctx.answer.headers, ctx.answer.body);
    if (ctx?.answered) return;
    if (ex.preflight) return answerNotRouted(ex, ex.snapshot?.table.allowedMethods(ex.target.path) ?? []);
    respond(ex, lc);
  } catch (err) {
    policyFailed(ex, lc, err);
  }
}

function policyFailed(ex: Exchange, lc: Lifecycle, err: unknown): undefined {
  const problem = toProblem(err);
  // A withheld service's 503 is the configuration's doing, logged when it was rejected, not per request.
  if (problem.status >= 500 && problem.code !== 'PC_SERVICE_WITHHELD')
    lc.logger.error({ err, code: problem.code, reqId: ex.rec.id }, 'policy failed');
  answerProblem(ex, problem);
}

/** Answer from the mock responder or forward to an upstream. */
function respond(ex: Exchange, lc: Lifecycle): undefined {
  const entry = ex.entry;
  if (entry?.mock) return answerMock(ex);
  if (!entry?.target) return answerProblem(ex, new ProblemError('PC_INTERNAL'));
  // An unsafe request to a route without the cache policy still invalidates what the service's
  // cached routes stored for its URL (cache on GETs, a POST to the same URL).
  const cache = ex.ctx?.cache ?? (isUnsafe(ex.req.method) ? cacheOfServiceFor(entry.service) : undefined);
  // An upgrade is its own exchange, never answered from the cache nor stored in it.
  if (cache && !ex.upgrade) return answerCached(ex, lc.forward, entry.target, cache);
  answerForward(ex, lc.forward, entry.target);
}

const declared = new WeakMap<Route, boolean>();
/** Path parameters of a pass-through request: none. */
const NO_PARAMS: Readonly<Record<string, string | undefined>> = Object.freeze({});

/**
 * Whether a route takes `;` in its path: a matrix-style path parameter (OpenAPI `style: matrix`)
 * or a literal `;` in its template. Everywhere else `;` is refused: servers disagree on whether
 * `/a;x/b` is `/a/b` (Tomcat, Spring) or a segment named `a;x`.
 */
function declaresPathParameters(route: Route): boolean {
  let yes = declared.get(route);
  if (yes === undefined) {
    const params = (route.operation.parameters ?? []) as Array<{ in?: string; style?: string }>;
    yes = route.specPath.includes(';') || params.some((p) => p.in === 'path' && p.style === 'matrix');
    declared.set(route, yes);
  }
  return yes;
}
