/**
 * Renders the policy-kind reference of docs/policies.md from the kinds' own schemas, so the docs
 * cannot drift from the code. `npm run docs:policies` rewrites the generated part of the file;
 * src/policies/reference.test.ts fails when it is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { TSchema } from '@sinclair/typebox';
import type { PolicyKind } from '../src/pipeline/types.ts';
import { POLICY_KINDS } from '../src/policies/index.ts';

export const BEGIN = '<!-- generated: policy reference (npm run docs:policies) -->';
export const END = '<!-- end of generated policy reference -->';

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

/** Replace the generated section of a document. */
export function withReference(doc: string, reference: string): string {
  const start = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (start === -1 || end === -1) return `${doc.trimEnd()}\n\n${reference}\n`;
  return doc.slice(0, start) + reference + doc.slice(end + END.length);
}

if (import.meta.main) {
  const file = new URL('../docs/policies.md', import.meta.url);
  const doc = await readFile(file, 'utf8');
  await writeFile(file, withReference(doc, renderReference()));
  console.log('docs/policies.md: policy reference regenerated');
}
