import type { OutgoingHttpHeaders } from 'node:http';
import { type Static, Type as T } from '@sinclair/typebox';
import { ConfigError, type ConfigIssue, ProblemError } from '../../errors.ts';
import type { Decision, PolicyKind, RequestContext } from '../../pipeline/types.ts';

/** Methods allowed when `methods` is not given (the CORS-relevant ones of a REST API). */
export const DEFAULT_METHODS = ['GET', 'HEAD', 'PUT', 'PATCH', 'POST', 'DELETE'] as const;
/** Default `maxAge`: how long a browser may cache a preflight answer, in seconds. */
export const DEFAULT_MAX_AGE_S = 600;

const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

/** `cors` config: which browser origins may call the route, answered by the gateway. */
export const CorsSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description:
          'enforce answers preflights and adds CORS headers; dry-run only records what it would do (preflights go upstream). Default enforce.',
      }),
    ),
    origins: T.Optional(
      T.Array(T.String({ minLength: 1 }), {
        minItems: 1,
        description:
          'Allowed origins: exact (`https://app.example.com`), `*` for any, a wildcard host (`https://*.example.com`), or a regular expression between slashes (`/^https://[a-z]+\\.example\\.com$/`). Default ["*"].',
      }),
    ),
    methods: T.Optional(
      T.Array(T.String({ pattern: TOKEN }), {
        description: `Methods a preflight may ask for. Default ${DEFAULT_METHODS.join(', ')}.`,
      }),
    ),
    headers: T.Optional(
      T.Array(T.String({ pattern: TOKEN }), {
        description:
          'Request headers a preflight may ask for (case-insensitive). Default: whatever the preflight asks for is allowed.',
      }),
    ),
    credentials: T.Optional(
      T.Boolean({
        description:
          'Allow cookies and Authorization (Access-Control-Allow-Credentials). Not with origin `*`. Default false.',
      }),
    ),
    maxAge: T.Optional(
      T.Integer({
        minimum: 0,
        description: `Preflight cache lifetime in seconds. Default ${DEFAULT_MAX_AGE_S}.`,
      }),
    ),
    exposeHeaders: T.Optional(
      T.Array(T.String({ pattern: TOKEN }), {
        description: 'Response headers scripts may read (Access-Control-Expose-Headers). Default: none.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Cross-origin resource sharing for browsers.' },
);

export type CorsConfig = Static<typeof CorsSchema>;

/**
 * The `cors` kind. A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered
 * here: 204 with the policy's headers, or 403 without any CORS header when the origin, method or
 * headers are not allowed. Other requests from an allowed origin get Access-Control-Allow-Origin
 * (and credentials / expose headers) on the response; any CORS headers of the upstream are
 * replaced by the policy's, so the gateway alone decides.
 */
export const corsPolicy: PolicyKind<typeof CorsSchema> = {
  name: 'cors',
  phase: 'cors',
  schema: CorsSchema,
  create(config) {
    const origins = config.origins ?? ['*'];
    const credentials = config.credentials ?? false;
    checkConfig(origins, credentials);
    const anyOrigin = origins.includes('*');
    const isAllowed = compileOrigins(origins);
    const methods = new Set((config.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase()));
    const methodList = [...methods].join(', ');
    const allowedHeaders = config.headers && new Set(config.headers.map((h) => h.toLowerCase()));
    const headerList = config.headers?.join(', ');
    const maxAge = String(config.maxAge ?? DEFAULT_MAX_AGE_S);
    const expose = config.exposeHeaders?.length ? config.exposeHeaders.join(', ') : undefined;
    // With `*` and no credentials the answer is the same for every origin: nothing to vary on.
    const variesByOrigin = !anyOrigin || credentials;
    const dryRun = config.mode === 'dry-run';

    /** The Access-Control-* headers for an allowed origin (actual requests). */
    const actualHeaders = (origin: string): Record<string, string> => {
      const h: Record<string, string> = {
        'access-control-allow-origin': anyOrigin && !credentials ? '*' : origin,
      };
      if (credentials) h['access-control-allow-credentials'] = 'true';
      if (expose) h['access-control-expose-headers'] = expose;
      return h;
    };

    function preflight(ctx: RequestContext, origin: string | undefined): void {
      const requested = String(ctx.req.headers['access-control-request-method']).toUpperCase();
      const askedHeaders = headerTokens(ctx.req.headers['access-control-request-headers']);
      let refusal: string | undefined;
      if (!origin || !isAllowed(origin)) refusal = 'origin';
      else if (!methods.has(requested)) refusal = 'method';
      else if (allowedHeaders && askedHeaders.some((h) => !allowedHeaders.has(h))) refusal = 'headers';
      if (dryRun) {
        ctx.decisions.push(
          dryRunDecision(refusal ? 'would-refuse-preflight' : 'would-answer-preflight', origin),
        );
        return;
      }
      if (refusal) {
        throw new ProblemError('PC_FORBIDDEN', `CORS preflight refused: ${refusal} not allowed`, {
          extensions: { reason: `cors_${refusal}` },
        });
      }
      const h: Record<string, string> = {
        ...actualHeaders(origin as string),
        'access-control-allow-methods': methodList,
        'access-control-max-age': maxAge,
        vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      };
      const allowHeaders = headerList ?? askedHeaders.join(', ');
      if (allowHeaders) h['access-control-allow-headers'] = allowHeaders;
      delete h['access-control-expose-headers']; // meaningful on actual responses only
      ctx.answered = true;
      ctx.answer = { status: 204, headers: { ...ctx.responseHeaders, ...h } };
    }

    return function cors(ctx) {
      const origin = ctx.req.headers.origin;
      if (ctx.req.method === 'OPTIONS' && ctx.req.headers['access-control-request-method'] !== undefined) {
        preflight(ctx, origin);
        return;
      }
      const allowed = origin !== undefined && isAllowed(origin);
      // Browsers apply no CORS to WebSockets: the server is to check Origin (RFC 6455 §10.2). An
      // upgrade from an origin this policy does not allow is refused (cross-site WebSocket hijacking).
      if (origin !== undefined && !allowed && (ctx.req.raw as { upgrade?: boolean }).upgrade === true) {
        if (dryRun) {
          ctx.decisions.push(dryRunDecision('would-refuse-websocket', origin));
          return;
        }
        throw new ProblemError('PC_FORBIDDEN', 'WebSocket upgrade refused: origin not allowed', {
          extensions: { reason: 'cors_origin' },
        });
      }
      if (dryRun) {
        if (origin !== undefined)
          ctx.decisions.push(dryRunDecision(allowed ? 'would-allow' : 'would-omit', origin));
        return;
      }
      const set = allowed ? actualHeaders(origin) : undefined;
      if (set) Object.assign(ctx.responseHeaders, set);
      ctx.responseEdits.push(function corsResponseHeaders(_status: number, out: OutgoingHttpHeaders) {
        for (const name in out) if (name.startsWith('access-control-')) delete out[name];
        if (set) Object.assign(out, set);
        if (variesByOrigin) out.vary = addVary(out.vary);
      });
    };
  },
};

function dryRunDecision(action: string, origin: string | undefined): Decision {
  return { policy: 'cors', outcome: 'allow', reason: 'dry-run', detail: { action, origin } };
}

/** `Vary` with `Origin` added once to whatever the upstream sent. */
function addVary(current: OutgoingHttpHeaders[string]): string {
  if (current === undefined || current === '') return 'Origin';
  const text = Array.isArray(current) ? current.join(', ') : String(current);
  if (text.trim() === '*' || /(^|,)\s*origin\s*(,|$)/i.test(text)) return text;
  return `${text}, Origin`;
}

function headerTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const text = Array.isArray(value) ? value.join(',') : value;
  return text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
}

