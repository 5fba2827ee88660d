/**
 * `portcullis explain` and `portcullis test`: what the gateway would do with a request, without
 * calling any upstream. The request goes through the real gateway in-process (Fastify inject):
 * the same canonical target, route table and policy chain as `start`, with a forwarder that
 * answers instead of connecting, no active health checks, in-memory state (a fresh rate-limit
 * store: the first request of a window) and no admin port, tracing or watch.
 */
import { decodeJwt, type JWTPayload } from 'jose';
import type { GatewayConfig } from './config/schema.ts';
import type { Gateway } from './gateway.ts';
import type { Exchange } from './lifecycle/exchange.ts';
import { createLogger } from './logger.ts';
import type { PolicyRule } from './pipeline/rules.ts';
import type { Decision } from './pipeline/types.ts';
import { publicTemplate } from './registry/load-service.ts';
import type { ForwardTarget } from './upstream/forward.ts';

/** One request to explain. */
export interface ExplainRequest {
  method: string;
  /** Origin-form target as a client sends it: path and optional query, e.g. `/petstore/pets?limit=2`. */
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Client address the request comes from. Default 127.0.0.1. */
  ip?: string;
}

/** What one policy of the route decided for the request. */
export interface PolicyOutcome {
  kind: string;
  phase: string;
  mode: string;
  /** `file#rule`: the policy file (base name) and the index of the rule that supplied it. */
  rule: string;
  /** `not-reached`: an earlier policy refused the request. `allow` when it let it through silently. */
  decision: Decision['outcome'] | 'not-reached';
  reason?: string;
  detail?: Record<string, unknown>;
}

export interface Explanation {
  method: string;
  path: string;
  /** The canonical target the gateway routes on (path and query); absent when the target was refused. */
  target?: string;
  route?: { method: string; path: string; operationId: string; service: string; passThrough?: boolean };
  policies: PolicyOutcome[];
  /** Where it would go: the service's upstream group, or the mock responder. Absent when refused before. */
  upstream?:
    | { service: string; mock: true }
    | { service: string; loadBalancing: string; upstreams: string[] };
  /** The status the client would get (200 for "forwarded": the upstream decides the real one). */
  status: number;
  /** Problem code when the gateway answered with a problem. */
  code?: string;
  /** True when the request would be sent to an upstream. */
  forwarded: boolean;
  /** What explain cannot tell offline. */
  notes: string[];
}

/** Header on the stand-in answer of a forwarded request. */
const FORWARDED_HEADER = 'x-portcullis-explain';

export interface Explainer {
  explain(request: ExplainRequest): Promise<Explanation>;
  close(): Promise<void>;
}

/**
 * Load the configuration as `start` does (strictly: any rejected file is an error, as in
 * `validate`) and return an explainer over it. Throws ConfigError.
 */
export async function createExplainer(config: GatewayConfig): Promise<Explainer> {
  const { createGateway } = await import('./gateway.ts');
  let exchange: Exchange | undefined;
  let forwardedTo: ForwardTarget | undefined;
  const offlineConfig: GatewayConfig = {
    ...config,
    // Never bound: requests are injected. Plain HTTP so no certificate is read.
    listen: { http: { port: 0, host: '127.0.0.1', redirectToHttps: false } },
    admin: undefined,
    watch: false,
    state: {},
    telemetry: { ...config.telemetry, otlp: undefined, accessLog: false },
  };
  const gateway: Gateway = await createGateway(offlineConfig, {
    logger: createLogger('silent'),
    strict: true,
    offline: {
      forward: function explainForward(ex, to) {
        forwardedTo = to;
        ex.req.raw.resume();
        ex.res.writeHead(200, { 'content-type': 'application/json', [FORWARDED_HEADER]: 'forwarded' });
        ex.res.end('{"explain":"forwarded; no upstream was called"}');
      },
      onExchange(ex) {
        exchange = ex;
      },
    },
  });
  const app = gateway.app;
  if (!app) throw new Error('explain: no public app');
  return {
    async explain(request) {
      exchange = undefined;
      forwardedTo = undefined;
      const res = await app.inject({
        method: request.method.toUpperCase() as 'GET',
        url: request.path,
        headers: request.headers,
        payload: request.body,
        remoteAddress: request.ip ?? '127.0.0.1',
      });
      const ex = exchange as Exchange | undefined;
      const forwarded = res.headers[FORWARDED_HEADER] === 'forwarded';
      let code: string | undefined;
      if (String(res.headers['content-type'] ?? '').startsWith('application/problem+json')) {
        try {
          code = (res.json() as { code?: string }).code;
        } catch {
          code = undefined;
        }
      }
      return describe(
        request,
        gateway.runtime.snapshot?.rules ?? [],
        ex,
        res.statusCode,
        code,
        forwarded,
        forwardedTo,
      );
    },
    close: () => gateway.close(),
  };
}

