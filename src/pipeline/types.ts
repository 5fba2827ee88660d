import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Static, TSchema } from '@sinclair/typebox';
import type { GatewayConfig } from '../config/schema.ts';
import type { Logger } from '../logger.ts';
import type { RequestCookies } from '../net/cookies.ts';
import type { RequestTarget } from '../net/target.ts';
import type { RouteCache } from '../policies/cache/serve.ts';
import type { Route, Service } from '../registry/types.ts';
import type { Store } from '../state/store.ts';
import type { ResponseStage, StageFailureLog } from './response.ts';

/**
 * A request on the public listener as the lifecycle and the policies read it: the gateway's own
 * (lifecycle/wire.ts); a FastifyRequest fits too (the policy test slices use Fastify).
 */
export interface GatewayRequest {
  /** The Node request (an HTTP/2 compat request has the same surface). */
  readonly raw: IncomingMessage;
  readonly method: string;
  /** The raw request target, as received. Policies read the canonical `RequestContext.target`. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** Client address after trustProxy (X-Forwarded-For believed from trusted peers only). */
  readonly ip: string;
  /** `https` on TLS, or as a trusted peer's X-Forwarded-Proto says; else `http`. */
  readonly protocol: string;
  /** The raw query string's parameters (fast-querystring), parsed on first read. */
  readonly query: unknown;
  readonly log: StageFailureLog;
}

/**
 * The answer to a request not forwarded (problem, mock, preflight, redirect): headers collected,
 * then written once by `send`. Forwarded requests `hijack` it and write the raw response. A
 * FastifyReply fits too.
 */
export interface GatewayReply {
  readonly raw: ServerResponse;
  /** True once the answer is written (or the reply was hijacked). */
  readonly sent: boolean;
  code(status: number): GatewayReply;
  header(name: string, value: unknown): GatewayReply;
  headers(values: object): GatewayReply;
  getHeader(name: string): unknown;
  /** A string, a Buffer, a readable stream, or nothing. */
  send(payload?: unknown): GatewayReply;
  redirect(url: string, status: number): GatewayReply;
  hijack(): GatewayReply;
}

/**
 * The phases a request passes, in order. The order lives here and nowhere else:
 * ipFilter → cors → waf → auth → rateLimit → validate → route (sticky sessions: upstream choice) →
 * headers (header rewriting) → cache (last: nothing is looked up before every other policy accepted
 * the request).
 *
 * CORS runs right after ipFilter (not with the header policies at the end) because browsers never
 * send credentials on a preflight: the gateway must answer it before auth would reject it, and a
 * 401 or 429 must carry the CORS headers too, or the browser hides it from the page.
 */
export const PHASES = [
  'ipFilter',
  'cors',
  'waf',
  'auth',
  'rateLimit',
  'validate',
  'route',
  'headers',
  'cache',
] as const;

/** Phases that run for a CORS preflight of an operation whose OPTIONS the spec does not declare. */
export const PREFLIGHT_PHASES: ReadonlySet<Phase> = new Set(['ipFilter', 'cors']);
export type Phase = (typeof PHASES)[number];

/** Every policy config carries a mode; dry-run never blocks but records what it would have done. */
export type PolicyMode = 'enforce' | 'dry-run';

/** Who the caller is, once an auth policy accepted them. */
export interface Identity {
  method: 'jwt' | 'apiKey' | 'basic';
  /** `sub` for JWT, the key's name for API keys, the user name for basic. */
  subject: string;
  /** For JWT: the verified claims. */
  claims?: Record<string, unknown>;
}

/** A policy's recorded decision (logs, span events, dry-run reports). */
export interface Decision {
  policy: string;
  outcome: 'allow' | 'deny' | 'would-deny' | 'error';
  /** Short machine-readable reason, e.g. `expired`, `insufficient_scope`, `limit`. */
  reason?: string;
  /** Extra facts (remaining quota, subject, rule ids...). Never secrets. */
  detail?: Record<string, unknown>;
}

/** Upstream affinity decided by a policy (sticky sessions). */
export interface UpstreamPreference {
  /** Upstream id (URL) to use when it is eligible. */
  upstreamId?: string;
  /** Called with the upstream actually chosen (to bind a new or moved session). */
  onChosen?: (upstreamId: string) => void;
}

/**
 * Per-request state the phases share. Created only for routes that have policies; the policy-free
 * path never allocates one.
 */
