/**
 * OpenAPI schema objects → JSON Schema that Ajv compiles. The registry hands us dereferenced
 * specs, where a recursive schema is a cyclic object graph Ajv cannot take; `toJsonSchema` turns
 * every node that closes a cycle into a `$defs` entry referenced by `$ref`, and rewrites the
 * OpenAPI 3.0 dialect (`nullable`, boolean `exclusiveMinimum`/`exclusiveMaximum`) into JSON Schema.
 */
import type { Ajv } from 'ajv';
import { Ajv as AjvDraft7 } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** The OpenAPI dialect of a document: 3.0 (JSON Schema draft-04-ish) or 3.1 (JSON Schema 2020-12). */
export type Dialect = '3.0' | '3.1';

type Json = Record<string, unknown>;

/** One Ajv per spec document (dialect-specific), shared by its routes, dropped with the document. */
const AJV_BY_DOCUMENT = new WeakMap<object, Ajv>();

/** The Ajv instance for a document: all errors, formats (with OpenAPI's numeric ones), lenient keywords. */
export function ajvFor(document: object, dialect: Dialect): Ajv {
  let ajv = AJV_BY_DOCUMENT.get(document);
  if (ajv) return ajv;
  // strict: false because OpenAPI adds keywords (example, xml, discriminator...) Ajv does not know.
  const options = { allErrors: true, strict: false, coerceTypes: false, validateFormats: true } as const;
  ajv = addFormats(dialect === '3.1' ? (new Ajv2020(options) as unknown as Ajv) : new AjvDraft7(options));
  ajv.addFormat('int32', {
    type: 'number',
    validate: (n: number) => Number.isInteger(n) && Math.abs(n) <= 2 ** 31,
  });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
  for (const f of ['float', 'double']) ajv.addFormat(f, { type: 'number', validate: () => true });
  for (const f of ['byte', 'binary', 'password']) ajv.addFormat(f, () => true);
  AJV_BY_DOCUMENT.set(document, ajv);
  return ajv;
}

/** Convert a (possibly cyclic) dereferenced OpenAPI schema into an acyclic JSON Schema. */
export function toJsonSchema(schema: unknown, dialect: Dialect): Json | boolean {
  if (typeof schema === 'boolean') return schema;
  if (schema === null || typeof schema !== 'object') return {};
  const cyclic = findCycleTargets(schema);
  const defs: Record<string, Json | boolean> = {};
  const names = new Map<object, string>();
  const convert = (node: unknown): unknown => {
    if (node === null || typeof node !== 'object') return node;
    if (Array.isArray(node)) return node.map(convert);
    if (cyclic.has(node)) {
      let name = names.get(node);
      if (!name) {
        name = `s${names.size}`;
        names.set(node, name);
        defs[name] = rewrite(node as Json, convert, dialect);
      }
      return { $ref: `#/$defs/${name}` };
    }
    return rewrite(node as Json, convert, dialect);
  };
  const root = convert(schema) as Json;
  if (Object.keys(defs).length === 0) return root;
  // The root itself may be a cycle target: then it is a $ref into its own $defs.
  return { ...root, $defs: { ...(root.$defs as Json | undefined), ...defs } };
}

/** Objects reached again while still being walked: the nodes that close a cycle. */
function findCycleTargets(root: object): Set<object> {
  const targets = new Set<object>();
  const onPath = new Set<object>();
  const done = new Set<object>();
  const walk = (node: unknown): void => {
    if (node === null || typeof node !== 'object') return;
    if (onPath.has(node)) {
      targets.add(node);
      return;
    }
    if (done.has(node)) return;
    onPath.add(node);
    for (const v of Array.isArray(node) ? node : Object.values(node)) walk(v);
    onPath.delete(node);
    done.add(node);
  };
  walk(root);
  return targets;
}

/** Copy one schema node, converting children and the 3.0 keywords JSON Schema spells differently. */
function rewrite(node: Json, convert: (n: unknown) => unknown, dialect: Dialect): Json {
  const out: Json = {};
  for (const [key, value] of Object.entries(node)) {
    // Property names and examples are data, not schemas: copy them as they are.
    if (key === 'example' || key === 'examples' || key === 'xml' || key === 'externalDocs') continue;
    if (key === 'properties' || key === 'patternProperties' || key === '$defs' || key === 'definitions') {
      out[key] = Object.fromEntries(Object.entries(value as Json).map(([k, v]) => [k, convert(v)]));
    } else if (key === 'enum' || key === 'const' || key === 'default' || key === 'required') {
      out[key] = value;
    } else out[key] = convert(value);
  }
  if (dialect === '3.0') {
    for (const [flag, bound] of [
      ['exclusiveMinimum', 'minimum'],
      ['exclusiveMaximum', 'maximum'],
    ] as const) {
      if (typeof out[flag] === 'boolean') {
        if (out[flag] && typeof out[bound] === 'number') {
          out[flag] = out[bound];
          delete out[bound];
        } else delete out[flag];
      }
    }
    if (out.nullable === true) {
      delete out.nullable;
      if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
      if (typeof out.type === 'string') return { ...out, type: [out.type, 'null'] };
      return { anyOf: [out, { type: 'null' }] };
    }
    delete out.nullable;
  }
  return out;
}