function describe(
  request: ExplainRequest,
  rules: readonly PolicyRule[],
  ex: Exchange | undefined,
  status: number,
  code: string | undefined,
  forwarded: boolean,
  forwardedTo: ForwardTarget | undefined,
): Explanation {
  const out: Explanation = {
    method: request.method.toUpperCase(),
    path: request.path,
    policies: [],
    status,
    code,
    forwarded,
    notes: [],
  };
  const target = ex?.target;
  if (target && target.path !== '')
    out.target = target.query === '' ? target.path : `${target.path}?${target.query}`;
  const entry = ex?.entry;
  if (!entry) return out;
  out.route = {
    method: entry.route.method,
    path: ex?.match
      ? publicTemplate(entry.service.settings.basePath, entry.route.specPath)
      : `${entry.service.settings.basePath} (undeclared path)`,
    operationId: entry.route.operationId,
    service: entry.service.name,
    ...(ex?.match ? {} : { passThrough: true }),
  };
  const decisions = ex?.ctx?.decisions ?? [];
  let stopped = false;
  for (const p of entry.chain.applied) {
    const own = decisions.filter((d) => d.policy === p.kind);
    const last = own.find((d) => d.outcome !== 'allow') ?? own.at(-1);
    const outcome: PolicyOutcome = {
      kind: p.kind,
      phase: p.phase,
      mode: p.mode,
      rule: p.label,
      decision: stopped ? 'not-reached' : (last?.outcome ?? 'allow'),
    };
    if (!stopped && last?.reason) outcome.reason = last.reason;
    if (!stopped && last?.detail && Object.keys(last.detail).length > 0) outcome.detail = last.detail;
    if (last?.outcome === 'deny' || last?.outcome === 'error') stopped = true;
    if (last?.reason === 'jwks_unavailable')
      out.notes.push(
        `${p.kind} (${outcome.rule}): the IdP's signing keys (JWKS) could not be fetched from here, so the token was not verified; with the keys the gateway decides on its signature and claims`,
        ...unverifiedClaims(request, jwtConfigOf(rules, p.file, p.rule)),
      );
    out.policies.push(outcome);
  }
  if (status === 503 && code === 'PC_UPSTREAM_UNAVAILABLE')
    out.notes.push('no upstream is marked healthy in this process (no health checks run here)');
  if (entry.mock) out.upstream = { service: entry.service.name, mock: true };
  else {
    const settings = (forwardedTo ?? entry.target)?.settings ?? entry.service.settings;
    out.upstream = {
      service: entry.service.name,
      loadBalancing: settings.loadBalancing,
      upstreams: settings.upstreams.map((u) => u.url),
    };
  }
  return out;
}

/** The `auth.jwt` block of the rule at `file#index`, if it has one. */
function jwtConfigOf(
  rules: readonly PolicyRule[],
  file: string,
  index: number,
): { issuer?: string; audience?: string | string[] } | undefined {
  const auth = rules.find((r) => r.file === file && r.index === index)?.policies.auth as
    | { jwt?: { issuer?: string; audience?: string | string[] } }
    | undefined;
  return auth?.jwt;
}

/**
 * What can be told offline of the request's bearer token: its claims read without verifying the
 * signature, against the rule's issuer, audience and the clock. Never the token itself.
 */
