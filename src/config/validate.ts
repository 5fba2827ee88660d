import type { TSchema } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { ConfigIssue } from '../errors.ts';
import type { SourceDocument } from './yaml.ts';

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

const ajv = addFormats(new Ajv({ allErrors: true, strict: false, useDefaults: false }));

/** Checks a value against a schema; every violation becomes an issue naming file, line and field. */
export type SchemaCheck = (value: unknown, source: SourceDocument, basePointer?: string) => ConfigIssue[];

/** Compile a TypeBox/JSON schema once, at load time. */
export function compileCheck(schema: TSchema): SchemaCheck {
  const validate = ajv.compile(schema);
  return function checkSchema(value, source, basePointer = '') {
    if (validate(value)) return [];
    return collapse(validate.errors ?? []).map((e) => {
      const path = basePointer + e.instancePath;
      // An unknown field is reported at its own line, not its parent's.
      const extra =
        e.keyword === 'additionalProperties'
          ? `/${String((e.params as { additionalProperty: string }).additionalProperty)}`
          : '';
      return { file: source.file, line: source.lineOf(path + extra), path, message: describe(e) };
    });
  };
}

/** anyOf/oneOf produce one error per branch; keep the most telling one per field. */
function collapse(errors: ErrorObject[]): ErrorObject[] {
  const byPath = new Map<string, ErrorObject[]>();
  for (const e of errors) {
    const list = byPath.get(e.instancePath) ?? [];
    list.push(e);
    byPath.set(e.instancePath, list);
  }
  const out: ErrorObject[] = [];
  for (const list of byPath.values()) {
    const consts = list.filter((e) => e.keyword === 'const');
    if (consts.length > 1) {
      const allowed = consts.map((e) => JSON.stringify((e.params as { allowedValue: unknown }).allowedValue));
      out.push({ ...(consts[0] as ErrorObject), keyword: 'enum', params: { allowedValues: allowed } });
      continue;
    }
    const specific = list.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'oneOf');
    out.push(...(specific.length > 0 ? specific : list));
  }
  return out;
}

function describe(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown field "${String(p.additionalProperty)}"`;
    case 'required':
      return `missing required field "${String(p.missingProperty)}"`;
    case 'enum':
      return `must be one of ${(p.allowedValues as string[]).join(', ')}`;
    case 'type':
      return `must be ${String(p.type)}`;
    default:
      return e.message ?? e.keyword;
  }
}
