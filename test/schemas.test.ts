/**
 * The editor schemas in schemas/ (scripts/schemas.ts): in step with the TypeBox schemas, valid
 * draft-07 for a standard validator, and true to the repository's own examples: every gateway,
 * policy and spec file under examples/, openapi/ and policies/ passes both its schema and its
 * loader, and every YAML one names its schema in a yaml-language-server modeline on line 1.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ValidateFunction } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { DRAFT, MODELINE_PREFIX, renderSchemas, SCHEMAS_DIR } from '../scripts/schemas.ts';
import { loadGatewayConfig, resolveGatewayConfig } from '../src/config/load.ts';
import { parseSource, readSource } from '../src/config/yaml.ts';
import { ConfigError } from '../src/errors.ts';
import { parsePolicyFile } from '../src/pipeline/rules.ts';
import { POLICY_KINDS } from '../src/policies/index.ts';
import { loadServiceFile } from '../src/registry/load-service.ts';
import { resolveSettings } from '../src/registry/x-portcullis.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GENERATED = renderSchemas();

/** Draft-07 keywords and annotations; anything else in a schema position is a leak. */
const DRAFT7_KEYWORDS = new Set([
  ...['$schema', '$id', '$ref', '$comment', 'title', 'description', 'default', 'examples', 'readOnly'],
  ...['writeOnly', 'type', 'enum', 'const', 'multipleOf', 'maximum', 'exclusiveMaximum', 'minimum'],
  ...['exclusiveMinimum', 'maxLength', 'minLength', 'pattern', 'items', 'additionalItems', 'maxItems'],
  ...['minItems', 'uniqueItems', 'contains', 'maxProperties', 'minProperties', 'required'],
  ...['properties', 'patternProperties', 'additionalProperties', 'dependencies', 'propertyNames'],
  ...['if', 'then', 'else', 'allOf', 'anyOf', 'oneOf', 'not', 'format', 'definitions'],
]);
const NAME_MAPS = new Set(['properties', 'patternProperties', 'definitions', 'dependencies']);

/** Keywords used in `node` (recursively) that draft-07 does not define, with their JSON pointers. */
function strayKeywords(node: unknown, pointer = ''): string[] {
  if (Array.isArray(node)) return node.flatMap((child, i) => strayKeywords(child, `${pointer}/${i}`));
  if (typeof node !== 'object' || node === null) return [];
  const out: string[] = [];
  for (const [key, value] of Object.entries(node)) {
    const at = `${pointer}/${key}`;
    if (!DRAFT7_KEYWORDS.has(key)) out.push(at);
    else if (key === 'dependencies') continue;
    else if (NAME_MAPS.has(key) && value && typeof value === 'object') {
      for (const [name, child] of Object.entries(value)) out.push(...strayKeywords(child, `${at}/${name}`));
    } else if (['enum', 'const', 'default', 'examples', 'required'].includes(key)) continue;
    else out.push(...strayKeywords(value, at));
  }
  return out;
}

/**
 * The validator editors' behaviour is closest to: Ajv's draft-07 in strict mode (unknown keywords,
 * ignored keywords and bad types are errors). strictRequired is off: `anyOf: [{required: [...]}]`
 * naming properties declared beside the anyOf is plain JSON Schema (rateLimit uses it).
 */
function compile(name: string): ValidateFunction {
  const ajv = new Ajv({ strict: true, strictRequired: false, allErrors: true });
  return ajv.compile(GENERATED[name] as object);
}

const validators = Object.fromEntries(Object.keys(GENERATED).map((name) => [name, compile(name)]));

