/**
 * JSON Schema files for editors, generated from the TypeBox schemas the loaders check with, so
 * they cannot drift from the code: schemas/gateway.schema.json (gateway.yaml),
 * schemas/policies.schema.json (a policy file), schemas/x-portcullis.schema.json (the
 * `x-portcullis` block of a spec) and schemas/openapi-with-x-portcullis.schema.json (a whole spec:
 * any OpenAPI document, its `x-portcullis` property checked). `npm run schemas` rewrites them;
 * test/schemas.test.ts fails when one is stale.
 *
 * Draft-07, because yaml-language-server (VS Code YAML, Neovim yamlls, Helix, Zed) supports JSON
 * Schema 7 and below; each file is self-contained (no `$ref` between files), because a relative
 * `$ref` next to an `$id` resolves against the `$id` in one tool and against the file in another.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import type { TSchema } from '@sinclair/typebox';
import { GatewayConfigSchema } from '../src/config/schema.ts';
import { ruleSchema } from '../src/pipeline/rules.ts';
import { POLICY_KINDS } from '../src/policies/index.ts';
import { OperationXPortcullisSchema, XPortcullisSchema } from '../src/registry/x-portcullis.ts';

/** The JSON Schema draft every file declares. */
export const DRAFT = 'http://json-schema.org/draft-07/schema#';

/** Where the files live, relative to the repository root. */
export const SCHEMAS_DIR = 'schemas';

/** The modeline that binds a YAML file to a schema in yaml-language-server. */
export const MODELINE_PREFIX = '# yaml-language-server: $schema=';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/**
 * Schema keywords in the order they are written: what a reader looks for first on top, subschemas
 * last. Keys not listed keep their relative order after these (property names inside
 * `properties` are data, not keywords, and keep the order they were declared in).
 */
const KEYWORD_ORDER = [
  '$schema',
  '$id',
  'title',
  'description',
  'type',
  'const',
  'enum',
  'default',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'required',
  'dependencies',
  'properties',
  'patternProperties',
  'additionalProperties',
  'items',
  'anyOf',
  'oneOf',
  'allOf',
  'not',
];
const RANK = new Map(KEYWORD_ORDER.map((k, i) => [k, i]));

/** Keywords whose value is a map of name → schema (the names are data, not keywords). */
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'definitions']);
/** Keywords whose value is a schema or a list of schemas. */
const SCHEMA_VALUES = new Set(['items', 'additionalProperties', 'not', 'anyOf', 'oneOf', 'allOf']);

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A TypeBox schema as plain draft-07 JSON, the same constraints said the way editors read best:
 * - TypeBox's `Kind`/`Optional` markers are symbols and vanish in JSON; nothing else of TypeBox's
 *   own survives either (the test checks for stray keywords);
 * - `dependentRequired` (2019-09) becomes draft-07 `dependencies`, its equivalent;
 * - a union of literals of one type (`anyOf: [{const}, ...]`) becomes `enum`, so an editor offers
 *   every value and names them all in its message instead of "must be equal to constant";
 * - keywords in one fixed order (KEYWORD_ORDER).
 */
export function toEditorSchema(schema: TSchema | JsonObject): JsonObject {
  return normalise(JSON.parse(JSON.stringify(schema)) as JsonObject);
}

function normalise(node: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (SCHEMA_MAPS.has(key) && isObject(value)) {
      out[key] = Object.fromEntries(
        Object.entries(value).map(([name, child]) => [name, isObject(child) ? normalise(child) : child]),
      );
    } else if (SCHEMA_VALUES.has(key) && Array.isArray(value)) {
      out[key] = value.map((child) => (isObject(child) ? normalise(child) : child));
    } else if (SCHEMA_VALUES.has(key) && isObject(value)) {
      out[key] = normalise(value);
    } else if (key === 'dependentRequired') {
      out.dependencies = value;
    } else {
      out[key] = value;
    }
  }
  const literals = enumOf(out.anyOf);
  if (literals) {
    delete out.anyOf;
    out.type = literals.type;
    out.enum = literals.values;
  }
  return Object.fromEntries(
    Object.entries(out).sort(([a], [b]) => (RANK.get(a) ?? RANK.size) - (RANK.get(b) ?? RANK.size)),
  );
}

/** `{ type, values }` when every branch is exactly `{ const, type }` of one type, else undefined. */
function enumOf(anyOf: Json | undefined): { type: string; values: Json[] } | undefined {
  if (!Array.isArray(anyOf) || anyOf.length === 0) return undefined;
  const type = isObject(anyOf[0]) ? anyOf[0].type : undefined;
  if (typeof type !== 'string') return undefined;
  const values: Json[] = [];
  for (const branch of anyOf) {
    if (!isObject(branch) || branch.type !== type || !('const' in branch)) return undefined;
    if (Object.keys(branch).length !== 2) return undefined;
    values.push(branch.const as Json);
  }
  return { type, values };
}

