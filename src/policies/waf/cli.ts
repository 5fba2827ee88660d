/**
 * `portcullis waf-test`: run the WAF on one value or one whole request and explain the verdict:
 * every inspected value with its views (decoded, lower-case, SQL, shell, path; the SQL token
 * fingerprint), the rules that fired with their scores, and the verdict at the threshold, so an
 * operator can write an exclusion for a false positive in a minute.
 *
 *   portcullis waf-test "x' or 1=1--"
 *   portcullis waf-test --in body --name comment "Tom & Jerry"
 *   portcullis waf-test --method POST --path /posts -H 'content-type: application/json' --body '{"a":"<b>"}'
 */
import { parseArgs } from 'node:util';
import { compileEngine, type Exclusion, requestTargets, viewOf } from './engine.ts';
import { RULES } from './rules/index.ts';
import { tokenize } from './sqli.ts';
import type { RequestParts, Target } from './types.ts';

export const WAF_TEST_USAGE = `Usage: portcullis waf-test [options] [<value>]

Runs the WAF on a value (sent as a query parameter, or where --in says) or on a whole request,
and prints every inspected value with its normalised views, the rules that fired with their
scores, and the verdict. Exits 0 when the request passes, 1 when it would be blocked.

Options:
  --in <place>          Where <value> goes: query (default), body (a JSON field), form (a form
                        field), header, cookie, path (a path parameter)
  --name <name>         The parameter, field, header or cookie name (default q; x-test for a header)
  --method <method>     Request method (default GET, POST with --body)
  --path <path>         Request path and query (default /)
  -H, --header <h>      A request header, 'name: value' (repeatable)
  --body <text>         The request body (give a content-type header for JSON, form or multipart)
  -p, --paranoia <1-4>  Paranoia level (default 1)
  --threshold <n>       Anomaly score that blocks (default 5)
  --exclude <spec>      An exclusion, as in a policy: 'target=query:q,rules=sqli-syntax',
                        'paths=/cms/**,families=xss' (repeatable)
  --json                Print the result as JSON`;

const PLACES = ['query', 'body', 'form', 'header', 'cookie', 'path'] as const;
type Place = (typeof PLACES)[number];

/** An `--exclude` spec: `key=value` pairs split by `,`; lists (rules, families, paths) joined by `|` or repeated. */
function parseExclusion(spec: string): Exclusion {
  const ex: Exclusion = {};
  for (const pair of spec.split(',')) {
    const eq = pair.indexOf('=');
    if (eq === -1) throw new TypeError(`--exclude: "${pair}" is not key=value`);
    const key = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (key === 'target') ex.target = value;
    else if (key === 'rules' || key === 'rule') ex.rules = [...(ex.rules ?? []), ...value.split('|')];
    else if (key === 'families' || key === 'family')
      ex.families = [...(ex.families ?? []), ...value.split('|')];
    else if (key === 'paths' || key === 'path') ex.paths = [...(ex.paths ?? []), ...value.split('|')];
    else throw new TypeError(`--exclude: unknown key "${key}" (target, rules, families, paths)`);
  }
  if (ex.target === undefined && ex.paths === undefined)
    throw new TypeError('--exclude: give a target, paths or both');
  return ex;
}

/** The request a value is sent in, placed where `--in` says. */
function requestFor(
  value: string | undefined,
  place: Place,
  name: string,
  base: {
    method?: string | undefined;
    path: string;
    headers: Record<string, string>;
    body?: string | undefined;
  },
): { parts: RequestParts; params?: Record<string, string> } {
  const headers: Record<string, string> = {
    host: 'localhost',
    ...base.headers,
  };
  const parts: RequestParts = {
    method: (base.method ?? (base.body !== undefined ? 'POST' : 'GET')).toUpperCase(),
    url: base.path,
    headers,
    body: base.body,
  };
  if (value === undefined) return { parts };
  const sep = parts.url.includes('?') ? '&' : '?';
  switch (place) {
    case 'query':
      parts.url += `${sep}${encodeURIComponent(name)}=${encodeURIComponent(value)}`;
      break;
    case 'body':
      parts.method = base.method?.toUpperCase() ?? 'POST';
      headers['content-type'] ??= 'application/json';
      parts.body = JSON.stringify({ [name]: value });
      break;
    case 'form':
      parts.method = base.method?.toUpperCase() ?? 'POST';
      headers['content-type'] ??= 'application/x-www-form-urlencoded';
      parts.body = `${encodeURIComponent(name)}=${encodeURIComponent(value)}`;
      break;
    case 'header':
      headers[name.toLowerCase()] = value;
      break;
    case 'cookie':
      headers.cookie = `${headers.cookie ? `${headers.cookie}; ` : ''}${name}=${value}`;
      break;
    case 'path':
      parts.params = { [name]: value };
      parts.url = `${base.path.replace(/\/$/, '')}/${encodeURIComponent(value)}`;
      break;
  }
  return { parts };
}

