import { type Static, Type } from '@sinclair/typebox';
import { ConfigError, ProblemError } from '../../errors.ts';
import type { Identity, PolicyDeps, PolicyKind, RequestContext } from '../../pipeline/types.ts';
import { ApiKeyConfigSchema, createApiKeyMethod, loadApiKeys } from './api-key.ts';
import { BasicConfigSchema, createBasicMethod, loadHtpasswd } from './basic.ts';
import { authFromSpec } from './from-spec.ts';
import { createJwtMethod, JwtConfigSchema } from './jwt.ts';
import { type AuthMethod, type AuthOutcome, configError } from './method.ts';

/** `auth:` of a policy rule. */
export const AuthConfigSchema = Type.Object(
  {
    mode: Type.Optional(
      Type.Union([Type.Literal('enforce'), Type.Literal('dry-run')], {
        description:
          'enforce rejects with 401/403; dry-run lets the request through and records the decision. Default enforce.',
      }),
    ),
    jwt: Type.Optional(JwtConfigSchema),
    apiKey: Type.Optional(ApiKeyConfigSchema),
    basic: Type.Optional(BasicConfigSchema),
    fromSpec: Type.Optional(
      Type.Boolean({
        description:
          "Take the methods from the spec's `security` and `securitySchemes` (operation first, then document); " +
          'jwt/apiKey/basic then only configure how each scheme is verified. Default false.',
      }),
    ),
    stripCredentials: Type.Optional(
      Type.Boolean({
        description:
          'Remove the credential headers (Authorization, the API key header) before forwarding. API keys ' +
          'sent as a query parameter stay in the URL. Default false (the upstream sees them).',
      }),
    ),
    forwardSubject: Type.Optional(
      Type.String({
        description:
          'Upstream header carrying the authenticated subject (JWT `sub`, API key name, user name); a ' +
          'client-sent copy is always removed. Default: none.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Who may call: the configured methods are alternatives (any one passing is enough). 401 with ' +
      'WWW-Authenticate when no method accepts the credentials, 403 when a token lacks a scope or claim.',
  },
);
export type AuthConfig = Static<typeof AuthConfigSchema>;

type FailOutcome = Extract<AuthOutcome, { kind: 'fail' }>;

async function explicitMethods(config: AuthConfig, deps: PolicyDeps): Promise<AuthMethod[]> {
  const methods: AuthMethod[] = [];
  if (config.jwt) methods.push(createJwtMethod(config.jwt));
  if (config.apiKey)
    methods.push(createApiKeyMethod(config.apiKey, await loadApiKeys(config.apiKey, deps.baseDir)));
  if (config.basic)
    methods.push(createBasicMethod(config.basic, await loadHtpasswd(config.basic.usersFile, deps.baseDir)));
  return methods;
}

function rejection(failure: FailOutcome, challenges: string): ProblemError {
  return new ProblemError(failure.status === 403 ? 'PC_FORBIDDEN' : 'PC_UNAUTHORIZED', failure.description, {
    headers: { 'www-authenticate': challenges },
    extensions: { reason: failure.reason },
  });
}

/**
 * The `auth` kind. The request passes when one alternative accepts it: each configured method
 * (jwt, apiKey, basic) is one alternative; with `fromSpec`, each security requirement of the spec
 * is one (all its schemes must pass). On success `ctx.identity` is set and forwarded claims are
 * added to the upstream request; client-sent copies of forwarded headers are removed whatever the
 * outcome. Presented but invalid credentials are rejected even where the spec allows anonymous calls.
 */
export const authPolicy: PolicyKind<typeof AuthConfigSchema> = {
  name: 'auth',
  phase: 'auth',
  schema: AuthConfigSchema,
  identityHeaders: (config) =>
    [
      ...(config.forwardSubject ? [config.forwardSubject] : []),
      ...Object.keys(config.jwt?.forwardClaims ?? {}),
    ].map((h) => h.toLowerCase()),
  async create(config, deps) {
    let alternatives: AuthMethod[][];
    let anonymous = false;
    try {
      if (config.fromSpec) {
        ({ alternatives, anonymous } = await authFromSpec(config, deps));
      } else {
        alternatives = (await explicitMethods(config, deps)).map((m) => [m]);
        if (alternatives.length === 0)
          throw configError('', 'configure jwt, apiKey or basic, or set fromSpec: true');
      }
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw configError('', (err as Error).message);
    }
    const methods = alternatives.flat();
    const stripped = new Set(methods.flatMap((m) => m.upstreamHeaderNames));
    const subjectHeader = config.forwardSubject?.toLowerCase();
    if (subjectHeader) stripped.add(subjectHeader);
    if (config.stripCredentials)
      for (const m of methods) for (const h of m.credentialHeaderNames) stripped.add(h);
    const strippedList = [...stripped];
    const missingChallenge = [...new Set(methods.map((m) => m.challenge))].join(', ');
    const single =
      alternatives.length === 1 && alternatives[0]?.length === 1 ? alternatives[0][0] : undefined;

    const accept = (ctx: RequestContext, identity: Identity, headers: Record<string, string> | undefined) => {
      ctx.identity = identity;
      if (headers) Object.assign(ctx.setUpstreamHeaders, headers);
      if (subjectHeader && identity.subject) ctx.setUpstreamHeaders[subjectHeader] = identity.subject;
      ctx.decisions.push({
        policy: 'auth',
        outcome: 'allow',
        detail: { method: identity.method, subject: identity.subject },
      });
    };
    const allowAnonymous = (ctx: RequestContext) => {
      ctx.decisions.push({ policy: 'auth', outcome: 'allow', detail: { method: 'anonymous' } });
    };
    const reject = (failure: FailOutcome | undefined): never => {
      if (!failure) {
        throw new ProblemError('PC_UNAUTHORIZED', 'Credentials are required', {
          headers: { 'www-authenticate': missingChallenge },
          extensions: { reason: 'missing_credentials' },
        });
      }
      const others = methods.map((m) => m.challenge).filter((c) => !failure.challenge.startsWith(c));
      throw rejection(failure, [failure.challenge, ...new Set(others)].join(', '));
    };

    if (single) {
      // The common case, one method: no per-request arrays, and no promise when the method answers
      // synchronously (a cached JWT, an API key), so the chain stays synchronous.
      const conclude = (ctx: RequestContext, outcome: AuthOutcome) => {
        if (outcome.kind === 'ok') accept(ctx, outcome.identity, outcome.headers);
        else if (outcome.kind === 'absent' && anonymous) allowAnonymous(ctx);
        else reject(outcome.kind === 'fail' ? outcome : undefined);
      };
      return function auth(ctx) {
        for (const h of strippedList) ctx.removeUpstreamHeaders.add(h);
        const outcome = single.authenticate(ctx);
        if ('then' in outcome) return outcome.then((settled) => conclude(ctx, settled));
        conclude(ctx, outcome);
      };
    }

    return async function auth(ctx) {
      for (const h of strippedList) ctx.removeUpstreamHeaders.add(h);
      let failure: FailOutcome | undefined;
      for (const alternative of alternatives) {
        let identity: Identity | undefined;
        let headers: Record<string, string> | undefined;
        let passed = true;
        for (const method of alternative) {
          const outcome = await method.authenticate(ctx);
          if (outcome.kind !== 'ok') {
            // A 403 (authenticated, not allowed) explains more than a 401 from another method.
            if (outcome.kind === 'fail' && (!failure || (outcome.status === 403 && failure.status !== 403))) {
              failure = outcome;
            }
            passed = false;
            break;
          }
          identity ??= outcome.identity;
          if (outcome.headers) headers = { ...headers, ...outcome.headers };
        }
        if (passed && identity) return accept(ctx, identity, headers);
      }
      if (!failure && anonymous) return allowAnonymous(ctx);
      reject(failure);
    };
  },
};