function document(id: string, title: string, description: string, body: JsonObject): JsonObject {
  // The body's own description (e.g. "A policy file: a list of rules.") gives way to the fuller one.
  const { description: _own, ...rest } = body;
  return toEditorSchema({ $schema: DRAFT, $id: id, title, description, ...rest });
}

/** The x-portcullis block, without document keywords: embedded in the OpenAPI wrapper as is. */
function xPortcullisBody(): JsonObject {
  return {
    ...toEditorSchema(XPortcullisSchema),
    description:
      "Portcullis settings of this service: public base path, upstreams, balancing, health checks, timeouts, retries, mock, pass-through, upstream TLS. Every field is optional; the defaults are in each field's description.",
  };
}

/** A policy file: the rule schema the loader compiles, plus the two checks it makes in code. */
function policiesBody(): JsonObject {
  const schema = toEditorSchema(ruleSchema(POLICY_KINDS));
  const rule = schema.items as JsonObject;
  // parsePolicyFile reports these itself (missing "match", "rule attaches no policy").
  const strict: JsonObject = {
    ...rule,
    description:
      'A rule: `match` selects routes (every criterion given must hold), each other key attaches one policy kind to them. Per policy kind the most specific matching rule wins.',
    required: ['match'],
    minProperties: 2,
  };
  return { ...schema, items: toEditorSchema(strict) };
}

/** Every schema file by name, as JSON values in their final key order. */
export function renderSchemas(): Record<string, JsonObject> {
  // The schema is for editors: the loaders check more (cross-field rules, files, names) than it says.
  const loadNote = (source: string, what: string) =>
    `Generated from ${source} by \`npm run schemas\`; do not edit. For editors: the gateway checks more ` +
    `when it loads the file than a schema can say (${what}): \`portcullis validate\` is the authority.`;
  return {
    'gateway.schema.json': document(
      'urn:portcullis:schema:gateway',
      'Portcullis gateway.yaml',
      `The gateway's own settings: listeners, TLS, admin port, spec and policy folders, state store, telemetry, limits. ${loadNote(
        'src/config/schema.ts',
        'certificate files readable and matching, Redis URLs well formed, environment overrides applied on top',
      )}`,
      toEditorSchema(GatewayConfigSchema),
    ),
    'policies.schema.json': document(
      'urn:portcullis:schema:policies',
      'Portcullis policy file (policies/*.yaml)',
      `A list of rules attaching policies (${POLICY_KINDS.map((k) => k.name).join(', ')}) to the routes their \`match\` selects. ${loadNote(
        'src/pipeline/rules.ts and the kinds in src/policies/index.ts',
        'each service, operationId, tag and path a `match` names exists and the match selects a route, key files and IdPs are reachable, cross-field rules of each kind',
      )}`,
      policiesBody(),
    ),
    'x-portcullis.schema.json': document(
      'urn:portcullis:schema:x-portcullis',
      'Portcullis x-portcullis block of an OpenAPI spec',
      `The \`x-portcullis\` value of a service spec. ${loadNote(
        'src/registry/x-portcullis.ts',
        'upstream URLs absolute http(s) without credentials, query or fragment; an upstream (or servers[].url, or mock: true) present; the tls.ca file readable',
      )}`,
      xPortcullisBody(),
    ),
    'openapi-with-x-portcullis.schema.json': document(
      'urn:portcullis:schema:openapi-with-x-portcullis',
      'OpenAPI document with a Portcullis x-portcullis block',
      `Any OpenAPI document: only its \`x-portcullis\` property is described and checked here (the rest is left to the OpenAPI parser at load). For yaml-language-server modelines, which bind one schema per file. ${loadNote(
        'src/registry/x-portcullis.ts',
        'the spec itself is parsed and resolved, paths and parameters checked',
      )}`,
      {
        type: 'object',
        properties: {
          openapi: { type: 'string', description: 'OpenAPI version of the document, e.g. 3.1.0.' },
          'x-portcullis': xPortcullisBody(),
          paths: {
            type: 'object',
            additionalProperties: {
              type: 'object',
              properties: {
                get: {
                  type: 'object',
                  properties: {
                    'x-portcullis': {
                      ...toEditorSchema(OperationXPortcullisSchema),
                      description:
                        "What one GET operation sets for itself over its service's x-portcullis: websocket.",
                    },
                  },
                },
              },
            },
          },
        },
      },
    ),
  };
}

/** The file text before Biome formats it (the test compares parsed values, not whitespace). */
export function serialise(schema: JsonObject): string {
  return `${JSON.stringify(schema, null, 2)}\n`;
}

if (import.meta.main) {
  const dir = new URL(`../${SCHEMAS_DIR}/`, import.meta.url);
  await mkdir(dir, { recursive: true });
  for (const [name, schema] of Object.entries(renderSchemas())) {
    await writeFile(new URL(name, dir), serialise(schema));
    console.log(`${SCHEMAS_DIR}/${name}: regenerated`);
  }
}
