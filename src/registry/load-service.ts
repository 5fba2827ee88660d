/**
 * One spec file → one Service: read with positions, check the OpenAPI version, validate and
 * dereference with @readme/openapi-parser (internal and external-file $refs, circular ones
 * included), resolve `x-portcullis`, and turn every path + method into a Route.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, extname, resolve } from 'node:path';
import { dereference, type ParserOptions, validate } from '@readme/openapi-parser';
import type { OpenAPIV3 } from 'openapi-types';
import { compileCheck } from '../config/validate.ts';
import { escapePointer, readSource, type SourceDocument } from '../config/yaml.ts';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import type { OpenApiDocument, OperationObject, Route, Service, ServiceSettings } from './types.ts';
import {
  EXTENSION_POINTER,
  OperationXPortcullisSchema,
  resolveSettings,
  resolveWebSocket,
  type WebSocketOption,
} from './x-portcullis.ts';

const checkOperationExtension = compileCheck(OperationXPortcullisSchema);

/** Operation keys of a path item, in the order routes are listed. */
export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

/** Bounds $ref resolution (including remote refs) so a bad spec cannot stall a reload. */
const DEREFERENCE_TIMEOUT_MS = 10_000;

const PARSER_OPTIONS = {
  resolve: { external: true, file: true },
  // Our own check names both paths of a duplicate operationId, so the parser only warns.
  validate: { rules: { openapi: { 'duplicate-operation-id': 'warning' } } },
  timeoutMs: DEREFERENCE_TIMEOUT_MS,
} satisfies ParserOptions;

/** Router parameter names must not contain what find-my-way reads as syntax. */
const SAFE_PARAM = /^[A-Za-z0-9_$]+$/;

/**
 * Load and check one spec file. Throws ConfigError with every problem found (file, line where
 * known, JSON path): unreadable or malformed file, Swagger 2 or other non-3.0/3.1 versions,
 * OpenAPI schema violations, unresolvable $refs, bad `x-portcullis`, duplicate operationIds.
 */
export async function loadServiceFile(file: string): Promise<Service> {
  const abs = resolve(file);
  const source = await readSource(abs);
  const raw = source.value;
  checkVersion(raw, source);

  const issues: ConfigIssue[] = [];
  let settings: ServiceSettings | undefined;
  try {
    settings = resolveSettings(
      (raw as Record<string, unknown>)[EXTENSION_POINTER.slice(1)],
      raw,
      abs,
      source,
    );
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    issues.push(...err.issues);
  }
  issues.push(...(await validateSpec(abs, source)));
  if (issues.length > 0 || !settings) throw new ConfigError(issues);

  let document: OpenApiDocument;
  try {
    document = (await dereference(abs, PARSER_OPTIONS)) as OpenApiDocument;
  } catch (cause) {
    throw new ConfigError([refIssue(cause, source)], { cause });
  }
  const name = basename(abs, extname(abs));
  const routes = buildRoutes(name, document, settings, source);
  return {
    name,
    file: abs,
    title: document.info.title,
    version: document.info.version,
    settings,
    document,
    routes,
    upstreamKey: await upstreamKeyOf(settings),
  };
}

/**
 * The router form of a public path: `{param}` → `:param` (find-my-way), `:` in literal text
 * escaped as `::`. Parameter names find-my-way cannot carry (`pet-id`, `a.b`) become `$p<i>`;
 * `names[i]` is then the spec's name of the i-th router parameter, else `names` is null.
 */
export function toRouterPath(basePath: string, specPath: string): { path: string; names: string[] | null } {
  const joined = basePath === '/' ? specPath : specPath === '/' ? basePath : basePath + specPath;
  const names: string[] = [];
  let aliased = false;
  let path = '';
  let last = 0;
  for (const m of joined.matchAll(/\{([^}]*)\}/g)) {
    const name = m[1] as string;
    const safe = SAFE_PARAM.test(name);
    aliased ||= !safe;
    path += joined.slice(last, m.index).replaceAll(':', '::');
    path += `:${safe ? name : `$p${names.length}`}`;
    names.push(name);
    last = m.index + m[0].length;
  }
  path += joined.slice(last).replaceAll(':', '::');
  return { path, names: aliased ? names : null };
}

