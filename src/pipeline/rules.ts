import { Type as T, type TSchema } from '@sinclair/typebox';
import { compileCheck } from '../config/validate.ts';
import type { SourceDocument } from '../config/yaml.ts';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import { HTTP_METHODS } from '../registry/load-service.ts';
import { PASS_THROUGH_METHODS, passThroughRoute } from '../registry/pass-through.ts';
import type { Route, Service } from '../registry/types.ts';
import type { PolicyKind } from './types.ts';

const StringOrList = T.Union([T.String(), T.Array(T.String(), { minItems: 1 })]);
/** Methods a route can have (`match.methods` may name only these, any case). */
const ROUTE_METHODS: readonly string[] = HTTP_METHODS.map((m) => m.toUpperCase());

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

/** A name in a rule's `match` that the loaded services do not have, or a match that selects nothing. */
export interface RuleTargetProblem {
  rule: PolicyRule;
  issue: ConfigIssue;
  /**
   * The entry names a service that is not loaded. Such a rule selects nothing of that service,
   * so it cannot leave another route unprotected (see Runtime on reload).
   */
  unknownService: boolean;
  /** The service name that is not loaded (with `unknownService`). */
  service?: string;
}

/**
 * Check that every rule means something against the services loaded: each service, operationId
 * and tag it names exists (operations and tags in the services it selects), each method is an HTTP
 * method, each path pattern matches a route of those services, and the match as a whole selects
 * at least one route. A typo must never turn a policy into a silent no-op. Issues name the
 * policy file, line and JSON path of the entry, with a did-you-mean where one is close.
 */
export function checkRuleTargets(
  rules: readonly PolicyRule[],
  services: readonly Service[],
): RuleTargetProblem[] {
  const byName = new Map(services.map((s) => [s.name, s]));
  const problems: RuleTargetProblem[] = [];
  for (const rule of rules) {
    const before = problems.length;
    const report = (pointer: string, message: string, service?: string) => {
      const path = `/${rule.index}/match${pointer}`;
      const issue = { file: rule.file, line: rule.lineOf?.(path), path, message };
      problems.push({ rule, issue, unknownService: service !== undefined, service });
    };
    const m = rule.match;
    const selected: Service[] = m.service === undefined ? [...services] : [];
    if (m.service !== undefined) {
      const listed = Array.isArray(m.service);
      (listed ? (m.service as string[]) : [m.service as string]).forEach((name, i) => {
        const service = byName.get(name);
        if (service) selected.push(service);
        else
          report(
            listed ? `/service/${i}` : '/service',
            `no service "${name}"${didYouMean(name, byName.keys())}`,
            name,
          );
      });
    }
    const routes = selected.flatMap((s) => s.routes);
    const scope =
      m.service === undefined
        ? 'in any service'
        : `in service${selected.length > 1 ? 's' : ''} ${selected.map((s) => s.name).join(', ')}`;
    // Against unknown services only, operations, tags and paths cannot be checked.
    if (selected.length > 0) {
      const operationIds = routes.map((r) => r.operationId);
      const tags = routes.flatMap((r) => r.tags);
      const specPaths = routes.map((r) => r.specPath);
      m.operations?.forEach((op, i) => {
        if (operationIds.includes(op)) return;
        report(`/operations/${i}`, `no operation "${op}" ${scope}${didYouMean(op, operationIds)}`);
      });
      m.tags?.forEach((tag, i) => {
        if (tags.includes(tag)) return;
        report(`/tags/${i}`, `no operation tagged "${tag}" ${scope}${didYouMean(tag, tags)}`);
      });
      m.paths?.forEach((pattern, i) => {
        const re = globToRegExp(pattern);
        if (specPaths.some((p) => re.test(p))) return;
        report(
          `/paths/${i}`,
          `path pattern "${pattern}" matches no path ${scope}${didYouMean(pattern, specPaths)}`,
        );
      });
    }
    m.methods?.forEach((method, i) => {
      if (ROUTE_METHODS.includes(method.toUpperCase())) return;
      const hint = didYouMean(method.toUpperCase(), ROUTE_METHODS);
      report(`/methods/${i}`, `"${method}" is not an HTTP method (${ROUTE_METHODS.join(', ')})${hint}`);
    });
    if (problems.length > before) continue;
    const matches = compileMatch(rule);
    // A pass-through service's undeclared paths count: a service-wide rule protects them.
    const passThrough = selected
      .filter((s) => s.settings.passThrough && !s.settings.mock)
      .flatMap((s) => PASS_THROUGH_METHODS.map((method) => passThroughRoute(s, method)));
    if (!routes.some(matches) && !passThrough.some(matches)) {
      const what =
        m.service === undefined && services.length === 0
          ? 'no service is loaded'
          : `no route ${scope} meets every criterion`;
      report('', `match selects no route (${what}); a rule that applies nowhere is an error`);
    }
  }
  return problems;
}

/**
 * ` (did you mean X?)` for the closest candidate within a few edits (case ignored), else ''.
 * Load-time only, over the names of the loaded services: a plain edit distance, no dependency.
 */
function didYouMean(name: string, candidates: Iterable<string>): string {
  const lower = name.toLowerCase();
  const limit = Math.max(2, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of new Set(candidates)) {
    const d = editDistance(lower, c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= limit ? ` (did you mean ${best}?)` : '';
}

/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number) => d[i]?.[j] as number;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        row[j] = Math.min(at(i, j), at(i - 2, j - 2) + 1);
    }
  }
  return at(a.length, b.length);
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