function unverifiedClaims(
  request: ExplainRequest,
  jwt: { issuer?: string; audience?: string | string[] } | undefined,
): string[] {
  const header = Object.entries(request.headers ?? {}).find(
    ([k]) => k.toLowerCase() === 'authorization',
  )?.[1];
  const token = header?.match(/^Bearer\s+(\S+)$/i)?.[1];
  if (!token) return [];
  let claims: JWTPayload;
  try {
    claims = decodeJwt(token);
  } catch {
    return ['the bearer token is not a JWT: the gateway refuses it whatever the keys'];
  }
  const facts: string[] = [];
  if (claims.sub !== undefined) facts.push(`sub ${claims.sub}`);
  if (jwt?.issuer !== undefined)
    facts.push(
      claims.iss === jwt.issuer ? 'iss matches' : `iss ${claims.iss ?? '(none)'} is not ${jwt.issuer}`,
    );
  const wanted = jwt?.audience === undefined || jwt.audience === 'any' ? [] : [jwt.audience].flat();
  if (wanted.length > 0) {
    const has = [claims.aud ?? []].flat();
    facts.push(
      has.some((a) => wanted.includes(a))
        ? 'aud matches'
        : `aud ${has.join(',') || '(none)'} is not ${wanted.join(' or ')}`,
    );
  }
  if (claims.exp !== undefined)
    facts.push(
      claims.exp * 1000 < Date.now() ? 'expired' : `expires ${new Date(claims.exp * 1000).toISOString()}`,
    );
  return [`unverified token claims: ${facts.join(', ') || 'none the rule checks'}`];
}

/** The explanation as the CLI prints it. */
export function formatExplanation(e: Explanation): string {
  const lines: string[] = [`${e.method} ${e.path}`];
  lines.push(`  target    ${e.target ?? '(refused: not a valid request target)'}`);
  if (e.route) {
    const pass = e.route.passThrough ? ' (pass-through)' : '';
    lines.push(
      `  route     ${e.route.method} ${e.route.path}  ${e.route.operationId}  service ${e.route.service}${pass}`,
    );
  } else if (e.target) lines.push('  route     (none: no declared operation matches)');
  if (e.policies.length > 0) {
    lines.push('  policies  (phase order)');
    const width = Math.max(
      ...e.policies.map((p) => `${p.kind}${p.mode === 'dry-run' ? ' (dry-run)' : ''}`.length),
    );
    const ruleWidth = Math.max(...e.policies.map((p) => p.rule.length));
    for (const p of e.policies) {
      const kind = `${p.kind}${p.mode === 'dry-run' ? ' (dry-run)' : ''}`.padEnd(width);
      const why = p.reason ? ` (${p.reason})` : '';
      lines.push(`    ${kind}  ${p.rule.padEnd(ruleWidth)}  ${p.decision}${why}`);
    }
  } else if (e.route) lines.push('  policies  (none)');
  if (e.upstream)
    lines.push(
      'mock' in e.upstream
        ? `  upstream  mock: answered from the spec's examples`
        : `  upstream  ${e.upstream.service}: ${e.upstream.upstreams.join(' ')} (${e.upstream.loadBalancing})`,
    );
  const result = e.forwarded
    ? 'forwarded to the upstream group (no upstream called here)'
    : `${e.status}${e.code ? ` ${e.code}` : ''}`;
  lines.push(`  result    ${result}`);
  for (const n of e.notes) lines.push(`  note      ${n}`);
  return lines.join('\n');
}

/** One case of a `portcullis test` file. */
export interface TestCase {
  name: string;
  request: ExplainRequest;
  expect: {
    status?: number;
    /** The operationId of the route matched. */
    route?: string;
    service?: string;
    /** The problem code (`PC_...`) of the answer. */
    code?: string;
    /** True: sent to an upstream; false: answered by the gateway (a refusal, a mock, a preflight). */
    forwarded?: boolean;
    /** Decision per policy kind: allow, deny, would-deny, error, not-reached. */
    decisions?: Record<string, string>;
  };
  /** 1-based line of the case in its file. */
  line?: number;
}

const CASE_KEYS = new Set(['name', 'request', 'expect']);
const REQUEST_KEYS = new Set(['method', 'path', 'headers', 'body', 'ip']);
const EXPECT_KEYS = new Set(['status', 'route', 'service', 'code', 'forwarded', 'decisions']);
const OUTCOMES = new Set(['allow', 'deny', 'would-deny', 'error', 'not-reached']);

/**
 * Read a cases file: a YAML list of `{ name, request: { method, path, headers?, body?, ip? },
 * expect: { status?, route?, service?, code?, forwarded?, decisions? } }`. A `body` that is not a
 * string is sent as JSON. Throws ConfigError naming file:line and field for every problem.
 */
