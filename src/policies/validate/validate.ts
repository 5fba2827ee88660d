import type { OutgoingHttpHeaders } from 'node:http';
import { type Static, Type as T } from '@sinclair/typebox';
import type { ErrorObject, ValidateFunction } from 'ajv';
import fastQuerystring from 'fast-querystring';
import { ProblemError } from '../../errors.ts';
import { cookiesOf } from '../../net/cookies.ts';
import { hasBody } from '../../net/read-body.ts';
import type { Hook, PolicyDeps, PolicyKind, RequestContext } from '../../pipeline/types.ts';
import { repeatedName } from '../waf/json.ts';
import type { Dialect } from './openapi-schema.ts';

/** Most violations listed in one 400 (the rest are counted). */
export const MAX_REPORTED_ERRORS = 20;

/** `validate` config: check requests (and optionally responses) against the route's operation. */
export const ValidateSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description: 'enforce rejects invalid requests with 400; dry-run only records them. Default enforce.',
      }),
    ),
    request: T.Optional(
      T.Boolean({
        description:
          'Validate path, query, header and cookie parameters and the JSON request body against the operation (a body repeating a member name within one object is refused: parsers disagree on which value counts). Default true.',
      }),
    ),
    response: T.Optional(
      T.Boolean({
        description:
          'Check that the upstream answers with a status and content type the operation declares; mismatches are logged and recorded, never blocked (bodies are not validated). Default false.',
      }),
    ),
    maxBodyBytes: T.Optional(
      T.Integer({
        minimum: 0,
        description:
          'Largest JSON body read for validation (413 past it). Default: the gateway limits.bodyBytes.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Request validation against the OpenAPI operation.' },
);

export type ValidateConfig = Static<typeof ValidateSchema>;

/** One violation, as listed in the 400 problem's `errors`. */
export interface Violation {
  in: 'path' | 'query' | 'header' | 'cookie' | 'body';
  /** Parameter name, or JSON pointer into the body (`/owner/name`; `` for the whole body). */
  name: string;
  message: string;
}

type Location = 'path' | 'query' | 'header' | 'cookie';
type Json = Record<string, unknown>;

interface CompiledParam {
  name: string;
  in: Location;
  required: boolean;
  /** Comma-separated form (style simple, or form with explode false) for arrays. */
  splitComma: boolean;
  isArray: boolean;
  /** JSON-encoded parameter (`content: {application/json: ...}`): parse before validating. */
  json: boolean;
  /** The parameter's schema (guides string coercion) and its validator. */
  schema: Json | undefined;
  check: ValidateFunction | undefined;
}

interface CompiledBody {
  required: boolean;
  /** Declared media types; `*` wildcards allowed in either part. */
  mediaTypes: string[];
  /** JSON media type → its validator (non-JSON types are accepted unchecked). */
  json: Map<string, ValidateFunction | undefined>;
}

/**
 * The `validate` kind. At load, every parameter and JSON body schema of the operation is compiled
 * with Ajv (OpenAPI 3.0 via draft-07 with `nullable` etc. rewritten; 3.1 via JSON Schema 2020-12;
 * recursive schemas via `$defs`). Per request it checks parameters (coerced from strings), the
 * Content-Type against the declared media types, and JSON bodies; all violations go into one 400.
 */
export const validatePolicy: PolicyKind<typeof ValidateSchema> = {
  name: 'validate',
  phase: 'validate',
  schema: ValidateSchema,
  async create(config, deps) {
    // Ajv's 2020 and draft-07 dialects and ajv-formats load only when a route validates.
    openapiSchema ??= await import('./openapi-schema.ts');
    // An unchanged spec keeps its Route objects across reloads (Runtime.loadService): its compiled
    // validators are reused rather than compiled again.
    const key = `${JSON.stringify(config)}\0${deps.config.limits.bodyBytes}`;
    let byConfig = COMPILED.get(deps.route);
    const cached = byConfig?.get(key);
    if (cached) return cached;
    const hook = createValidate(config, deps);
    if (!byConfig) {
      byConfig = new Map();
      COMPILED.set(deps.route, byConfig);
    }
    byConfig.set(key, hook);
    return hook;
  },
};

/** The schema compilers (openapi-schema.ts), once the first validate route was created. */
let openapiSchema: typeof import('./openapi-schema.ts') | undefined;

/** Validate hooks by route, then by policy config and body limit (see validatePolicy.create). */
const COMPILED = new WeakMap<object, Map<string, Hook>>();

function createValidate(config: Static<typeof ValidateSchema>, deps: PolicyDeps): Hook {
  const op = deps.route.operation as Json;
  const dialect: Dialect = String(deps.service.document.openapi).startsWith('3.1') ? '3.1' : '3.0';
  const { ajvFor, toJsonSchema } = openapiSchema as typeof import('./openapi-schema.ts');
  const ajv = ajvFor(deps.service.document, dialect);
  const compile = (schema: unknown): ValidateFunction | undefined =>
    schema === undefined ? undefined : ajv.compile(toJsonSchema(schema, dialect));
  const params = ((op.parameters as Json[] | undefined) ?? []).map((p) => compileParam(p, compile));
  const body = compileBody(op.requestBody as Json | undefined, compile);
  const pathParams = compilePathMatcher(deps);
  const maxBytes = config.maxBodyBytes ?? deps.config.limits.bodyBytes;
  const checkResponse = config.response ? responseChecker(op, deps) : undefined;
  const checkRequest = config.request !== false && (params.length > 0 || body !== undefined);

  // Synchronous unless a JSON body has to be read: a GET is checked without a promise, and so is
  // a JSON body the chain read ahead (readAhead: the chain waits for it with a callback).
  const hook: Hook = function validate(ctx) {
    if (checkResponse) ctx.responseEdits.push((status, headers) => checkResponse(ctx, status, headers));
    if (!checkRequest) return;
    const errors: Violation[] = [];
    if (params.length > 0) checkParams(ctx, params, pathParams, errors);
    const reading = body ? checkBody(ctx, body, maxBytes, errors, deps) : undefined;
    if (reading) return reading.then(() => report(errors));
    report(errors);
  };
  if (checkRequest && body?.json.size)
    hook.readAhead = (ctx, then) => {
      // Exactly the bodies checkBody reads: any other is left to stream to the upstream.
      if (jsonBodyType(ctx, body) !== undefined) deps.readBodyThen(ctx, maxBytes, then);
      else then();
    };
  return hook;
}

/** Throw the violations found, if any, as one 400. */
function report(errors: Violation[]): void {
  if (errors.length === 0) return;
  throw new ProblemError(
    'PC_VALIDATION_FAILED',
    `${errors.length} violation${errors.length === 1 ? '' : 's'} of the API contract`,
    {
      extensions: {
        errors: errors.slice(0, MAX_REPORTED_ERRORS),
        ...(errors.length > MAX_REPORTED_ERRORS ? { omitted: errors.length - MAX_REPORTED_ERRORS } : {}),
      },
    },
  );
}

function compileParam(p: Json, compile: (s: unknown) => ValidateFunction | undefined): CompiledParam {
  const where = p.in as Location;
  const content = p.content as Record<string, Json> | undefined;
  const contentSchema = content ? Object.values(content)[0]?.schema : undefined;
  const schema = (p.schema ?? contentSchema) as Json | undefined;
  const type = schema?.type;
  const isArray = type === 'array' || (Array.isArray(type) && type.includes('array'));
  const style =
    (p.style as string | undefined) ?? (where === 'query' || where === 'cookie' ? 'form' : 'simple');
  const explode = (p.explode as boolean | undefined) ?? style === 'form';
  return {
    name: where === 'header' ? String(p.name).toLowerCase() : String(p.name),
    in: where,
    required: p.required === true || where === 'path',
    splitComma: style === 'simple' || (style === 'form' && !explode),
    isArray,
    json: content !== undefined,
    schema,
    check: compile(schema),
  };
}

/** Best-effort string → number/integer/boolean/array coercion guided by the top-level schema. */
function coerce(value: unknown, schema: Json): unknown {
  const types = Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string | undefined];
  if (Array.isArray(value)) {
    const items = (schema.items as Json | undefined) ?? {};
    return types.includes('array') ? value.map((v) => coerce(v, items)) : value;
  }
  if (typeof value !== 'string') return value;
  if (types.includes('array')) return [coerce(value, (schema.items as Json | undefined) ?? {})];
  if (
    (types.includes('integer') || types.includes('number')) &&
    value.trim() !== '' &&
    !Number.isNaN(Number(value))
  )
    return Number(value);
  if (types.includes('boolean') && (value === 'true' || value === 'false')) return value === 'true';
  if (types.includes('null') && value === '') return null;
  return value;
}

