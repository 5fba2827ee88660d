/**
 * A BLIND measure of the WAF: attack payloads and benign traffic its rules were never tuned on.
 *
 *   npm run waf:blind -- <dir>                 # tables for every list in <dir>
 *   npm run waf:blind -- <dir> --misses sqli   # missed payloads of a family, TUNE half only
 *   npm run waf:blind -- <dir> --fp            # held-out benign requests blocked at paranoia 1
 *   npm run waf:blind -- <dir> --crs <url>     # the same requests also sent to a reference WAF
 *
 * `--crs <url>`: every request (attacks and both benign corpora) is also sent over HTTP to `url`,
 * a web server with the OWASP Core Rule Set in blocking mode (e.g. Apache with ModSecurity and
 * Debian's modsecurity-crs, listening on 127.0.0.1), and a 403 counts as blocked; a table puts its
 * detection and false positives next to the engine's at paranoia 1. Only loopback URLs are accepted.
 *
 * <dir> lives outside the project (public payload lists are third-party data and are never
 * committed) and holds, at any depth:
 * - plain lists (`*.txt`, `*.lst`): one payload per line; the family is the file name's first
 *   word (`sqli-…`, `xss-…`, `rce-…`, `lfi-…`, or a folder of that name). Empty lines and lines
 *   starting with `# ` are skipped. Each payload is sent three ways, as an API receives one: a
 *   query value (`GET /search?q=<percent-encoded>`), a JSON field and a form field. A request
 *   blocked at the default threshold is a detection.
 * - OWASP CRS regression tests (`*.yaml`, go-ftw format, old or new): the requests of the cases
 *   that expect their rule to fire, sent as written (like scripts/waf-corpus.ts does). The family
 *   comes from the rule id. Cases whose request is also in ../shared/data/crs (the corpus the
 *   rules were tuned on) are left out and counted.
 *
 * Every payload is put, once, in one of two halves by a hash of its family and text: TUNE and
 * HOLD. Rules may be tuned by looking at misses of the TUNE half only (`--misses` lists those);
 * the HOLD half says how a change generalises. Both are reported, with the whole.
 *
 * False positives are measured on test/waf/benign-holdout.ts (faker with a second seed range and
 * other locales, plus its own hard cases), apart from the tuning corpus test/waf/benign-corpus.ts.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { compileEngine } from '../src/policies/waf/engine.ts';
import type { RequestParts } from '../src/policies/waf/types.ts';
import { benignCorpus } from '../test/waf/benign-corpus.ts';
import { holdoutBenignCorpus } from '../test/waf/benign-holdout.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TUNED_CORPUS = resolve(ROOT, '../shared/data/crs/crs-regression.jsonl');
const THRESHOLD = 5;
const PLS = [1, 2, 3, 4] as const;
const FAMILIES = ['sqli', 'xss', 'rce', 'lfi', 'rfi', 'php', 'java', 'generic'];
/** CRS rule id ranges → family. */
const CRS_FAMILY: Array<[number, string]> = [
  [930, 'lfi'],
  [931, 'rfi'],
  [932, 'rce'],
  [933, 'php'],
  [934, 'generic'],
  [941, 'xss'],
  [942, 'sqli'],
  [944, 'java'],
];

type Shape = 'query' | 'json' | 'form' | 'crs';
interface Payload {
  family: string;
  source: string;
  text: string;
  half: 'TUNE' | 'HOLD';
  requests: Array<[Shape, RequestParts]>;
}

const args = process.argv.slice(2);
const dir = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--misses' && args[i - 1] !== '--crs');
const missesArg = args.includes('--misses') ? args[args.indexOf('--misses') + 1] : undefined;
const crsUrl = args.includes('--crs') ? args[args.indexOf('--crs') + 1] : undefined;
const fpArg = args.includes('--fp');
if (!dir || !existsSync(dir)) {
  console.error(
    'usage: npm run waf:blind -- <dir of payload lists / CRS yaml> [--misses FAMILY] [--fp] [--crs http://127.0.0.1:8088]',
  );
  process.exit(2);
}

const BASE_HEADERS = {
  host: 'api.example.com',
  'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
  accept: 'application/json',
};

