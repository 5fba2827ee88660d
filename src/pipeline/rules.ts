import { Type as T, type TSchema } from '@sinclair/typebox';
import { compileCheck } from '../config/validate.ts';
import type { SourceDocument } from '../config/yaml.ts';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import type { Route } from '../registry/types.ts';
import type { PolicyKind } from './types.ts';

const StringOrList = T.Union([T.String(), T.Array(T.String(), { minItems: 1 })]);

/** `match` of a policy rule: every given criterion must hold (AND); list entries are OR. */
export const MatchSchema = T.Object(
  {
    service: T.Optional(
      T.Union([StringOrList], {
        description: 'Service name(s) (spec file name without extension). Default: any.',
      }),
    ),
    operations: T.Optional(T.Array(T.String(), { minItems: 1, description: 'operationIds. Default: any.' })),
    tags: T.Optional(
      T.Array(T.String(), { minItems: 1, description: 'Operation tags (any of). Default: any.' }),
    ),
    methods: T.Optional(
      T.Array(T.String(), { minItems: 1, description: 'HTTP methods, any case. Default: any.' }),
    ),
    paths: T.Optional(
      T.Array(T.String(), {
        minItems: 1,
        description: 'Spec path patterns: `*` one segment, `**` any depth, e.g. `/pets/**`. Default: any.',
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * How specific a criterion is. Per policy kind, the matching rule with the highest total wins;
 * on a tie the later rule wins (files in name order, rules in file order).
 */
export const SPECIFICITY = { operations: 16, paths: 8, tags: 4, methods: 2, service: 1 } as const;

/** One rule of a policy file, as loaded. */
export interface PolicyRule {
  file: string;
  /** Index within its file. */
  index: number;
  match: {
    service?: string | string[];
    operations?: string[];
    tags?: string[];
    methods?: string[];
    paths?: string[];
  };
  /** Policy configs by kind name. */
  policies: Record<string, unknown>;
  /** Base folder for relative paths in the configs. */
  baseDir: string;
  /** Line of a JSON pointer within the policy file (for errors found when hooks are created). */
  lineOf?: (pointer: string) => number | undefined;
}

/** The config a route gets for one policy kind, and where it came from. */
export interface ResolvedPolicy {
  kind: PolicyKind;
  config: Record<string, unknown>;
  rule: PolicyRule;
}

/** Build the JSON Schema of a rule from the kinds list (each kind's key is optional). */
export function ruleSchema(kinds: readonly PolicyKind[]): TSchema {
  const props: Record<string, TSchema> = { match: MatchSchema };
  for (const k of kinds) props[k.name] = T.Optional(k.schema);
  return T.Array(T.Object(props, { additionalProperties: false }), {
    description: 'A policy file: a list of rules.',
  });
}

/**
 * Validate a parsed policy file and return its rules. Errors name the file, line and field.
 * An empty file is an empty list.
 */
export function parsePolicyFile(
  source: SourceDocument,
  kinds: readonly PolicyKind[],
  baseDir: string,
): PolicyRule[] {
  const value = source.value ?? [];
  const issues: ConfigIssue[] = compileCheck(ruleSchema(kinds))(value, source);
  const rules = Array.isArray(value) ? (value as Array<Record<string, unknown>>) : [];
  rules.forEach((r, i) => {
    if (r && typeof r === 'object' && !('match' in r)) {
      issues.push({
        file: source.file,
        line: source.lineOf(`/${i}`),
        path: `/${i}`,
        message: 'missing required field "match"',
      });
    }
    const names = r && typeof r === 'object' ? Object.keys(r).filter((k) => k !== 'match') : [];
    if (r && typeof r === 'object' && names.length === 0) {
      issues.push({
        file: source.file,
        line: source.lineOf(`/${i}`),
        path: `/${i}`,
        message: 'rule attaches no policy',
      });
    }
  });
  if (issues.length > 0) throw new ConfigError(dedupe(issues));
  return rules.map((r, index) => {
    const { match, ...policies } = r;
    return {
      file: source.file,
      index,
      match: (match ?? {}) as PolicyRule['match'],
      policies,
      baseDir,
      lineOf: source.lineOf,
    };
  });
}

/** A compiled rule matcher: precomputed once per rule. */
export function compileMatch(rule: PolicyRule): (route: Route) => boolean {
  const m = rule.match;
  const services =
    m.service === undefined ? undefined : new Set(Array.isArray(m.service) ? m.service : [m.service]);
  const operations = m.operations && new Set(m.operations);
  const tags = m.tags && new Set(m.tags);
  const methods = m.methods && new Set(m.methods.map((x) => x.toUpperCase()));
  const paths = m.paths?.map(globToRegExp);
  return function matchRule(route) {
    if (services && !services.has(route.service)) return false;
    if (operations && !operations.has(route.operationId)) return false;
    if (tags && !route.tags.some((t) => tags.has(t))) return false;
    if (methods && !methods.has(route.method)) return false;
    if (paths && !paths.some((re) => re.test(route.specPath))) return false;
    return true;
  };
}

/** Specificity of a rule (see SPECIFICITY). */
export function specificity(rule: PolicyRule): number {
  let score = 0;
  for (const [key, weight] of Object.entries(SPECIFICITY)) {
    if (rule.match[key as keyof PolicyRule['match']] !== undefined) score += weight;
  }
  return score;
}

/**
 * For one route: per policy kind, the config of the most specific matching rule (later wins ties).
 * Returned in phase order is not guaranteed here; chain building orders by phase.
 */
export function resolvePolicies(
  route: Route,
  rules: readonly CompiledRule[],
  kinds: readonly PolicyKind[],
): ResolvedPolicy[] {
  const out: ResolvedPolicy[] = [];
  for (const kind of kinds) {
    let best: CompiledRule | undefined;
    for (const r of rules) {
      if (!(kind.name in r.rule.policies) || !r.matches(route)) continue;
      if (!best || r.specificity >= best.specificity) best = r;
    }
    if (best)
      out.push({ kind, config: best.rule.policies[kind.name] as Record<string, unknown>, rule: best.rule });
  }
  return out;
}

export interface CompiledRule {
  rule: PolicyRule;
  matches: (route: Route) => boolean;
  specificity: number;
}

export function compileRules(rules: readonly PolicyRule[]): CompiledRule[] {
  return rules.map((rule) => ({ rule, matches: compileMatch(rule), specificity: specificity(rule) }));
}

/** `*` = one path segment, `**` = any number of segments; everything else literal. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else re += c.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function dedupe(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