/** The public path in spec template form (`/petstore/pets/{petId}`), for people to read. */
export function publicTemplate(basePath: string, specPath: string): string {
  return basePath === '/' ? specPath : specPath === '/' ? basePath : basePath + specPath;
}

/**
 * A deterministic hash of any JSON-like value (key order ignored). Safe on the cyclic graphs a
 * dereferenced recursive schema produces, and linear in the number of distinct objects, since
 * shared subtrees are hashed once.
 */
export function contentHash(value: unknown): string {
  return hashNode(value, new WeakMap(), new Set());
}

function hashNode(value: unknown, memo: WeakMap<object, string>, inProgress: Set<object>): string {
  if (value === null || typeof value !== 'object') return sha1(`v${JSON.stringify(value) ?? 'undefined'}`);
  const cached = memo.get(value);
  if (cached) return cached;
  if (inProgress.has(value)) return 'cycle';
  inProgress.add(value);
  let text: string;
  if (Array.isArray(value)) {
    text = `a${value.map((v) => hashNode(v, memo, inProgress)).join(',')}`;
  } else {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    text = `o${entries.map(([k, v]) => `${JSON.stringify(k)}:${hashNode(v, memo, inProgress)}`).join(',')}`;
  }
  inProgress.delete(value);
  const hash = sha1(text);
  memo.set(value, hash);
  return hash;
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}

/**
 * Everything an upstream pool is built from. The CA file's content counts too, so a renewed
 * CA gets a new pool while an unchanged config keeps its pool (and health state) across reloads.
 */
async function upstreamKeyOf(s: ServiceSettings): Promise<string> {
  const caDigest = s.tls.ca ? sha1((await readFile(s.tls.ca)).toString('latin1')) : undefined;
  return contentHash({
    upstreams: s.upstreams,
    loadBalancing: s.loadBalancing,
    healthCheck: s.healthCheck,
    passiveHealth: s.passiveHealth,
    circuitBreaker: s.circuitBreaker,
    preferZone: s.preferZone,
    tls: { ...s.tls, caDigest },
    timeoutMs: s.timeoutMs,
    connectTimeoutMs: s.connectTimeoutMs,
  });
}

function checkVersion(raw: unknown, source: SourceDocument): void {
  const fail = (path: string, message: string): never => {
    throw new ConfigError([{ file: source.file, line: source.lineOf(path), path, message }]);
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    fail('', 'a service spec must be an OpenAPI document (a YAML or JSON object)');
  }
  const doc = raw as Record<string, unknown>;
  if ('swagger' in doc) {
    fail(
      '/swagger',
      'Swagger 2.0 is not supported: convert the spec to OpenAPI 3.0 or 3.1 (e.g. with swagger2openapi)',
    );
  }
  if (!('openapi' in doc)) fail('', 'missing "openapi" field: expected an OpenAPI 3.0.x or 3.1.x document');
  if (typeof doc.openapi !== 'string' || !/^3\.[01]\.\d+$/.test(doc.openapi)) {
    fail('/openapi', `unsupported OpenAPI version ${JSON.stringify(doc.openapi)}: expected 3.0.x or 3.1.x`);
  }
}

