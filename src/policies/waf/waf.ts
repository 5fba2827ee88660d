import { type Static, Type as T } from '@sinclair/typebox';
import { ConfigError, type ConfigIssue, ProblemError } from '../../errors.ts';
import { cookiesOf } from '../../net/cookies.ts';
import { hasBody } from '../../net/read-body.ts';
import type { Hook, PolicyKind, RequestContext } from '../../pipeline/types.ts';
import { DEFAULT_MAX_VALUE_BYTES, DEFAULT_MAX_VALUES } from './limits.ts';
import type { InspectResult } from './types.ts';

/** Default anomaly threshold: one critical rule (score 5) blocks, weaker signals must add up. */
export const DEFAULT_THRESHOLD = 5;
/** Default number of body bytes inspected. */
export const DEFAULT_MAX_BODY_BYTES = 128 * 1024;
/** Id of the decision reason when an inspection limit was hit (logs, span events). */
export const LIMIT_REASON = 'limit';
export { DEFAULT_MAX_VALUE_BYTES, DEFAULT_MAX_VALUES };

/** Which inspection limit a request went past (the `limit` of the problem and the decision). */
export type WafLimit = 'values' | 'valueBytes' | 'bodyBytes';

const MULTIPART_DETAIL = 'The multipart body is malformed or its parts can be read more than one way';

const FAMILIES = ['sqli', 'xss', 'rce', 'lfi', 'rfi', 'php', 'java', 'protocol'] as const;

/** `waf` config: anomaly-scoring request inspection. */
export const WafSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('block'), T.Literal('dry-run'), T.Literal('detect')], {
        description:
          'enforce (or block) rejects with 403 when the score reaches the threshold; dry-run (or detect) only logs and records what it would block. Default enforce.',
      }),
    ),
    paranoia: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 4,
        description:
          'Paranoia level 1-4: higher levels add stricter rules (more detection, more false positives). Default 1.',
      }),
    ),
    threshold: T.Optional(
      T.Integer({
        minimum: 1,
        description:
          'Anomaly score at which a request is blocked (critical rules score 5, warnings 3). Default 5.',
      }),
    ),
    maxBodyBytes: T.Optional(
      T.Integer({
        minimum: 0,
        description:
          'Request body bytes inspected (after Content-Encoding is decoded). Default 131072 (128 KiB).',
      }),
    ),
    maxValues: T.Optional(
      T.Integer({
        minimum: 1,
        description:
          'Values inspected per request: query, header, cookie and body names and values, multipart parts, all counted together. Default 4096.',
      }),
    ),
    maxValueBytes: T.Optional(
      T.Integer({
        minimum: 1,
        description:
          'Bytes inspected of one value (a parameter, header, field or raw body). Default 65536 (64 KiB).',
      }),
    ),
    onLimit: T.Optional(
      T.Union([T.Literal('block'), T.Literal('inspect-prefix')], {
        description:
          'A request past maxValues, maxValueBytes or maxBodyBytes: block (403 waf-limit-exceeded, or 413 waf-body-limit-exceeded for the body, naming the limit) or inspect-prefix (inspect the first values and bytes that fit and record that a limit was hit). Never passed uninspected. Default block.',
      }),
    ),
    overLimit: T.Optional(
      T.Union([T.Literal('block'), T.Literal('inspect-prefix')], {
        description: 'Former name of onLimit, still accepted (onLimit wins when both are set).',
      }),
    ),
    exclusions: T.Optional(
      T.Array(
        T.Object(
          {
            target: T.Optional(
              T.String({
                pattern: '^(?:path|(?:query|header|cookie|body):.+)$',
                description:
                  'What is excluded: `path` (the path and its parameters), `query:<name>`, `header:<name>`, `cookie:<name>` or `body:<field>` (JSON path with dots, e.g. body:post.content; covers the fields below it). Optional with `paths`: every value of requests to those paths. Required otherwise.',
              }),
            ),
            paths: T.Optional(
              T.Array(T.String({ pattern: '^/', minLength: 1 }), {
                minItems: 1,
                description:
                  'Request paths the exclusion is limited to, as received (canonical, percent-encoded): segments as written, `*` or `{name}` for one segment, a trailing `/**` for the path and everything below it (e.g. `/cms/posts/{id}`, `/admin/**`). Default: every path the policy covers.',
              }),
            ),
            rules: T.Optional(
              T.Array(T.String(), { description: 'Rule ids not run on the target. Default: none.' }),
            ),
            families: T.Optional(
              T.Array(T.Union(FAMILIES.map((f) => T.Literal(f))), {
                description:
                  'Rule families not run on the target. Default: none. With neither rules nor families, no rule runs on it.',
              }),
            ),
          },
          { additionalProperties: false },
        ),
        {
          description:
            'Values a rule or family must not inspect on this route (known false positives). Default: none.',
        },
      ),
    ),
  },
  {
    additionalProperties: false,
    description:
      'Web application firewall: SQLi, XSS, command injection, LFI/RFI, PHP/Java injection, protocol checks.',
  },
);