/**
 * The SQL token fingerprints of a value (libinjection's idea): one letter a token, as written and
 * as the continuation of a string the application opened with `'`, `"` or a backtick (see sqli.ts).
 */
function fingerprint(sql: string): string {
  const types = (quote?: '"' | "'" | '`') =>
    tokenize(sql, quote)
      .map((t) => t.t)
      .join('');
  const readings = [`as written ${types() || '-'}`];
  for (const quote of ["'", '"', '`'] as const)
    if (sql.includes(quote)) readings.push(`after ${quote} ${types(quote) || '-'}`);
  return readings.join(' | ');
}

interface ValueReport {
  target: string;
  kind: Target['kind'];
  value: string;
  views: { decoded: string; lower: string; sql: string; shell: string; path: string };
  sqlTokens: string;
  rules: Array<{
    id: string;
    family: string;
    paranoia: number;
    score: number;
    view: string;
    operator: string;
  }>;
}

/** Run `portcullis waf-test`; returns the exit code. */
export function wafTestCli(argv: string[]): number {
  let values: ReturnType<typeof parse>['values'];
  let positionals: string[];
  try {
    ({ values, positionals } = parse(argv));
  } catch (err) {
    console.error(`portcullis waf-test: ${(err as Error).message}\n\n${WAF_TEST_USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(WAF_TEST_USAGE);
    return 0;
  }
  const place = (values.in ?? 'query') as Place;
  const paranoia = Number(values.paranoia ?? 1);
  const threshold = Number(values.threshold ?? 5);
  let exclusions: Exclusion[];
  try {
    if (!PLACES.includes(place)) throw new TypeError(`--in must be one of ${PLACES.join(', ')}`);
    if (![1, 2, 3, 4].includes(paranoia)) throw new TypeError('--paranoia must be 1, 2, 3 or 4');
    if (!Number.isFinite(threshold) || threshold < 1)
      throw new TypeError('--threshold must be a number >= 1');
    if (positionals.length > 1) throw new TypeError(`one value only (got ${positionals.length}); quote it`);
    if (
      positionals.length === 0 &&
      values.body === undefined &&
      values.path === undefined &&
      !values.header?.length
    )
      throw new TypeError('give a value, or a request (--path, -H, --body)');
    exclusions = (values.exclude ?? []).map(parseExclusion);
  } catch (err) {
    console.error(`portcullis waf-test: ${(err as Error).message}\n\n${WAF_TEST_USAGE}`);
    return 2;
  }
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const colon = h.indexOf(':');
    if (colon <= 0) {
      console.error(`portcullis waf-test: header "${h}" is not 'name: value'`);
      return 2;
    }
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  const name = values.name ?? (place === 'header' ? 'x-test' : 'q');
  const { parts } = requestFor(positionals[0], place, name, {
    method: values.method,
    path: values.path ?? '/',
    headers,
    body: values.body,
  });

  const engine = compileEngine({ paranoia, exclusions });
  const result = engine.inspect(parts);
  const blocked = result.score >= threshold || result.limit !== undefined || result.bodyError !== undefined;
  const enabled = RULES.filter((r) => r.paranoia <= paranoia);
  const reports: ValueReport[] = requestTargets(parts).map((target) => {
    const view = viewOf(target);
    return {
      target: target.key,
      kind: target.kind,
      value: target.value,
      views: { decoded: view.decoded, lower: view.lower, sql: view.sql, shell: view.shell, path: view.path },
      sqlTokens: fingerprint(view.sql),
      rules: enabled
        .filter((r) => (!r.kinds || r.kinds.includes(target.kind)) && r.test(view))
        .map((r) => ({
          id: r.id,
          family: r.family,
          paranoia: r.paranoia,
          score: r.score,
          view: r.view,
          operator: r.operator,
        })),
    };
  });
  const levels = [1, 2, 3, 4].map((pl) => ({
    paranoia: pl,
    score: compileEngine({ paranoia: pl, exclusions }).inspect(parts).score,
  }));

  if (values.json) {
    console.log(
      JSON.stringify(
        {
          request: { method: parts.method, url: parts.url, headers: parts.headers, body: parts.body },
          paranoia,
          threshold,
          values: reports,
          matches: result.matches,
          score: result.score,
          limit: result.limit,
          verdict: blocked ? 'block' : 'pass',
          scoreByParanoia: levels,
        },
        null,
        2,
      ),
    );
    return blocked ? 1 : 0;
  }

  const q = (s: string): string => JSON.stringify(s.length > 300 ? `${s.slice(0, 300)}…` : s);
  console.log(
    `Request: ${parts.method} ${parts.url}${parts.body !== undefined ? `  (body ${parts.body.length} bytes)` : ''}`,
  );
  console.log(
    `Paranoia ${paranoia}, threshold ${threshold}${exclusions.length ? `, ${exclusions.length} exclusion(s)` : ''}\n`,
  );
  console.log('Values inspected:');
  for (const r of reports) {
    // Names (`q` of `?q=`) are listed only when a rule fires on them.
    if (r.kind.endsWith('-name') && r.rules.length === 0) continue;
    console.log(`  ${r.target}  (${r.kind})  ${q(r.value)}`);
    const { decoded, lower } = r.views;
    for (const [v, text] of Object.entries(r.views)) {
      const same = v === 'decoded' ? r.value : v === 'lower' ? decoded : lower;
      if (text !== same) console.log(`    ${`${v}:`.padEnd(12)}${q(text)}`);
    }
    if (/[a-z'"`]/.test(r.views.sql)) console.log(`    ${'sql tokens:'.padEnd(12)}${r.sqlTokens}`);
    for (const rule of r.rules)
      console.log(
        `    fires ${rule.id} (${rule.family}, PL${rule.paranoia}, +${rule.score}; reads ${rule.view}, ${rule.operator})${result.matches.some((m) => m.id === rule.id) ? '' : ' — excluded'}`,
      );
  }
  console.log('\nRules that fired (each counted once per request):');
  if (result.matches.length === 0) console.log('  none');
  for (const m of result.matches) {
    const rule = RULES.find((r) => r.id === m.id);
    console.log(
      `  ${m.id.padEnd(26)} ${m.family.padEnd(9)} +${m.score}  on ${m.target}${rule ? `  ${rule.description}` : ''}`,
    );
  }
  if (result.limit) console.log(`  limit exceeded: ${result.limit}`);
  console.log(
    `\nScore ${result.score} (threshold ${threshold}): ${blocked ? 'BLOCKED (403 PC_WAF_BLOCKED)' : 'passes'}`,
  );
  console.log(`Score by paranoia level: ${levels.map((l) => `PL${l.paranoia} ${l.score}`).join(', ')}`);
  if (blocked && result.matches.length > 0) {
    console.log("\nIf this is legitimate traffic, an exclusion in the route's waf policy lets it through:");
    console.log('  exclusions:');
    const byTarget = new Map<string, string[]>();
    for (const m of result.matches) byTarget.set(m.target, [...(byTarget.get(m.target) ?? []), m.id]);
    for (const [target, ids] of byTarget) {
      const t = target === 'request' || target === 'body:' || target === 'cookie:' ? undefined : target;
      console.log(
        `    - { ${t ? `target: '${t}', ` : `paths: ['${parts.url.split('?')[0]}'], `}rules: [${ids.join(', ')}] }`,
      );
    }
  }
  return blocked ? 1 : 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      in: { type: 'string' },
      name: { type: 'string' },
      method: { type: 'string' },
      path: { type: 'string' },
      header: { type: 'string', short: 'H', multiple: true },
      body: { type: 'string' },
      paranoia: { type: 'string', short: 'p' },
      threshold: { type: 'string' },
      exclude: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}