/** Run the parser's validation and turn each of its messages into an issue with a path and line. */
async function validateSpec(file: string, source: SourceDocument): Promise<ConfigIssue[]> {
  let result: Awaited<ReturnType<typeof validate>>;
  try {
    result = await validate(file, PARSER_OPTIONS);
  } catch (cause) {
    return [refIssue(cause, source)];
  }
  if (result.valid) return [];
  // The parser's code frames point into its own JSON rendering of the (acyclic) dereferenced doc.
  let rendered: Promise<LineIndex | null> | undefined;
  const renderedDoc = () => {
    rendered ??= dereference(file, { ...PARSER_OPTIONS, dereference: { circular: 'ignore' } }).then(
      (d) => indexJsonLines(d),
      () => null,
    );
    return rendered;
  };
  const issues: ConfigIssue[] = [];
  for (const { message } of result.errors) {
    const [summary = message, ...rest] = message.split('\n');
    let path = '';
    const frameLine = /^>\s*(\d+)\s*\|/m.exec(message)?.[1];
    if (frameLine) {
      path = (await renderedDoc())?.[Number(frameLine) - 1] ?? '';
    } else {
      path = pointerFromValidatorId(summary, source.value) ?? pointerOfRef(summary, source.value) ?? '';
    }
    // better-ajv-errors writes "TYPE must be object" plus a marker note under the code frame.
    const text = summary.replace(/^[A-Z][A-Z ]+ (?=[a-z])/, '');
    const hint = rest.map((l) => /\|\s+\^+\s+(.*)$/.exec(l)?.[1]).find(Boolean);
    const useful = hint && !text.includes(hint) && !hint.includes(text);
    issues.push({
      file: source.file,
      line: source.lineOf(path),
      path,
      message: useful ? `${text}: ${hint}` : text,
    });
  }
  return issues;
}

/** A resolver failure (missing file, bad pointer, timeout) as an issue at the $ref that caused it. */
function refIssue(cause: unknown, source: SourceDocument): ConfigIssue {
  const message = (cause as Error)?.message ?? String(cause);
  const path = pointerOfRef(message, source.value) ?? '';
  return { file: source.file, line: source.lineOf(path), path, message: `cannot resolve $ref: ${message}` };
}

/** The pointer of the first `$ref` in the raw doc whose target is named in `message`. */
function pointerOfRef(message: string, doc: unknown): string | undefined {
  let found: string | undefined;
  const walk = (node: unknown, pointer: string) => {
    if (found !== undefined || node === null || typeof node !== 'object') return;
    const ref = (node as { $ref?: unknown }).$ref;
    if (typeof ref === 'string' && ref !== '' && messageNamesRef(message, ref)) {
      found = `${pointer}/$ref`;
      return;
    }
    for (const [k, v] of Object.entries(node)) walk(v, `${pointer}/${escapePointer(k)}`);
  };
  walk(doc, '');
  return found;
}

function messageNamesRef(message: string, ref: string): boolean {
  if (message.includes(ref)) return true;
  const [filePart, hash] = ref.split('#');
  if (filePart && message.includes(basename(filePart))) return true;
  return hash !== undefined && hash.length > 1 && message.includes(hash);
}

/**
 * The parser's own checks name places like `/paths/pets/{id}/get/parameters/x` (not JSON
 * pointers: the path key is not escaped). Map that back to a pointer in `doc`.
 */