export type WafConfig = Static<typeof WafSchema>;

/** Every rule id, for checking `exclusions`; computed when the first WAF route is created. */
let knownRuleIds: Set<string> | undefined;

function limitProblem(limit: WafLimit, max: number): ProblemError {
  return limit === 'bodyBytes'
    ? new ProblemError(
        'PC_WAF_BODY_LIMIT',
        `The request body is longer than the ${max} bytes the WAF inspects`,
        {
          extensions: { limit, max },
        },
      )
    : new ProblemError(
        'PC_WAF_LIMIT',
        limit === 'values'
          ? `The request has more than the ${max} values the WAF inspects`
          : `A request value is longer than the ${max} bytes the WAF inspects`,
        { extensions: { limit, max } },
      );
}

/**
 * The `waf` kind. Rules are compiled once per route; per request the path, query, headers,
 * cookies and body (read once, up to `maxBodyBytes`) are normalised and scored. A rejection is
 * PC_WAF_BLOCKED with the rule ids and the score, never the matched payload.
 */
export const wafPolicy: PolicyKind<typeof WafSchema> = {
  name: 'waf',
  phase: 'waf',
  schema: WafSchema,
  async create(config, deps) {
    // The engine and its rules load only when a route uses the WAF.
    const [{ compileEngine }, { REQUEST_RULES, RULES }] = await Promise.all([
      import('./engine.ts'),
      import('./rules/index.ts'),
    ]);
    knownRuleIds ??= new Set([...RULES.map((r) => r.id), ...REQUEST_RULES.map((r) => r.id)]);
    const KNOWN_RULE_IDS = knownRuleIds;
    const issues: ConfigIssue[] = [];
    (config.exclusions ?? []).forEach((ex, i) => {
      if (ex.target === undefined && ex.paths === undefined)
        issues.push({
          file: '',
          path: `/exclusions/${i}`,
          message: 'an exclusion needs a target, paths or both (without either it would exclude everything)',
        });
      ex.rules?.forEach((id, j) => {
        if (!KNOWN_RULE_IDS.has(id))
          issues.push({
            file: '',
            path: `/exclusions/${i}/rules/${j}`,
            message: `unknown WAF rule id "${id}"`,
          });
      });
    });
    if (issues.length > 0) throw new ConfigError(issues);

    const enforce = config.mode !== 'dry-run' && config.mode !== 'detect';
    const threshold = config.threshold ?? DEFAULT_THRESHOLD;
    const maxBodyBytes = config.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const maxValues = config.maxValues ?? DEFAULT_MAX_VALUES;
    const maxValueBytes = config.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    // Dry-run never blocks: past a limit it inspects what fits, like inspect-prefix.
    const block = (config.onLimit ?? config.overLimit ?? 'block') === 'block' && enforce;
    const engine = compileEngine({
      paranoia: config.paranoia ?? 1,
      exclusions: config.exclusions ?? [],
      maxValues,
      maxValueBytes,
      onLimit: block ? 'block' : 'inspect-prefix',
    });
    // The whole body is read when only a prefix is inspected: it is forwarded from that buffer
    // (the runtime clamps every read to limits.bodyBytes).
    const readLimit = block ? maxBodyBytes : Math.max(deps.config.limits.bodyBytes, maxBodyBytes);
    const maxMax = { values: maxValues, valueBytes: maxValueBytes, bodyBytes: maxBodyBytes };

    const limitHit = (ctx: RequestContext, limit: WafLimit): void => {
      const detail = { limit, max: maxMax[limit] };
      deps.logger.warn(
        { policy: 'waf', route: ctx.route.operationId, ...detail },
        block
          ? 'WAF blocked a request past an inspection limit'
          : 'WAF inspected a prefix of a request past a limit',
      );
      if (block) {
        ctx.decisions.push({ policy: 'waf', outcome: 'deny', reason: LIMIT_REASON, detail });
        throw limitProblem(limit, maxMax[limit]);
      }
      ctx.decisions.push({
        policy: 'waf',
        outcome: enforce ? 'allow' : 'would-deny',
        reason: LIMIT_REASON,
        detail,
      });
    };

    /** The body as inspected: the read one, cut to maxBodyBytes (past it, limitHit decides). */
    const inspectedBody = (ctx: RequestContext, full: Buffer): Buffer => {
      if (full.length <= maxBodyBytes) return full;
      limitHit(ctx, 'bodyBytes');
      return full.subarray(0, maxBodyBytes);
    };
    const readFailed = (ctx: RequestContext, err: unknown): never => {
      // Past the WAF's own limit (not the gateway's): while reading, or once decoded.
      if (
        block &&
        err instanceof ProblemError &&
        err.code === 'PC_BODY_TOO_LARGE' &&
        maxBodyBytes < deps.config.limits.bodyBytes
      )
        limitHit(ctx, 'bodyBytes');
      throw err;
    };

    // Not async: a request without a body is judged without a promise (the chain stays
    // synchronous, see runChain), and so is one whose body the chain read ahead (readAhead).
    // Otherwise (a body refused before it was read, a hook called on its own) it waits for it.
    const hook: Hook = function waf(ctx: RequestContext): void | Promise<void> {
      if (!hasBody(ctx.req.raw)) return judge(ctx, undefined);
      if (block && Number(ctx.req.headers['content-length']) > maxBodyBytes) limitHit(ctx, 'bodyBytes');
      if (ctx.body !== undefined) return judge(ctx, inspectedBody(ctx, ctx.body));
      return deps.readBody(ctx, readLimit).then(
        (full) => judge(ctx, inspectedBody(ctx, full)),
        (err: unknown) => readFailed(ctx, err),
      );
    };
    hook.readAhead = (ctx, then) => deps.readBodyThen(ctx, readLimit, then);
    return hook;

    /** Inspect the request (and its body, when it has one) and decide. */
    function judge(ctx: RequestContext, body: Buffer | undefined): void {
      const req = ctx.req;
      const target = ctx.target;
      const result: InspectResult = engine.inspect({
        method: req.method,
        url: target.query === '' ? target.path : `${target.path}?${target.query}`,
        params: ctx.params,
        headers: req.headers,
        cookies: cookiesOf(ctx),
        body,
        bodyTruncated: body !== undefined && ctx.body !== undefined && ctx.body.length > body.length,
      });
      if (result.bodyError !== undefined && enforce) {
        ctx.decisions.push({
          policy: 'waf',
          outcome: 'deny',
          reason: 'multipart',
          detail: { reason: result.bodyError },
        });
        throw new ProblemError('PC_BAD_REQUEST', MULTIPART_DETAIL, {
          extensions: { reason: `multipart-${result.bodyError}` },
        });
      }
      if (result.limit !== undefined) limitHit(ctx, result.limit);
      if (result.score < threshold) return;

      const rules = result.matches.map((m) => m.id);
      const detail = {
        rules,
        score: result.score,
        // Target keys carry parameter names, which the client chooses: kept short and inert in logs.
        targets: [...new Set(result.matches.map((m) => m.target.replace(/[^\w.:@[\]-]/g, '?').slice(0, 80)))],
      };
      deps.logger.warn(
        { policy: 'waf', route: ctx.route.operationId, mode: enforce ? 'enforce' : 'dry-run', ...detail },
        enforce ? 'WAF blocked a request' : 'WAF would block a request (dry-run)',
      );
      if (!enforce) {
        ctx.decisions.push({ policy: 'waf', outcome: 'would-deny', reason: 'anomaly_score', detail });
        return;
      }
      ctx.decisions.push({ policy: 'waf', outcome: 'deny', reason: 'anomaly_score', detail });
      // When the path itself was judged, it is the payload: the problem's `instance` (the path) is
      // left out so the answer never echoes it.
      const pathJudged = result.matches.some((m) => m.target === 'path' || m.target === 'request');
      throw new ProblemError('PC_WAF_BLOCKED', 'The request matched WAF rules', {
        extensions: { rules, score: result.score },
        omitInstance: pathJudged,
      });
    }
  },
};
