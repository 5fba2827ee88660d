import type { OutgoingHttpHeaders } from 'node:http';
import { type Static, Type as T } from '@sinclair/typebox';
import type { Decision, PolicyKind } from '../../pipeline/types.ts';

/**
 * The headers `securityHeaders: true` adds to every upstream response that does not carry its own
 * value: defaults for a JSON API (nothing to frame, embed or execute). `response.set` overrides
 * one, `response.remove` drops one.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-permitted-cross-domain-policies': 'none',
});

/** Added with the security headers, on TLS requests only (RFC 6797 §7.2: ignored over plain HTTP). */
export const HSTS_VALUE = 'max-age=31536000; includeSubDomains';

/** RFC 9110 token: what a header name may be. */
const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/** No CR, LF or NUL: a value can never split the header block. */
const HEADER_VALUE = '^[^\\r\\n\\u0000]*$';

const HeaderChanges = (what: string) =>
  T.Object(
    {
      set: T.Optional(
        T.Record(T.String({ pattern: HEADER_NAME }), T.String({ pattern: HEADER_VALUE }), {
          additionalProperties: false,
          description: `Headers to set on the ${what} (replacing any value), by name. Default: none.`,
        }),
      ),
      remove: T.Optional(
        T.Array(T.String({ pattern: HEADER_NAME }), {
          description: `Header names to remove from the ${what}. Default: none.`,
        }),
      ),
    },
    { additionalProperties: false },
  );

/** `headers` config: header rewriting on the way up and down. */
export const HeadersSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description:
          'enforce applies the changes; dry-run only records what it would change. Default enforce.',
      }),
    ),
    request: T.Optional(
      HeaderChanges(
        "request sent upstream (forwarding headers such as X-Forwarded-For and Host are the gateway's own)",
      ),
    ),
    response: T.Optional(HeaderChanges('response sent to the client')),
    securityHeaders: T.Optional(
      T.Boolean({
        description:
          'Add X-Content-Type-Options, X-Frame-Options, Referrer-Policy, Content-Security-Policy, Cross-Origin-*-Policy and, on TLS, Strict-Transport-Security to responses that lack them. Default false.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Set and remove request/response headers; security headers.' },
);

export type HeadersConfig = Static<typeof HeadersSchema>;

type Edit = (status: number, headers: OutgoingHttpHeaders) => void;

/**
 * The `headers` kind. Request changes go into the upstream request; response changes are one
 * precomputed edit of the upstream response, in this order: remove listed headers, set
 * configured ones, then add security headers the response does not already carry.
 */
export const headersPolicy: PolicyKind<typeof HeadersSchema> = {
  name: 'headers',
  phase: 'headers',
  schema: HeadersSchema,
  create(config) {
    const lower = (r: Record<string, string> | undefined) =>
      Object.fromEntries(Object.entries(r ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    const requestSet = lower(config.request?.set);
    const requestRemove = (config.request?.remove ?? []).map((n) => n.toLowerCase());
    const responseSet = lower(config.response?.set);
    const responseRemove = (config.response?.remove ?? []).map((n) => n.toLowerCase());
    const removed = new Set(responseRemove);
    const defaults = (tls: boolean) => {
      if (!config.securityHeaders) return {};
      const all: Record<string, string> = { ...SECURITY_HEADERS };
      if (tls) all['strict-transport-security'] = HSTS_VALUE;
      for (const name of Object.keys(all)) if (removed.has(name) || name in responseSet) delete all[name];
      return all;
    };
    const editFor = (tls: boolean): Edit | undefined => {
      const fill = defaults(tls);
      if (
        responseRemove.length === 0 &&
        Object.keys(responseSet).length === 0 &&
        Object.keys(fill).length === 0
      )
        return undefined;
      return function editResponseHeaders(_status, out) {
        for (const name of responseRemove) delete out[name];
        for (const name in responseSet) out[name] = responseSet[name];
        for (const name in fill) if (out[name] === undefined) out[name] = fill[name];
      };
    };
    const plainEdit = editFor(false);
    const tlsEdit = editFor(true);

    if (config.mode === 'dry-run') {
      const detail = (tls: boolean) => ({
        request: { set: requestSet, remove: requestRemove },
        response: { set: responseSet, remove: responseRemove, securityHeaders: defaults(tls) },
      });
      const plain: Decision = {
        policy: 'headers',
        outcome: 'allow',
        reason: 'dry-run',
        detail: detail(false),
      };
      const tls: Decision = { policy: 'headers', outcome: 'allow', reason: 'dry-run', detail: detail(true) };
      return function headersDryRun(ctx) {
        ctx.decisions.push(ctx.req.protocol === 'https' ? tls : plain);
      };
    }

    return function headers(ctx) {
      for (const name of requestRemove) ctx.removeUpstreamHeaders.add(name);
      for (const name in requestSet) ctx.setUpstreamHeaders[name] = requestSet[name] as string;
      const edit = ctx.req.protocol === 'https' ? tlsEdit : plainEdit;
      if (edit) ctx.responseEdits.push(edit);
    };
  },
};
