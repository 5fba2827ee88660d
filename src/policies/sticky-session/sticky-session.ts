import { randomBytes } from 'node:crypto';
import { type Static, Type as T } from '@sinclair/typebox';
import { DURATION_PATTERN, parseDuration } from '../../config/duration.ts';
import { ProblemError } from '../../errors.ts';
import { cookiesOf } from '../../net/cookies.ts';
import type { PolicyKind, RequestContext } from '../../pipeline/types.ts';

/** Default cookie name. */
export const DEFAULT_COOKIE = 'pc_affinity';
/** Default binding lifetime. */
export const DEFAULT_TTL = '1h';
/** Session ids: 128 random bits, base64url (22 characters). Anything else in the cookie is ignored. */
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;

/** `stickySession` config: cookie-based upstream affinity, shared through the state Store. */
export const StickySessionSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description:
          'enforce pins sessions to upstreams; dry-run only records what it would bind (no cookie, no store write). Default enforce.',
      }),
    ),
    cookie: T.Optional(
      T.String({
        pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description: `Cookie carrying the opaque session id (never the upstream's address). Default ${DEFAULT_COOKIE}.`,
      }),
    ),
    ttl: T.Optional(
      T.String({
        pattern: DURATION_PATTERN.source,
        description: `How long a session stays bound after it was bound or moved: 500ms, 30s, 15m, 1h, 7d. Cookie Max-Age and store TTL. Default ${DEFAULT_TTL}.`,
      }),
    ),
    sameSite: T.Optional(
      T.Union([T.Literal('Strict'), T.Literal('Lax'), T.Literal('None')], {
        description: 'Cookie SameSite attribute (None implies Secure). Default Lax.',
      }),
    ),
    path: T.Optional(
      T.String({
        pattern: '^/[^;\\s]*$',
        description: "Cookie Path. Default: the service's basePath, so each service keeps its own affinity.",
      }),
    ),
    onStoreError: T.Optional(
      T.Union([T.Literal('balance'), T.Literal('deny')], {
        description:
          'When the state store cannot be read: balance (forward without affinity) or deny (503 store-unavailable). Default balance.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Cookie-based session affinity to one upstream.' },
);

export type StickySessionConfig = Static<typeof StickySessionSchema>;

export { parseDuration };

/**
 * The `stickySession` kind (phase `route`). The cookie holds a random session id; the Store maps
 * `<service>:<id>` to an upstream id, so every gateway instance sends the session to the same
 * upstream. The forwarder uses that upstream while it is eligible; otherwise it balances and calls
 * `onChosen` with the one it used, which moves the binding and reissues the cookie.
 */
export const stickySessionPolicy: PolicyKind<typeof StickySessionSchema> = {
  name: 'stickySession',
  phase: 'route',
  schema: StickySessionSchema,
  create(config, deps) {
    const name = config.cookie ?? DEFAULT_COOKIE;
    const ttlMs = parseDuration(config.ttl ?? DEFAULT_TTL);
    const sameSite = config.sameSite ?? 'Lax';
    const basePath = deps.service.settings?.basePath;
    const path = config.path ?? (basePath && basePath !== '' ? basePath : '/');
    const attributes = `; Path=${path}; Max-Age=${Math.floor(ttlMs / 1000)}; HttpOnly; SameSite=${sameSite}`;
    const secureAlways = sameSite === 'None';
    const denyOnStoreError = config.onStoreError === 'deny';
    const dryRun = config.mode === 'dry-run';
    const { store, logger } = deps;
    const prefix = `${deps.service.name}:`;

    async function lookup(ctx: RequestContext, id: string | undefined): Promise<string | null> {
      if (!id) return null;
      try {
        return await store.getSticky(prefix + id);
      } catch (err) {
        if (denyOnStoreError) throw new ProblemError('PC_STORE_UNAVAILABLE', undefined, { cause: err });
        logger.warn({ err, route: ctx.route.operationId }, 'sticky session lookup failed; balancing instead');
        return null;
      }
    }

    if (dryRun) {
      return async function stickySessionDryRun(ctx) {
        const id = sessionIdFrom(ctx, name);
        const bound = await lookup(ctx, id);
        ctx.upstream = {
          onChosen(chosen) {
            const action = bound === null ? 'would-bind' : bound === chosen ? 'would-keep' : 'would-move';
            ctx.decisions.push({
              policy: 'stickySession',
              outcome: 'allow',
              reason: 'dry-run',
              detail: { action },
            });
          },
        };
      };
    }

    return async function stickySession(ctx) {
      const existing = sessionIdFrom(ctx, name);
      let bound = await lookup(ctx, existing);
      const id = existing ?? randomBytes(16).toString('base64url');
      ctx.upstream = {
        upstreamId: bound ?? undefined,
        onChosen(chosen) {
          if (chosen === bound) return;
          bound = chosen;
          // Affinity is best effort: a failed write costs one rebalance later, never this request.
          store.setSticky(prefix + id, chosen, ttlMs).catch((err: unknown) => {
            logger.warn({ err, route: ctx.route.operationId }, 'sticky session bind failed');
          });
          const secure = secureAlways || ctx.req.protocol === 'https' ? '; Secure' : '';
          ctx.responseHeaders['set-cookie'] = `${name}=${id}${attributes}${secure}`;
        },
      };
    };
  },
};

/** The session id from the request's cookies (parsed once, net/cookies.ts), when well-formed. */
function sessionIdFrom(ctx: RequestContext, name: string): string | undefined {
  const value = cookiesOf(ctx).values[name];
  return value !== undefined && SESSION_ID.test(value) ? value : undefined;
}
