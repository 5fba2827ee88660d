import { basename } from 'node:path';
import { ConfigError, ProblemError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { hasBody } from '../net/read-body.ts';
import { canonicalTarget, type RequestTarget } from '../net/target.ts';
import type { Route, Service } from '../registry/types.ts';
import { REQUEST_ID_HEADER } from '../telemetry/record.ts';
import type { ResolvedPolicy } from './rules.ts';
import {
  type Decision,
  type GatewayReply,
  type GatewayRequest,
  type Hook,
  PHASES,
  type PolicyDeps,
  type RequestContext,
} from './types.ts';

/** A route's policy chain, in phase order, plus what built it (for `validate` / `/routes`). */
export interface RouteChain {
  hooks: Hook[];
  /** Each applied policy, in phase order: its kind, phase, mode (dry-run ones marked) and rule. */
  applied: Array<{
    kind: string;
    phase: string;
    mode: string;
    /** The policy file. */
    file: string;
    /** Index of the rule in that file. */
    rule: number;
    /** `file#index` (the file's basename), as the access log, dry-run lines and `routes` print it; built once. */
    label: string;
  }>;
  /**
   * Run right before the hook at `index` (the first `auth` one): the route's enforcing rate limits
   * refuse a client they already refused, before its credentials are checked (see runChain).
   */
  beforeAuth?: { index: number; check: (ctx: RequestContext) => void };
}

/** A hook that can refuse a request before auth runs (rateLimit: a client already past a limit). */
export interface BeforeAuthHook {
  beforeAuth: (ctx: RequestContext) => void;
}

export const EMPTY_CHAIN: RouteChain = Object.freeze({ hooks: [], applied: [] }) as RouteChain;

/**
 * Create the hooks of one route, once, at load time: ordered by PHASES, each wrapped so that
 * `mode: dry-run` turns a rejection into a recorded `would-deny` decision.
 */
export async function buildChain(
  resolved: readonly ResolvedPolicy[],
  deps: Omit<PolicyDeps, 'baseDir'>,
): Promise<RouteChain> {
  if (resolved.length === 0) return EMPTY_CHAIN;
  const ordered = [...resolved].sort((a, b) => PHASES.indexOf(a.kind.phase) - PHASES.indexOf(b.kind.phase));
  const hooks: Hook[] = [];
  const applied: RouteChain['applied'] = [];
  for (const p of ordered) {
    const mode = p.config.mode === 'dry-run' || p.config.mode === 'detect' ? 'dry-run' : 'enforce';
    let hook: Hook;
    try {
      hook = await p.kind.create(p.config, { ...deps, baseDir: p.rule.baseDir });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // A kind reports paths inside its own config; place them in the policy file.
      const prefix = `/${p.rule.index}/${p.kind.name}`;
      throw new ConfigError(
        err.issues.map((i) => {
          const path = prefix + i.path;
          return { ...i, file: i.file || p.rule.file, path, line: i.line ?? p.rule.lineOf?.(path) };
        }),
        { cause: err },
      );
    }
    const label = `${basename(p.rule.file)}#${p.rule.index}`;
    hooks.push(mode === 'dry-run' ? dryRun(p.kind.name, label, hook, deps.logger) : hook);
    applied.push({
      kind: p.kind.name,
      phase: p.kind.phase,
      mode,
      file: p.rule.file,
      rule: p.rule.index,
      label,
    });
  }
  const index = applied.findIndex((a) => a.phase === 'auth');
  const checks = hooks
    .filter((h, i) => applied[i]?.phase === 'rateLimit' && 'beforeAuth' in h)
    .map((h) => (h as Hook & BeforeAuthHook).beforeAuth);
  if (index < 0 || checks.length === 0) return { hooks, applied };
  const check =
    checks.length === 1
      ? (checks[0] as BeforeAuthHook['beforeAuth'])
      : (ctx: RequestContext) => {
          for (const c of checks) c(ctx);
        };
  return { hooks, applied, beforeAuth: { index, check } };
}

/**
 * Wrap a hook so it never blocks: a rejection is recorded as `would-deny`. Every decision the
 * policy records (its own or the wrapper's) is logged, also those recorded later, once the
 * upstream is chosen (sticky sessions): kinds that handle dry-run themselves (rateLimit, cors,
 * headers, stickySession) never throw, and their decisions are the dry-run's whole output.
 * Would-deny and "what it would do" decisions log at info; a plain allow at debug.
 */
function dryRun(policy: string, rule: string, hook: Hook, logger: Logger): Hook {
  const log = (ctx: RequestContext, from: number) => {
    for (let i = from; i < ctx.decisions.length; i++) {
      const d = ctx.decisions[i] as Decision;
      if (d.policy !== policy) continue;
      const entry = {
        // The request's id, as in its access-log line and X-Request-Id.
        reqId: ctx.reply.getHeader(REQUEST_ID_HEADER),
        policy,
        rule,
        outcome: d.outcome,
        reason: d.reason,
        detail: d.detail,
        route: ctx.route.operationId,
        service: ctx.service.name,
      };
      if (d.outcome === 'would-deny') logger.info(entry, 'dry-run: would deny');
      else if (d.reason === 'dry-run') logger.info(entry, 'dry-run: would apply');
      else logger.debug(entry, 'dry-run: allow');
    }
  };
  const wrapped: Hook = async function dryRunPolicy(ctx) {
    const before = ctx.decisions.length;
    const upstream = ctx.upstream;
    try {
      await hook(ctx);
    } catch (err) {
      if (!(err instanceof ProblemError)) throw err;
      // A kind that records its own would-deny (richer detail) is not recorded twice.
      if (!ctx.decisions.some((d, i) => i >= before && d.policy === policy && d.outcome === 'would-deny'))
        ctx.decisions.push({ policy, outcome: 'would-deny', reason: err.code, detail: err.extensions });
    }
    log(ctx, before);
    const chosen = ctx.upstream?.onChosen;
    if (ctx.upstream && ctx.upstream !== upstream && chosen) {
      ctx.upstream.onChosen = function logDryRunChoice(id) {
        const from = ctx.decisions.length;
        chosen(id);
        log(ctx, from);
      };
    }
  };
  // The body is read ahead for the wrapped hook as for the hook itself.
  if (hook.readAhead) wrapped.readAhead = hook.readAhead;
  return wrapped;
}

/**
 * A fresh per-request context; only routes with policies create one. `target` defaults to the
 * canonical form of `req.url` (for hand-built contexts in tests; the gateway passes its own).
 */
export function createContext(
  req: GatewayRequest,
  reply: GatewayReply,
  route: Route,
  service: Service,
  params?: Record<string, string | undefined>,
  target: RequestTarget = canonicalTarget(req.url),
): RequestContext {
  return {
    req,
    reply,
    route,
    service,
    clientIp: req.ip,
    target,
    params,
    setUpstreamHeaders: {},
    removeUpstreamHeaders: new Set(),
    responseHeaders: {},
    responseEdits: [],
    responseStages: undefined,
    cache: undefined,
    decisions: [],
    // Every optional field exists from the start: one hidden class for every context.
    identity: undefined,
    body: undefined,
    bodyError: undefined,
    cookies: undefined,
    upstream: undefined,
    answered: undefined,
    answer: undefined,
  };
}

/**
 * Run the hooks in order; stops early when one answered the request itself. With `phases`, only
 * the hooks of those phases run (CORS preflights).
 *
 * Synchronous hooks run synchronously: the chain returns a promise only from the first hook that
 * returned one (e.g. the Redis rate limit) or whose body it had to wait for, and a synchronous
 * rejection is thrown, not returned. Callers handle both (`await` does). An all-sync chain thus
 * costs no promise, microtask or reaction job at all (about 3 µs a request for ipFilter + cached
 * JWT + validate in the bench). The gateway runs it with callbacks (runChainThen).
 *
 * A hook that throws gets a `deny` decision for its policy kind (`error` for anything but a
 * ProblemError) unless it recorded one itself: telemetry reads who rejected from the decisions,
 * never from the error code. A 401/403 from the `auth` phase does not end the chain at once: the
 * route's `rateLimit` hooks still run and count the failed attempt (keyed by what they can key an
 * anonymous request by: a `subject` limit counts the client address), so credentials cannot be
 * guessed past a limit; when one of them refuses, its 429 goes out instead of the 401/403. A client
 * a limit already refused (and would refuse now) is refused before auth runs (`beforeAuth`), so
 * guessing past the limit costs no credential check (bcrypt, JWT signature).
 */
export function runChain(
  chain: RouteChain,
  ctx: RequestContext,
  phases?: ReadonlySet<string>,
): void | Promise<void> {
  let state = 'running' as 'running' | 'done' | 'failed';
  let error: unknown;
  let settle: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  runChainThen(
    chain,
    ctx,
    phases,
    () => {
      if (settle) settle.resolve();
      else state = 'done';
    },
    (err) => {
      if (settle) settle.reject(err);
      else {
        state = 'failed';
        error = err;
      }
    },
  );
  if (state === 'done') return;
  if (state === 'failed') throw error;
  return new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
}

/**
 * runChain with callbacks: exactly one of `done` and `failed` is called, synchronously when every
 * hook returned synchronously, else from the promise or body read the chain waited for. Neither
 * may throw.
 */
export function runChainThen(
  chain: RouteChain,
  ctx: RequestContext,
  phases: ReadonlySet<string> | undefined,
  done: () => void,
  failed: (err: unknown) => void,
): void {
  runFrom(chain, ctx, phases, 0, false, done, failed);
}

/** Run the hooks from `start`; `read`: the body of the hook at `start` was read ahead already. */
function runFrom(
  chain: RouteChain,
  ctx: RequestContext,
  phases: ReadonlySet<string> | undefined,
  start: number,
  read: boolean,
  done: () => void,
  failed: (err: unknown) => void,
): void {
  const hooks = chain.hooks;
  const early = chain.beforeAuth;
  for (let i = start; i < hooks.length; i++) {
    if (phases && !phases.has(chain.applied[i]?.phase ?? '')) continue;
    const hook = hooks[i] as Hook;
    if (
      hook.readAhead !== undefined &&
      !(read && i === start) &&
      ctx.body === undefined &&
      hasBody(ctx.req.raw)
    ) {
      // The body first, with a callback; then this hook again, which finds it read.
      const at = i;
      // Called from the stream's events: nothing may escape to them (it would end the process).
      hook.readAhead(ctx, () => resume(chain, ctx, phases, at, true, done, failed));
      return;
    }
    // Outside the hook's try: its 429 is the rate limit's (it recorded the decision), not the auth hook's.
    if (i === early?.index) {
      try {
        early.check(ctx);
      } catch (err) {
        failed(err);
        return;
      }
    }
    let pending: void | Promise<void>;
    try {
      pending = hook(ctx);
    } catch (err) {
      hookFailed(chain, ctx, phases, i, err, done, failed);
      return;
    }
    if (pending !== undefined) {
      const next = i + 1;
      pending.then(
        // A throw here would be an unhandled rejection: resume turns it into `failed`.
        () => (ctx.answered ? done() : resume(chain, ctx, phases, next, false, done, failed)),
        (err: unknown) => hookFailed(chain, ctx, phases, i, err, done, failed),
      );
      return;
    }
    if (ctx.answered) break;
  }
  done();
}

/** runFrom from a callback (a body read, a hook's promise): whatever it throws goes to `failed`. */
function resume(
  chain: RouteChain,
  ctx: RequestContext,
  phases: ReadonlySet<string> | undefined,
  start: number,
  read: boolean,
  done: () => void,
  failed: (err: unknown) => void,
): void {
  try {
    runFrom(chain, ctx, phases, start, read, done, failed);
  } catch (err) {
    failed(err);
  }
}

/**
 * Hook `i` threw `err`: record it, then fail with it (synchronously when nothing is left to run),
 * or, for an auth rejection, count it against the route's rate limits first.
 */
function hookFailed(
  chain: RouteChain,
  ctx: RequestContext,
  phases: ReadonlySet<string> | undefined,
  i: number,
  err: unknown,
  done: () => void,
  failed: (err: unknown) => void,
): void {
  const applied = chain.applied[i];
  const policy = applied?.kind ?? 'unknown';
  if (!ctx.decisions.some((d) => d.policy === policy && (d.outcome === 'deny' || d.outcome === 'error'))) {
    ctx.decisions.push(
      err instanceof ProblemError
        ? {
            policy,
            outcome: 'deny',
            reason: typeof err.extensions.reason === 'string' ? err.extensions.reason : err.code,
            detail: { code: err.code },
          }
        : { policy, outcome: 'error', reason: 'internal' },
    );
  }
  if (
    applied?.phase === 'auth' &&
    err instanceof ProblemError &&
    (err.status === 401 || err.status === 403)
  ) {
    for (let j = i + 1; j < chain.hooks.length; j++) {
      const phase = chain.applied[j]?.phase;
      if (phase === 'rateLimit' && (!phases || phases.has(phase))) {
        // It always rejects: with the 429 of a limit, else with the auth rejection.
        countFailedAuth(chain, ctx, j, err).then(done, failed);
        return;
      }
    }
  }
  failed(err);
}

/**
 * Run the `rateLimit` hooks from `from` on for a request auth rejected. A 429 from any of them
 * wins; anything else (allowed, the store down) leaves the auth rejection as the answer.
 */
async function countFailedAuth(
  chain: RouteChain,
  ctx: RequestContext,
  from: number,
  authError: ProblemError,
): Promise<void> {
  for (let j = from; j < chain.hooks.length; j++) {
    if (chain.applied[j]?.phase !== 'rateLimit') continue;
    try {
      await (chain.hooks[j] as Hook)(ctx);
    } catch (err) {
      if (err instanceof ProblemError && err.code === 'PC_RATE_LIMITED') throw err;
    }
  }
  throw authError;
}

/** Re-exported for the policies' tests; the body reader lives in body.ts. */
export { readBody, readBodyThen } from './body.ts';