function checkParams(
  ctx: RequestContext,
  params: CompiledParam[],
  pathParams: (ctx: RequestContext) => Record<string, string | undefined>,
  errors: Violation[],
): void {
  // The canonical target's query (net/target.ts), never the raw URL: what every policy reads.
  let query: Record<string, string | string[] | undefined> | undefined;
  let path: Record<string, string | undefined> | undefined;
  for (const p of params) {
    let raw: string | string[] | undefined;
    if (p.in === 'query') {
      // fast-querystring: Fastify's own parser, ~6x cheaper than node:querystring (0.07 vs 0.43 µs here).
      query ??= ctx.target.query === '' ? {} : fastQuerystring.parse(ctx.target.query);
      raw = query[p.name];
    } else if (p.in === 'header') raw = ctx.req.headers[p.name];
    else if (p.in === 'cookie') raw = cookiesOf(ctx).values[p.name];
    else {
      path ??= pathParams(ctx);
      raw = path[p.name];
    }
    if (raw === undefined) {
      if (p.required) errors.push({ in: p.in, name: p.name, message: 'is required' });
      continue;
    }
    if (!p.check) continue;
    let value: unknown = raw;
    if (p.json) {
      try {
        value = JSON.parse(Array.isArray(raw) ? (raw[0] as string) : raw);
      } catch {
        errors.push({ in: p.in, name: p.name, message: 'is not valid JSON' });
        continue;
      }
    } else if (p.isArray && typeof raw === 'string' && p.splitComma) value = raw === '' ? [] : raw.split(',');
    else if (!p.isArray && Array.isArray(raw)) {
      errors.push({ in: p.in, name: p.name, message: 'must be given once' });
      continue;
    }
    // Parameters arrive as strings: "5" becomes 5 where the schema wants a number.
    if (!p.check(p.json ? value : coerce(value, p.schema as Json)))
      for (const e of p.check.errors ?? [])
        errors.push({ in: p.in, name: p.name, message: describe(e, e.instancePath) });
  }
}

