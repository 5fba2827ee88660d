/**
 * Generated parts of the docs, so they cannot drift from the code: the policy-kind reference of
 * docs/policies.md (from the kinds' schemas) and the error table of docs/errors.md (from
 * src/errors.ts). `npm run docs` rewrites them; tests fail when either is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { TSchema } from '@sinclair/typebox';
import { ERRORS, PROBLEM_BASE } from '../src/errors.ts';
import type { PolicyKind } from '../src/pipeline/types.ts';
import { POLICY_KINDS } from '../src/policies/index.ts';

export const BEGIN = '<!-- generated: policy reference (npm run docs) -->';
export const END = '<!-- end of generated policy reference -->';
export const ERRORS_BEGIN = '<!-- generated: error table (npm run docs) -->';
export const ERRORS_END = '<!-- end of generated error table -->';

/** The error catalogue as a Markdown table. */
export function renderErrorTable(): string {
  const rows = Object.entries(ERRORS).map(
    ([code, e]) => `| \`${code}\` | ${e.status} | \`${PROBLEM_BASE}${e.type}\` | ${e.title} |`,
  );
  return [
    ERRORS_BEGIN,
    '',
    '| code | status | type | title |',
    '|---|---|---|---|',
    ...rows,
    '',
    ERRORS_END,
  ].join('\n');
}

interface SchemaNode {
  type?: string;
  description?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  const?: unknown;
  enum?: unknown[];
  additionalProperties?: SchemaNode | boolean;
}

function typeOf(node: SchemaNode): string {
  if (node.const !== undefined) return JSON.stringify(node.const);
  if (node.anyOf) return node.anyOf.map(typeOf).join(' \\| ');
  if (node.type === 'array' && node.items) return `${typeOf(node.items)}[]`;
  if (node.type === 'object' && !node.properties) return 'map';
  return node.type ?? 'object';
}

function rows(node: SchemaNode, prefix: string, out: string[]): void {
  for (const [name, child] of Object.entries(node.properties ?? {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    const desc = (child.description ?? '').replace(/\|/g, '\\|').replace(/\s+/g, ' ').trim();
    out.push(`| \`${path}\` | ${typeOf(child)} | ${desc} |`);
    const nested = child.properties ? child : child.items?.properties ? child.items : undefined;
    if (nested) rows(nested, child.items?.properties ? `${path}[]` : path, out);
    for (const alt of child.anyOf ?? []) if (alt.properties) rows(alt, path, out);
  }
}

/** The generated Markdown for every kind, in PHASES order of appearance in POLICY_KINDS. */
export function renderReference(kinds: readonly PolicyKind[] = POLICY_KINDS): string {
  const parts = [BEGIN, ''];
  for (const kind of kinds) {
    const schema = kind.schema as TSchema & SchemaNode;
    parts.push(`### \`${kind.name}\` (phase \`${kind.phase}\`)`, '');
    if (schema.description) parts.push(schema.description, '');
    const out: string[] = [];
    rows(schema, '', out);
    parts.push('| field | type | meaning and default |', '|---|---|---|', ...out, '');
  }
  parts.push(END);
  return parts.join('\n');
}

/** Replace the generated section (from `begin` to `end` markers) of a document, or append it. */
export function withSection(doc: string, begin: string, end: string, content: string): string {
  const start = doc.indexOf(begin);
  const stop = doc.indexOf(end);
  if (start === -1 || stop === -1) return `${doc.trimEnd()}\n\n${content}\n`;
  return doc.slice(0, start) + content + doc.slice(stop + end.length);
}

/** Markdown formatting (Biome) pads table cells; compare documents with runs of spaces folded. */
export function normalise(text: string): string {
  return text.replace(/[ \t]+/g, ' ').replace(/\| ?-+ ?(?=\|)/g, '|---');
}

if (import.meta.main) {
  for (const [path, begin, end, content] of [
    ['../docs/policies.md', BEGIN, END, renderReference()],
    ['../docs/errors.md', ERRORS_BEGIN, ERRORS_END, renderErrorTable()],
  ] as const) {
    const file = new URL(path, import.meta.url);
    await writeFile(file, withSection(await readFile(file, 'utf8'), begin, end, content));
    console.log(`${path.slice(3)}: regenerated`);
  }
}