export interface RequestContext {
  readonly req: GatewayRequest;
  readonly reply: GatewayReply;
  readonly route: Route;
  readonly service: Service;
  /** Client address after trustProxy. */
  readonly clientIp: string;
  /**
   * The canonical request target (net/target.ts): the path and query every policy reads. Never
   * parse `req.url` in a policy: it is the raw target, before canonicalisation.
   */
  readonly target: RequestTarget;
  /** Path parameters by their spec names, from the route match (absent only in hand-built contexts). */
  readonly params?: Readonly<Record<string, string | undefined>>;
  identity?: Identity;
  /** Headers to set on the upstream request (after the client's are copied). */
  readonly setUpstreamHeaders: Record<string, string>;
  /** Client headers never to forward (e.g. spoofed identity headers), lower-case. */
  readonly removeUpstreamHeaders: Set<string>;
  /** Headers added to the response whatever it is (upstream answer or rejection). */
  readonly responseHeaders: Record<string, string>;
  /** Edits of the upstream response headers before they are sent (headers policy, CORS). */
  readonly responseEdits: Array<(status: number, headers: OutgoingHttpHeaders) => void>;
  /**
   * Stages the response passes after the header edits (compression, cache store), sorted by their
   * order; undefined until a policy adds one with `addResponseStage` (pipeline/response.ts, which
   * states the contract).
   */
  responseStages?: ResponseStage[];
  /**
   * The request body, when a policy needed to read it (validate, WAF): read once, bounded, then
   * forwarded from this buffer instead of the stream.
   */
  body?: Buffer;
  /** Why the body could not be read, once a read failed: every later reader gets it (the stream is spent). */
  bodyError?: unknown;
  /** The request's cookies, parsed once on first use by `cookiesOf` (net/cookies.ts). */
  cookies?: RequestCookies;
  upstream?: UpstreamPreference;
  readonly decisions: Decision[];
  /** Set by the cache policy: the lifecycle answers through this route's cache (lifecycle/answer.ts). */
  cache?: RouteCache;
  /** Set by a policy that answers the request itself (e.g. a CORS preflight): nothing is forwarded. */
  answered?: boolean;
  /**
   * That answer: the lifecycle writes it (lifecycle/answer.ts), policies never write to the reply.
   * It is complete as built: response stages do not run on it. A body is sent as is (HEAD: none).
   */
  answer?: { status: number; headers: Record<string, string>; body?: Buffer | NodeJS.ReadableStream };
}

/**
 * A policy hook: returns (or resolves) to continue, throws (or rejects with) a ProblemError to
 * reject. A hook with nothing to wait for should return synchronously: the chain then stays
 * synchronous (see runChain).
 */
export interface Hook {
  (ctx: RequestContext): void | Promise<void>;
  /**
   * For a hook that reads every request body whole (the WAF): read it into `ctx.body` (or
   * `ctx.bodyError`) and call `then`, without a promise (`PolicyDeps.readBodyThen`). The chain calls
   * it right before the hook, which then judges the body synchronously: no promise, microtask or
   * reaction job between the body's last byte and the forwarder (see runChain).
   */
  readAhead?: (ctx: RequestContext, then: () => void) => void;
}

/** What a policy factory may use; built once per gateway, shared by every route. */
export interface PolicyDeps {
  config: GatewayConfig;
  store: Store;
  logger: Logger;
  /** The route and service the hook is created for. */
  route: Route;
  service: Service;
  /** Folder of the policy file the config came from (to resolve relative paths). */
  baseDir: string;
  /** Read the request body once (bounded); later calls get the same buffer. */
  readBody: (ctx: RequestContext, maxBytes: number) => Promise<Buffer>;
  /**
   * readBody with a callback: reads the body into `ctx.body` (or records `ctx.bodyError`), then
   * calls `then`; a body refused before it is read is left to readBody (see pipeline/body.ts).
   */
  readBodyThen: (ctx: RequestContext, maxBytes: number, then: () => void) => void;
}

/**
 * A policy kind: one folder in src/policies, one entry in src/policies/index.ts. `create` runs
 * once per route at load time (precompute everything there) and returns a named hook.
 */
export interface PolicyKind<S extends TSchema = TSchema> {
  /** The key in policies/*.yaml, e.g. `rateLimit`. */
  readonly name: string;
  readonly phase: Phase;
  /** JSON Schema of the config, every field described with its default. */
  readonly schema: S;
  create(config: Static<S>, deps: PolicyDeps): Hook | Promise<Hook>;
  /**
   * Request headers this policy sets upstream from a verified identity (auth: `forwardSubject`,
   * forwarded claims), lower-case. A client's copies are stripped from every request to the
   * service, on every route and pass-through alike, so a sibling route without this policy never
   * forwards a spoofed identity. Default: none.
   */
  identityHeaders?(config: Static<S>): readonly string[];
}
