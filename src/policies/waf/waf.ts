import { type Static, Type as T } from '@sinclair/typebox';
import { ConfigError, type ConfigIssue, ProblemError } from '../../errors.ts';
import type { PolicyKind, RequestContext } from '../../pipeline/types.ts';
import { compileEngine } from './engine.ts';
import { REQUEST_RULES, RULES } from './rules/index.ts';
import type { InspectResult } from './types.ts';

/** Default anomaly threshold: one critical rule (score 5) blocks, weaker signals must add up. */
export const DEFAULT_THRESHOLD = 5;
/** Default number of body bytes inspected. */
export const DEFAULT_MAX_BODY_BYTES = 128 * 1024;
/** Id reported when a body is larger than `maxBodyBytes` and `overLimit` is `block`. */
export const BODY_OVER_LIMIT_RULE = 'waf-body-over-limit';

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
      T.Integer({ minimum: 0, description: 'Request body bytes inspected. Default 131072 (128 KiB).' }),
    ),
    overLimit: T.Optional(
      T.Union([T.Literal('block'), T.Literal('inspect-prefix')], {
        description:
          'A body larger than maxBodyBytes is blocked, or only its first maxBodyBytes are inspected. Default block.',
      }),
    ),
    exclusions: T.Optional(
      T.Array(
        T.Object(
          {
            target: T.String({
              pattern: '^(?:path|(?:query|header|cookie|body):.+)$',
              description:
                'What is excluded: `path`, `query:<name>`, `header:<name>`, `cookie:<name>` or `body:<field>` (JSON path with dots, e.g. body:post.content; covers the fields below it).',
            }),
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

const KNOWN_RULE_IDS = new Set([
  ...RULES.map((r) => r.id),
  ...REQUEST_RULES.map((r) => r.id),
  BODY_OVER_LIMIT_RULE,
]);

function hasBody(ctx: RequestContext): boolean {
  const h = ctx.req.headers;
  const cl = h['content-length'];
  return (cl !== undefined && cl !== '0') || h['transfer-encoding'] !== undefined;
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
  create(config, deps) {
    const issues: ConfigIssue[] = [];
    (config.exclusions ?? []).forEach((ex, i) => {
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
    const inspectPrefix = config.overLimit === 'inspect-prefix';
    const engine = compileEngine({ paranoia: config.paranoia ?? 1, exclusions: config.exclusions ?? [] });
    const routeLimit = Math.max(deps.config.limits.bodyBytes, maxBodyBytes);

    return async function waf(ctx: RequestContext): Promise<void> {
      const req = ctx.req;
      let body: Buffer | undefined;
      let overLimit = false;
      if (hasBody(ctx)) {
        const declared = Number(req.headers['content-length'] ?? Number.NaN);
        if (!inspectPrefix && declared > maxBodyBytes) overLimit = true;
        else {
          const full = await deps.readBody(ctx, inspectPrefix ? routeLimit : maxBodyBytes);
          body = full.length > maxBodyBytes ? full.subarray(0, maxBodyBytes) : full;
        }
      }
      const result: InspectResult = engine.inspect({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body,
        bodyTruncated: body !== undefined && ctx.body !== undefined && ctx.body.length > body.length,
      });
      if (overLimit) {
        result.matches.push({
          id: BODY_OVER_LIMIT_RULE,
          family: 'protocol',
          score: threshold,
          target: 'body',
        });
        result.score += threshold;
      }
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
    };
  },
};