function compileBody(
  requestBody: Json | undefined,
  compile: (s: unknown) => ValidateFunction | undefined,
): CompiledBody | undefined {
  const content = requestBody?.content as Record<string, Json> | undefined;
  if (!requestBody || !content) return undefined;
  const json = new Map<string, ValidateFunction | undefined>();
  for (const [type, media] of Object.entries(content)) {
    if (isJson(type)) json.set(type.toLowerCase(), compile(media.schema));
  }
  return {
    required: requestBody.required === true,
    mediaTypes: Object.keys(content).map((t) => t.toLowerCase()),
    json,
  };
}

/** The media type of a Content-Type header, lower-cased, without parameters ('' when absent). */
function mediaTypeOf(header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

/** The declared JSON media type whose schema checkBody reads this request's body against, if any. */
function jsonBodyType(ctx: RequestContext, body: CompiledBody): string | undefined {
  if (!hasBody(ctx.req.raw)) return undefined;
  const contentType = mediaTypeOf(ctx.req.headers['content-type']);
  const declared = matchMediaType(contentType, body.mediaTypes);
  return declared !== undefined && isJsonType(contentType) && body.json.has(declared) ? declared : undefined;
}

/** Check the body's presence and media type; returns a promise only when a JSON body is still to be read. */
function checkBody(
  ctx: RequestContext,
  body: CompiledBody,
  maxBytes: number,
  errors: Violation[],
  deps: PolicyDeps,
): Promise<void> | undefined {
  const h = ctx.req.headers;
  // The same decision as the WAF and the forwarder: an HTTP/2 stream may carry DATA without a length.
  if (!hasBody(ctx.req.raw)) {
    if (body.required) errors.push({ in: 'body', name: '', message: 'request body is required' });
    return;
  }
  const contentType = mediaTypeOf(h['content-type']);
  const declared = matchMediaType(contentType, body.mediaTypes);
  if (declared === undefined) {
    errors.push({
      in: 'header',
      name: 'content-type',
      message: `${contentType === '' ? 'missing' : `"${contentType}" is not accepted`}; expected ${body.mediaTypes.join(' or ')}`,
    });
    return;
  }
  // Only JSON is parsed; other declared media types (forms, files) pass unchecked.
  if (!isJsonType(contentType) || !body.json.has(declared)) return;
  const check = body.json.get(declared);
  // Read already (by the WAF's read-ahead): checked now, without a promise.
  if (ctx.body !== undefined) {
    checkJson(ctx.body);
    return;
  }
  return deps.readBody(ctx, maxBytes).then(checkJson);

  function checkJson(buf: Buffer): void {
    let value: unknown;
    const text = buf.toString('utf8');
    try {
      value = JSON.parse(text);
    } catch {
      errors.push({ in: 'body', name: '', message: 'is not valid JSON' });
      return;
    }
    // JSON.parse keeps the last of a repeated name, other parsers the first: the schema would have
    // checked a value the upstream may not read (RFC 8259 §4 leaves it to the parser).
    const repeated = repeatedName(text);
    if (repeated) {
      errors.push({
        in: 'body',
        name: `/${repeated.replaceAll('.', '/')}`,
        message: 'repeats a member name of its object (parsers disagree on which value counts)',
      });
      return;
    }
    if (check && !check(value)) for (const e of check.errors ?? []) errors.push(bodyViolation(e));
  }
}

function bodyViolation(e: ErrorObject): Violation {
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'required')
    return { in: 'body', name: `${e.instancePath}/${String(p.missingProperty)}`, message: 'is required' };
  if (e.keyword === 'additionalProperties')
    return {
      in: 'body',
      name: `${e.instancePath}/${String(p.additionalProperty)}`,
      message: 'is not allowed',
    };
  return { in: 'body', name: e.instancePath, message: describe(e, '') };
}