/** The half of a payload: fixed by SHA-256 of family and text, never by what the rules do. */
function halfOf(family: string, text: string): 'TUNE' | 'HOLD' {
  return (createHash('sha256').update(`${family}\0${text}`).digest()[0] as number) < 128 ? 'TUNE' : 'HOLD';
}

function valueRequests(p: string): Array<[Shape, RequestParts]> {
  return [
    ['query', { method: 'GET', url: `/search?q=${encodeURIComponent(p)}&limit=20`, headers: BASE_HEADERS }],
    [
      'json',
      {
        method: 'POST',
        url: '/items',
        headers: { ...BASE_HEADERS, 'content-type': 'application/json' },
        body: JSON.stringify({ id: 7, q: p, active: true }),
      },
    ],
    [
      'form',
      {
        method: 'POST',
        url: '/form',
        headers: { ...BASE_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
        body: `q=${encodeURIComponent(p)}&page=1`,
      },
    ],
  ];
}

function familyOfPath(path: string): string | undefined {
  for (const part of path.split('/').reverse()) {
    const word = part.toLowerCase().split(/[-_.]/)[0] ?? '';
    if (FAMILIES.includes(word)) return word;
  }
  return undefined;
}

function walk(d: string): string[] {
  return readdirSync(d).flatMap((n) => {
    const p = join(d, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** Requests of the tuning corpus, to leave out of the blind set. */
const tunedRequests = new Set<string>();
if (existsSync(TUNED_CORPUS))
  for (const line of readFileSync(TUNED_CORPUS, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const c = JSON.parse(line) as { method: string; uri: string; body: string | null };
    tunedRequests.add(`${c.method} ${c.uri} ${c.body ?? ''}`);
  }

interface FtwInput {
  method?: string;
  uri?: string;
  headers?: Record<string, string | number>;
  data?: string | string[];
}
interface FtwOutput {
  log_contains?: string;
  log?: { expect_ids?: number[] };
  expect_error?: boolean;
}
interface FtwStage {
  input?: FtwInput;
  output?: FtwOutput;
  stage?: { input?: FtwInput; output?: FtwOutput };
}
interface FtwTest {
  test_title?: string;
  test_id?: number;
  stages?: FtwStage[];
}

const payloads: Payload[] = [];
let crsLeftOut = 0;
for (const file of walk(dir).sort()) {
  const rel = file.slice(dir.length).replace(/^\/+/, '');
  if (/\.(txt|lst)$/i.test(file)) {
    const family = familyOfPath(rel);
    if (!family) {
      console.warn(`skipped ${rel}: no family in its name`);
      continue;
    }
    const seen = new Set<string>();
    for (const raw of readFileSync(file, 'utf8').split(/\r?\n/)) {
      if (!raw.trim() || raw.startsWith('# ') || seen.has(raw)) continue;
      seen.add(raw);
      payloads.push({
        family,
        source: basename(file),
        text: raw,
        half: halfOf(family, raw),
        requests: valueRequests(raw),
      });
    }
  } else if (/\.ya?ml$/i.test(file)) {
    const doc = parseYaml(readFileSync(file, 'utf8')) as {
      rule_id?: number;
      tests?: FtwTest[];
    };
    const ruleId = doc.rule_id ?? Number(/(\d{6})/.exec(basename(file))?.[1]);
    const family = CRS_FAMILY.find(([p]) => Math.floor(ruleId / 1000) === p)?.[1];
    if (!family) continue;
    for (const t of doc.tests ?? []) {
      for (const st of t.stages ?? []) {
        const input = st.input ?? st.stage?.input;
        const output = st.output ?? st.stage?.output;
        if (!input || !output || output.expect_error) continue;
        const fires =
          output.log?.expect_ids?.includes(ruleId) || (output.log_contains ?? '').includes(String(ruleId));
        if (!fires) continue;
        const method = input.method ?? 'GET';
        const uri = input.uri ?? '/';
        const body = Array.isArray(input.data) ? input.data.join('\r\n') : (input.data ?? undefined);
        if (tunedRequests.has(`${method} ${uri} ${body ?? ''}`)) {
          crsLeftOut++;
          continue;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(input.headers ?? { Host: 'localhost' }))
          headers[k.toLowerCase()] = String(v);
        const text = `${method} ${uri}${body ? ` ${body}` : ''}`;
        payloads.push({
          family,
          source: `${ruleId}-${t.test_id ?? t.test_title}`,
          text,
          half: halfOf(family, text),
          requests: [['crs', { method, url: uri, headers, body }]],
        });
      }
    }
  }
}

const engines = PLS.map((pl) => compileEngine({ paranoia: pl }));
const pct = (a: number, b: number): string =>
  b === 0 ? '     - ' : `${((100 * a) / b).toFixed(1).padStart(6)}%`;
/** Per payload and request: blocked at each paranoia. */
const verdicts = new Map<Payload, boolean[][]>();
for (const p of payloads)
  verdicts.set(
    p,
    p.requests.map(([, r]) => engines.map((e) => e.inspect(r).score >= THRESHOLD)),
  );

console.log(
  `Blind payloads from ${dir}: ${payloads.length} payloads, ${payloads.reduce((n, p) => n + p.requests.length, 0)} requests` +
    (crsLeftOut ? ` (${crsLeftOut} CRS cases left out: also in the tuning corpus)` : ''),
);
const families = [...new Set(payloads.map((p) => p.family))].sort();
const shapesOf = [...new Set(payloads.flatMap((p) => p.requests.map(([s]) => s)))];
for (const [label, inPart] of [
  ['TUNE half', (p: Payload) => p.half === 'TUNE'],
  ['HOLD half', (p: Payload) => p.half === 'HOLD'],
  ['WHOLE', () => true],
] as Array<[string, (p: Payload) => boolean]>) {
  console.log(`\n== ${label}: requests blocked (threshold ${THRESHOLD}); columns: engine paranoia`);
  console.log(`${'family'.padEnd(8)}${'shape'.padEnd(7)}${'n'.padStart(6)}     PL1     PL2     PL3     PL4`);
  let totalN = 0;
  const totalHit = [0, 0, 0, 0];
  for (const fam of families) {
    const set = payloads.filter((p) => inPart(p) && p.family === fam);
    for (const shape of [...shapesOf, 'all'] as Array<Shape | 'all'>) {
      let n = 0;
      const hit = [0, 0, 0, 0];
      for (const p of set)
        p.requests.forEach(([s], i) => {
          if (shape !== 'all' && s !== shape) return;
          n++;
          for (const pl of PLS) if (verdicts.get(p)![i]![pl - 1]) hit[pl - 1]!++;
        });
      if (n === 0) continue;
      if (shape === 'all') {
        totalN += n;
        for (const pl of PLS) totalHit[pl - 1]! += hit[pl - 1]!;
      }
      console.log(
        `${fam.padEnd(8)}${shape.padEnd(7)}${String(n).padStart(6)}  ${PLS.map((pl) => pct(hit[pl - 1]!, n)).join(' ')}`,
      );
    }
  }
  console.log(
    `${'ALL'.padEnd(15)}${String(totalN).padStart(6)}  ${PLS.map((pl) => pct(totalHit[pl - 1]!, totalN)).join(' ')}`,
  );
}

console.log('\nDetection per source list, engine paranoia 1 (requests blocked, whole):');
for (const src of [...new Set(payloads.filter((p) => p.requests[0]![0] !== 'crs').map((p) => p.source))]) {
  const set = payloads.filter((p) => p.source === src);
  const n = set.reduce((k, p) => k + p.requests.length, 0);
  const hit = set.reduce((k, p) => k + verdicts.get(p)!.filter((v) => v[0]).length, 0);
  console.log(`  ${src.padEnd(44)} ${String(n).padStart(5)} ${pct(hit, n)}`);
}

// False positives: the held-out benign corpus, next to the tuning corpus for comparison.
for (const [label, corpus] of [
  ['HELD-OUT benign (test/waf/benign-holdout.ts)', holdoutBenignCorpus()],
  ['tuning benign (test/waf/benign-corpus.ts)', benignCorpus()],
] as const) {
  const blocked = PLS.map((pl) => corpus.filter((r) => engines[pl - 1]!.inspect(r.parts).score >= THRESHOLD));
  console.log(`\nFalse positives on the ${label}: ${corpus.length} requests`);
  console.log(`  ${PLS.map((pl) => `PL${pl} ${pct(blocked[pl - 1]!.length, corpus.length)}`).join('   ')}`);
  console.log(`  at PL1 ${blocked[0]!.length}/${corpus.length}`);
  if (fpArg && label.startsWith('HELD'))
    for (const r of blocked[0]!) {
      const res = engines[0]!.inspect(r.parts);
      const value = r.parts.body ?? r.parts.url;
      console.log(
        `    ${r.source} (${r.shape})  ${res.matches.map((m) => `${m.id}@${m.target}`).join(',')}  ${value.slice(0, 120)}`,
      );
    }
}

if (missesArg) {
  console.log(`\nMissed TUNE-half ${missesArg} payloads at engine PL1 (shapes that got through):`);
  for (const p of payloads) {
    if (p.half !== 'TUNE' || p.family !== missesArg) continue;
    const missed = p.requests.filter((_, i) => !verdicts.get(p)![i]![0]).map(([s]) => s);
    if (missed.length) console.log(`  [${missed.join(',')}] ${p.source}: ${p.text.slice(0, 200)}`);
  }
}

if (crsUrl) await compareWithCrs(crsUrl);

/** The same requests through a reference WAF over HTTP (a 403 is a block), next to the engine at PL1. */
async function compareWithCrs(url: string): Promise<void> {
  const base = new URL(url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(base.hostname)) {
    console.error(`--crs: ${url} is not a loopback address`);
    process.exit(2);
  }
  const { Agent, request } = await import('undici');
  const agent = new Agent({ connections: 16 });
  let errors = 0;
  const blocks = async (r: RequestParts): Promise<boolean> => {
    try {
      const res = await request(new URL(r.url, base), {
        method: r.method as 'GET',
        dispatcher: agent,
        headers: r.headers as Record<string, string>,
        body: typeof r.body === 'string' || Buffer.isBuffer(r.body) ? r.body : undefined,
      });
      await res.body.dump();
      return res.statusCode === 403;
    } catch {
      errors++;
      return false;
    }
  };
  /** Runs `f` over `list`, 16 at a time. */
  const each = async <T>(list: readonly T[], f: (x: T) => Promise<void>): Promise<void> => {
    let i = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (i < list.length) await f(list[i++] as T);
      }),
    );
  };
  const rows = new Map<string, { n: number; ours: number; ref: number }>();
  const jobs = payloads.flatMap((p) => p.requests.map(([, r], i) => ({ p, r, i })));
  await each(jobs, async ({ p, r, i }) => {
    const ref = await blocks(r);
    const ours = verdicts.get(p)![i]![0]!;
    for (const key of [`${p.family} ${p.half}`, `${p.family} all`, `ALL ${p.half}`, 'ALL all']) {
      const row = rows.get(key) ?? { n: 0, ours: 0, ref: 0 };
      row.n++;
      if (ours) row.ours++;
      if (ref) row.ref++;
      rows.set(key, row);
    }
  });
  console.log(`\n== Paranoia 1 against the reference WAF at ${url} (a 403 is a block)`);
  console.log(`${'family half'.padEnd(14)}${'n'.padStart(6)}  portcullis  reference`);
  for (const [key, row] of [...rows].sort(([a], [b]) => a.localeCompare(b)))
    console.log(
      `${key.padEnd(14)}${String(row.n).padStart(6)}     ${pct(row.ours, row.n)}    ${pct(row.ref, row.n)}`,
    );
  for (const [label, corpus] of [
    ['held-out benign', holdoutBenignCorpus()],
    ['tuning benign', benignCorpus()],
  ] as const) {
    let ours = 0;
    let ref = 0;
    await each(corpus, async (r) => {
      if (engines[0]!.inspect(r.parts).score >= THRESHOLD) ours++;
      if (await blocks(r.parts)) ref++;
    });
    console.log(
      `false positives, ${label} (${corpus.length}): portcullis ${ours} (${pct(ours, corpus.length).trim()}), reference ${ref} (${pct(ref, corpus.length).trim()})`,
    );
  }
  if (errors > 0) console.log(`(${errors} requests to the reference failed: counted as not blocked)`);
  await agent.close();
}