function check(name: string, value: unknown): string[] {
  const validate = validators[name] as ValidateFunction;
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

type Role = 'gateway' | 'policies' | 'spec';

/** Which schema a YAML/JSON file of the repository answers to, from where it sits; else none. */
function roleOf(file: string): Role | undefined {
  const folder = basename(dirname(file));
  if (/^gateway[^/]*\.ya?ml$/.test(basename(file))) return 'gateway';
  if (folder === 'policies') return 'policies';
  if (folder === 'openapi') return 'spec';
  return undefined;
}

const SCHEMA_OF: Record<Role, string> = {
  gateway: 'gateway.schema.json',
  policies: 'policies.schema.json',
  spec: 'openapi-with-x-portcullis.schema.json',
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name.startsWith('.') || name === 'node_modules') return [];
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Example and default configuration files: the repository's openapi/ and policies/, and examples/. */
const CONFIG_FILES = ['openapi', 'policies', 'examples']
  .flatMap((dir) => walk(join(ROOT, dir)))
  .filter((file) => ['.yaml', '.yml', '.json'].includes(extname(file)))
  .map((file) => ({ file, name: relative(ROOT, file), role: roleOf(file) }))
  .filter((f): f is { file: string; name: string; role: Role } => f.role !== undefined)
  .sort((a, b) => a.name.localeCompare(b.name));

describe('schemas/: generated from the TypeBox schemas', () => {
  it('every file in schemas/ is the one `npm run schemas` writes from the current code', () => {
    const onDisk = readdirSync(join(ROOT, SCHEMAS_DIR)).sort();
    expect(onDisk, 'run `npm run schemas`').toEqual(Object.keys(GENERATED).sort());
    for (const [name, schema] of Object.entries(GENERATED)) {
      const text = readFileSync(join(ROOT, SCHEMAS_DIR, name), 'utf8');
      // Values and key order compared; whitespace is Biome's.
      expect(JSON.stringify(JSON.parse(text)), `schemas/${name} is stale: run \`npm run schemas\``).toBe(
        JSON.stringify(schema),
      );
    }
  });

  it.each(Object.keys(GENERATED))('%s declares draft-07, an $id, a title and a description', (name) => {
    const schema = GENERATED[name] as Record<string, unknown>;
    expect(schema.$schema).toBe(DRAFT);
    expect(schema.$id).toMatch(/^urn:portcullis:schema:/);
    expect(schema.title).toEqual(expect.any(String));
    expect(schema.description).toContain('`portcullis validate` is the authority');
  });

  it.each(Object.keys(GENERATED))('%s uses draft-07 keywords only (no TypeBox leftovers)', (name) => {
    expect(strayKeywords(GENERATED[name])).toEqual([]);
    expect(JSON.stringify(GENERATED[name])).not.toMatch(/"~?[Kk]ind"|"\[object |Symbol\(/);
  });

  it('the OpenAPI wrapper checks x-portcullis exactly as x-portcullis.schema.json does', () => {
    const wrapper = GENERATED['openapi-with-x-portcullis.schema.json'] as {
      properties: Record<string, Record<string, unknown>>;
    };
    const { $schema, $id, title, description, ...block } = GENERATED['x-portcullis.schema.json'] as Record<
      string,
      unknown
    >;
    const { description: _, ...embedded } = wrapper.properties['x-portcullis'] as Record<string, unknown>;
    expect(embedded).toEqual(block);
  });
});

type Kind = 'gateway' | 'policies' | 'x-portcullis' | 'spec';

const SCHEMA_OF_KIND: Record<Kind, string> = {
  gateway: 'gateway.schema.json',
  policies: 'policies.schema.json',
  'x-portcullis': 'x-portcullis.schema.json',
  spec: 'openapi-with-x-portcullis.schema.json',
};

/** Load `value` as the gateway would a file of that kind (throws ConfigError when it rejects it). */
function load(kind: Kind, value: unknown): void {
  const file = join(ROOT, 'in-memory.yaml');
  const spec = kind === 'spec' ? (value as Record<string, unknown>) : { 'x-portcullis': value };
  if (kind === 'gateway') resolveGatewayConfig(value, { baseDir: ROOT, env: {} });
  else if (kind === 'policies') parsePolicyFile(parseSource(stringify(value), file), POLICY_KINDS, ROOT);
  else resolveSettings(spec['x-portcullis'], spec, file, parseSource(stringify(spec), file));
}

describe('schemas/: what they reject, the loaders reject too', () => {
  const REJECTED: Array<{ description: string; kind: Kind; value: unknown }> = [
    { description: 'gateway: unknown top-level field', kind: 'gateway', value: { lissen: {} } },
    {
      description: 'gateway: port out of range',
      kind: 'gateway',
      value: { listen: { http: { port: 70000 } } },
    },
    { description: 'gateway: unknown log level', kind: 'gateway', value: { logLevel: 'loud' } },
    { description: 'policy: a rule without match', kind: 'policies', value: [{ waf: { mode: 'block' } }] },
    {
      description: 'policy: a rule attaching no policy',
      kind: 'policies',
      value: [{ match: { service: 'petstore' } }],
    },
    {
      description: 'policy: unknown policy kind',
      kind: 'policies',
      value: [{ match: {}, rateLimt: { limit: 1, window: '1m' } }],
    },
    {
      description: 'policy: rateLimit with neither limit+window nor limits',
      kind: 'policies',
      value: [{ match: {}, rateLimit: { key: 'ip' } }],
    },
    {
      description: 'policy: unknown match criterion',
      kind: 'policies',
      value: [{ match: { operation: ['x'] }, waf: {} }],
    },
    {
      description: 'x-portcullis: unknown balancing algorithm',
      kind: 'x-portcullis',
      value: { loadBalancing: 'fastest' },
    },
    {
      description: 'x-portcullis: basePath without leading slash',
      kind: 'x-portcullis',
      value: { basePath: 'pets' },
    },
    {
      description: 'spec: a bad x-portcullis inside any OpenAPI document',
      kind: 'spec',
      value: { openapi: '3.1.0', paths: {}, 'x-portcullis': { upstreams: [] } },
    },
  ];

  it.each(REJECTED)('$description', ({ kind, value }) => {
    expect(check(SCHEMA_OF_KIND[kind], value)).not.toEqual([]);
    expect(() => load(kind, value)).toThrow(ConfigError);
  });

  it('accepts an OpenAPI document with no x-portcullis and anything else in it', () => {
    expect(
      check('openapi-with-x-portcullis.schema.json', { openapi: '3.0.3', info: {}, 'x-other': 1 }),
    ).toEqual([]);
  });
});

describe('example and default configuration files', () => {
  it('finds the gateway, policy and spec files it checks', () => {
    const roles = new Set(CONFIG_FILES.map((f) => f.role));
    expect([...roles].sort()).toEqual(['gateway', 'policies', 'spec']);
  });

  it.each(CONFIG_FILES)('$name passes its schema', ({ file, role }) => {
    const text = readFileSync(file, 'utf8');
    const value =
      extname(file) === '.json' ? JSON.parse(text) : (parse(text) ?? (role === 'policies' ? [] : {}));
    expect(check(SCHEMA_OF[role], value)).toEqual([]);
    if (role === 'spec' && value['x-portcullis'] !== undefined) {
      expect(check('x-portcullis.schema.json', value['x-portcullis'])).toEqual([]);
    }
  });

  it.each(CONFIG_FILES.filter((f) => extname(f.file) !== '.json'))(
    '$name names its schema on line 1 (yaml-language-server modeline)',
    ({ file, role }) => {
      const target = relative(dirname(file), join(ROOT, SCHEMAS_DIR, SCHEMA_OF[role]))
        .split('\\')
        .join('/');
      const first = readFileSync(file, 'utf8').split('\n', 1)[0];
      expect(first, `add this line at the top of ${relative(ROOT, file)}`).toBe(
        `${MODELINE_PREFIX}${target}`,
      );
    },
  );

  it.each(CONFIG_FILES)('$name is accepted by its loader', async ({ file, role }) => {
    if (role === 'gateway') await loadGatewayConfig({ file, env: {} });
    else if (role === 'policies') parsePolicyFile(await readSource(file), POLICY_KINDS, dirname(file));
    else await loadServiceFile(file);
  });
});