function describe(e: ErrorObject, at: string): string {
  const p = e.params as Record<string, unknown>;
  let msg = e.message ?? 'is invalid';
  if (e.keyword === 'enum')
    msg = `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  return at ? `${at}: ${msg}` : msg;
}

/** A request media type that is JSON. */
function isJsonType(t: string): boolean {
  return t === 'application/json' || (t.startsWith('application/') && t.endsWith('+json'));
}

/** A declared media type under which a JSON body may arrive. */
function isJson(mediaType: string): boolean {
  const t = mediaType.toLowerCase();
  return isJsonType(t) || t === '*/*' || t === 'application/*';
}

/** The declared media type a request's type falls under: exact first, then `type/*`, then `*​/*`. */
export function matchMediaType(actual: string, declared: readonly string[]): string | undefined {
  if (declared.includes(actual)) return actual;
  const major = actual.split('/')[0];
  if (actual !== '' && declared.includes(`${major}/*`)) return `${major}/*`;
  if (declared.includes('*/*')) return '*/*';
  return undefined;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Path parameters of a request. The gateway's own route match will put them on the context
 * (`params`); until then they are read from the URL against the route's public template.
 */
function compilePathMatcher(deps: PolicyDeps): (ctx: RequestContext) => Record<string, string | undefined> {
  const basePath = deps.service.settings?.basePath ?? '/';
  const template = (basePath === '/' ? '' : basePath) + deps.route.specPath;
  const names: string[] = [];
  let source = '';
  let last = 0;
  for (const m of template.matchAll(/\{([^}]*)\}/g)) {
    source += escapeRegExp(template.slice(last, m.index));
    source += '([^/]*)';
    names.push(m[1] as string);
    last = m.index + m[0].length;
  }
  source += escapeRegExp(template.slice(last));
  const re = new RegExp(`^${source}/?$`);
  return function pathParams(ctx) {
    if (ctx.params) return ctx.params;
    const m = re.exec(ctx.target.path);
    const out: Record<string, string | undefined> = {};
    names.forEach((n, i) => {
      const v = m?.[i + 1];
      out[n] = v === undefined || v === '' ? undefined : safeDecode(v);
    });
    return out;
  };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Response check (never blocks): the status must be declared (exactly, as `4XX`, or `default`) and
 * the content type must be one that status declares. Bodies are not validated: the forwarder
 * streams them and only headers pass through `responseEdits`.
 */
function responseChecker(
  op: Json,
  deps: PolicyDeps,
): (ctx: RequestContext, status: number, headers: OutgoingHttpHeaders) => void {
  const responses = (op.responses as Record<string, Json> | undefined) ?? {};
  const types = new Map<string, string[] | undefined>();
  for (const [code, r] of Object.entries(responses))
    types.set(
      code.toUpperCase(),
      r.content ? Object.keys(r.content as Json).map((t) => t.toLowerCase()) : undefined,
    );
  return function checkResponse(ctx, status, headers) {
    const key = [String(status), `${String(status)[0]}XX`, 'DEFAULT'].find((k) => types.has(k));
    let problem: string | undefined;
    const contentType =
      String(headers['content-type'] ?? '')
        .split(';')[0]
        ?.trim()
        .toLowerCase() ?? '';
    if (key === undefined) problem = `status ${status} is not declared`;
    else {
      const declared = types.get(key);
      if (declared && contentType !== '' && matchMediaType(contentType, declared) === undefined)
        problem = `content type "${contentType}" is not declared for ${key.toLowerCase()}`;
    }
    if (!problem) return;
    ctx.decisions.push({
      policy: 'validate',
      outcome: 'error',
      reason: 'response_mismatch',
      detail: { status, contentType, problem },
    });
    deps.logger.warn(
      { route: ctx.route.operationId, service: ctx.service.name, status, problem },
      'response does not match the API contract',
    );
  };
}