export async function readCases(file: string): Promise<TestCase[]> {
  const { readSource } = await import('./config/yaml.ts');
  const { ConfigError } = await import('./errors.ts');
  const source = await readSource(file);
  const issues: import('./errors.ts').ConfigIssue[] = [];
  const issue = (path: string, message: string): void => {
    issues.push({ file, path, line: source.lineOf(path), message });
  };
  const value = source.value;
  if (!Array.isArray(value) || value.length === 0) {
    issue('', 'must be a non-empty list of cases ({ name, request, expect })');
    throw new ConfigError(issues);
  }
  const cases: TestCase[] = [];
  for (const [i, raw] of (value as unknown[]).entries()) {
    const at = `/${i}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      issue(at, 'must be a map');
      continue;
    }
    const c = raw as Record<string, unknown>;
    for (const k of Object.keys(c)) if (!CASE_KEYS.has(k)) issue(`${at}/${k}`, `unknown field "${k}"`);
    if (typeof c.name !== 'string' || c.name === '') issue(`${at}/name`, 'must be a non-empty string');
    const req = c.request as Record<string, unknown> | undefined;
    if (typeof req !== 'object' || req === null) {
      issue(`${at}/request`, 'must be a map with method and path');
      continue;
    }
    for (const k of Object.keys(req))
      if (!REQUEST_KEYS.has(k)) issue(`${at}/request/${k}`, `unknown field "${k}"`);
    if (typeof req.method !== 'string' || !/^[A-Za-z]+$/.test(req.method))
      issue(`${at}/request/method`, 'must be an HTTP method');
    if (typeof req.path !== 'string' || !req.path.startsWith('/'))
      issue(`${at}/request/path`, 'must be a path starting with /');
    const headers = (req.headers ?? {}) as Record<string, unknown>;
    if (typeof headers !== 'object' || Array.isArray(headers))
      issue(`${at}/request/headers`, 'must be a map');
    const exp = (c.expect ?? {}) as Record<string, unknown>;
    if (typeof exp !== 'object' || Object.keys(exp).length === 0)
      issue(`${at}/expect`, 'must state at least one of status, route, service, code, forwarded, decisions');
    for (const k of Object.keys(exp))
      if (!EXPECT_KEYS.has(k)) issue(`${at}/expect/${k}`, `unknown field "${k}"`);
    if (exp.status !== undefined && !Number.isInteger(exp.status))
      issue(`${at}/expect/status`, 'must be an integer');
    for (const k of ['route', 'service', 'code'] as const)
      if (exp[k] !== undefined && typeof exp[k] !== 'string') issue(`${at}/expect/${k}`, 'must be a string');
    if (exp.forwarded !== undefined && typeof exp.forwarded !== 'boolean')
      issue(`${at}/expect/forwarded`, 'must be true or false');
    const decisions = (exp.decisions ?? {}) as Record<string, unknown>;
    for (const [kind, outcome] of Object.entries(decisions))
      if (typeof outcome !== 'string' || !OUTCOMES.has(outcome))
        issue(`${at}/expect/decisions/${kind}`, `must be one of ${[...OUTCOMES].join(', ')}`);
    const body = req.body;
    const bodyText = body === undefined || typeof body === 'string' ? body : JSON.stringify(body);
    const sentHeaders = Object.fromEntries(
      Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]),
    );
    if (body !== undefined && typeof body !== 'string' && !('content-type' in sentHeaders))
      sentHeaders['content-type'] = 'application/json';
    cases.push({
      name: String(c.name),
      line: source.lineOf(at),
      request: {
        method: String(req.method),
        path: String(req.path),
        headers: sentHeaders,
        body: bodyText,
        ip: typeof req.ip === 'string' ? req.ip : undefined,
      },
      expect: exp as TestCase['expect'],
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return cases;
}

/** Each expectation of `c` that `e` does not meet, as `field: expected X, got Y`. */
export function mismatches(c: TestCase, e: Explanation): string[] {
  const out: string[] = [];
  const check = (field: string, want: unknown, got: unknown) => {
    if (want !== undefined && want !== got)
      out.push(
        `${field}: expected ${JSON.stringify(want)}, got ${got === undefined ? '(none)' : JSON.stringify(got)}`,
      );
  };
  check('status', c.expect.status, e.status);
  check('route', c.expect.route, e.route?.operationId);
  check('service', c.expect.service, e.route?.service);
  check('code', c.expect.code, e.code);
  check('forwarded', c.expect.forwarded, e.forwarded);
  for (const [kind, want] of Object.entries(c.expect.decisions ?? {})) {
    const got = e.policies.find((p) => p.kind === kind);
    check(`decisions.${kind}`, want, got ? got.decision : undefined);
  }
  return out;
}