function pointerFromValidatorId(message: string, doc: unknown): string | undefined {
  const id = /`(\/(?:paths|components|webhooks)\/[^`]*)`/.exec(message)?.[1];
  if (!id) return undefined;
  if (id.startsWith('/paths/')) {
    const paths = Object.keys((doc as { paths?: Record<string, unknown> }).paths ?? {});
    const key = paths
      .filter((p) => id === `/paths${p}` || id.startsWith(`/paths${p}/`))
      .sort((a, b) => b.length - a.length)[0];
    if (key === undefined) return '/paths';
    const rest = id.slice(`/paths${key}`.length);
    return `/paths/${escapePointer(key)}${rest}`;
  }
  return id;
}

/** Line (0-based) → JSON pointer of the value starting on it, in `JSON.stringify(value, null, 2)`. */
type LineIndex = string[];

function indexJsonLines(value: unknown): LineIndex {
  const lines: LineIndex = [];
  // Mirrors JSON.stringify(value, null, 2): a container opens on its key's line, each member on its own line.
  const visit = (node: unknown, pointer: string) => {
    const line = lines.length - 1;
    lines[line] = pointer;
    if (node === null || typeof node !== 'object') return;
    const json = (node as { toJSON?: () => unknown }).toJSON;
    if (typeof json === 'function') return;
    const entries: Array<[string, unknown]> = Array.isArray(node)
      ? node.map((v, i) => [String(i), v === undefined || typeof v === 'function' ? null : v])
      : Object.entries(node).filter(([, v]) => v !== undefined && typeof v !== 'function');
    if (entries.length === 0) return;
    for (const [k, v] of entries) {
      lines.push('');
      visit(v, `${pointer}/${escapePointer(k)}`);
    }
    lines.push(pointer);
  };
  lines.push('');
  visit(value, '');
  return lines;
}

/** Every path + method of a dereferenced document as a Route; duplicate operationIds are errors. */
function buildRoutes(
  service: string,
  document: OpenApiDocument,
  settings: ServiceSettings,
  source: SourceDocument,
): Route[] {
  const routes: Route[] = [];
  const seen = new Map<string, { method: string; path: string }>();
  const issues: ConfigIssue[] = [];
  for (const [specPath, item] of Object.entries(document.paths ?? {})) {
    if (!item) continue;
    const pathParams = (item.parameters ?? []) as OpenAPIV3.ParameterObject[];
    for (const method of HTTP_METHODS) {
      const op = item[method] as OperationObject | undefined;
      if (!op) continue;
      const operationId = op.operationId ?? deriveOperationId(method, specPath);
      const previous = seen.get(operationId);
      if (previous) {
        const pointer = `/paths/${escapePointer(specPath)}/${method}/operationId`;
        issues.push({
          file: source.file,
          line: source.lineOf(pointer),
          path: pointer,
          message: `duplicate operationId "${operationId}": used by ${previous.method} ${previous.path} and ${method.toUpperCase()} ${specPath}`,
        });
        continue;
      }
      seen.set(operationId, { method: method.toUpperCase(), path: specPath });
      const ext = (op as Record<string, unknown>)[EXTENSION_POINTER.slice(1)];
      let websocket: Route['websocket'];
      if (ext !== undefined) {
        const pointer = `/paths/${escapePointer(specPath)}/${method}${EXTENSION_POINTER}`;
        const extIssues = checkOperationExtension(ext, source, pointer);
        const wanted = (ext as { websocket?: WebSocketOption } | null)?.websocket;
        if (extIssues.length === 0 && wanted !== undefined && wanted !== false && method !== 'get') {
          extIssues.push({
            file: source.file,
            line: source.lineOf(`${pointer}/websocket`),
            path: `${pointer}/websocket`,
            message: 'WebSocket upgrades are GET requests: websocket applies to GET operations only',
          });
        }
        issues.push(...extIssues);
        if (extIssues.length === 0) websocket = resolveWebSocket(wanted, settings.websocket);
      }
      routes.push({
        ...(websocket === undefined ? {} : { websocket }),
        service,
        operationId,
        method: method.toUpperCase(),
        specPath,
        publicPath: toRouterPath(settings.basePath, specPath).path,
        tags: op.tags ?? [],
        operation: pathParams.length > 0 ? { ...op, parameters: mergeParameters(pathParams, op) } : op,
      });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return routes;
}

/** `get /pets/{petId}` → `get_pets_petId`: stable across reloads, readable in logs. */
function deriveOperationId(method: string, specPath: string): string {
  const slug = specPath.replace(/[^A-Za-z0-9]+/g, '_').replace(/^_+|_+$/g, '');
  return `${method}_${slug || 'root'}`;
}

/** Path-level parameters apply to every operation unless it redefines the same `in` + `name`. */
function mergeParameters(
  pathParams: OpenAPIV3.ParameterObject[],
  op: OperationObject,
): OpenAPIV3.ParameterObject[] {
  const own = (op.parameters ?? []) as OpenAPIV3.ParameterObject[];
  const inherited = pathParams.filter((p) => !own.some((o) => o.in === p.in && o.name === p.name));
  return [...inherited, ...own];
}