function checkConfig(origins: readonly string[], credentials: boolean): void {
  const issues: ConfigIssue[] = [];
  if (credentials && origins.includes('*')) {
    issues.push({
      file: '',
      path: '/credentials',
      message:
        'credentials: true with origin "*" would let every website call this API with its users\' cookies; list the origins instead',
    });
  }
  origins.forEach((o, i) => {
    if (isRegexEntry(o)) {
      try {
        new RegExp(o.slice(1, -1));
      } catch (err) {
        issues.push({
          file: '',
          path: `/origins/${i}`,
          message: `invalid regular expression: ${(err as Error).message}`,
        });
      }
    } else if (o !== '*' && !/^[a-z][a-z0-9+.-]*:\/\/[^/?#\s]+$/i.test(o)) {
      issues.push({
        file: '',
        path: `/origins/${i}`,
        message: `"${o}" is not an origin (scheme://host[:port], no path), "*" or /regex/`,
      });
    }
  });
  if (issues.length > 0) throw new ConfigError(issues);
}

function isRegexEntry(o: string): boolean {
  return o.length > 2 && o.startsWith('/') && o.endsWith('/');
}

/** One matcher for the whole list: exact origins in a Set, wildcards and regexes tried in order. */
function compileOrigins(origins: readonly string[]): (origin: string) => boolean {
  if (origins.includes('*')) return () => true;
  const exact = new Set<string>();
  const patterns: RegExp[] = [];
  for (const o of origins) {
    if (isRegexEntry(o)) patterns.push(new RegExp(o.slice(1, -1)));
    else if (o.includes('*'))
      patterns.push(
        new RegExp(`^${o.split('*').map(escapeRegExp).join('[a-z0-9-]+(?:\\.[a-z0-9-]+)*')}$`, 'i'),
      );
    else exact.add(o.toLowerCase());
  }
  return function originAllowed(origin) {
    if (exact.has(origin.toLowerCase())) return true;
    for (const re of patterns) if (re.test(origin)) return true;
    return false;
  };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
