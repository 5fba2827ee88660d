/**
 * Measure the WAF on the OWASP CRS regression corpus (../shared/data/crs/ next to the repo):
 * detection rate of `match` cases per family and case paranoia level, and false-positive rate on
 * the ids in benign-ids.txt, for engine paranoia 1 to 4. Runs the same engine as the policy, on
 * each case's method, URI, headers and body. The corpus is never copied into the project.
 *
 *   npm run waf:corpus            # table
 *   npm run waf:corpus -- --misses sqli:1   # list the missed ids of a family at paranoia 1
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileEngine } from '../src/policies/waf/engine.ts';
import type { RequestParts } from '../src/policies/waf/types.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CORPUS_DIR = resolve(ROOT, '../shared/data/crs');
const CORPUS = join(CORPUS_DIR, 'crs-regression.jsonl');
const BENIGN = join(CORPUS_DIR, 'benign-ids.txt');
const ACCEPTANCE_FAMILIES = ['sqli', 'xss', 'rce', 'lfi'];
const THRESHOLD = 5;

interface Case {
  id: string;
  family: string;
  paranoia: number;
  method: string;
  uri: string;
  headers: Record<string, string | number>;
  body: string | null;
  expect: 'match' | 'no-match';
}

if (!existsSync(CORPUS) || !existsSync(BENIGN)) {
  console.log(`WAF corpus not found: expected ${CORPUS} and ${BENIGN}.`);
  console.log(
    'It lives outside the project (shared/data/crs/ next to the repository); nothing was measured.',
  );
  process.exit(0);
}
console.log(`Reading the corpus from ${CORPUS}`);

const cases: Case[] = readFileSync(CORPUS, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Case);
const benign = new Set(readFileSync(BENIGN, 'utf8').split(/\s+/).filter(Boolean));

function parts(c: Case): RequestParts {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.headers)) headers[k.toLowerCase()] = String(v);
  return { method: c.method, url: c.uri, headers, body: c.body ?? undefined };
}

const args = process.argv.slice(2);
const missesArg = args[args.indexOf('--misses') + 1];
const fpArg = args.includes('--fp');

const engines = [1, 2, 3, 4].map((pl) => compileEngine({ paranoia: pl }));
const blocked = (pl: number, c: Case): boolean => engines[pl - 1]!.inspect(parts(c)).score >= THRESHOLD;

const families = [...new Set(cases.map((c) => c.family))].sort();
const pct = (a: number, b: number): string =>
  b === 0 ? '   -  ' : `${((100 * a) / b).toFixed(1).padStart(5)}%`;

console.log(
  `\nDetection of \`match\` cases (blocked at threshold ${THRESHOLD}), by family and case paranoia; columns: engine paranoia`,
);
console.log(`${'family'.padEnd(18)}${'case PL'.padEnd(9)}${'n'.padStart(5)}   PL1     PL2     PL3     PL4`);
for (const fam of families) {
  for (const cpl of [1, 2, 3, 4]) {
    const set = cases.filter((c) => c.family === fam && c.paranoia === cpl && c.expect === 'match');
    if (set.length === 0) continue;
    const cols = [1, 2, 3, 4].map((pl) => pct(set.filter((c) => blocked(pl, c)).length, set.length));
    console.log(
      `${fam.padEnd(18)}${String(cpl).padEnd(9)}${String(set.length).padStart(5)}  ${cols.join('  ')}`,
    );
  }
}

console.log('\nFalse positives on benign-ids.txt (blocked), by family; columns: engine paranoia');
const benignCases = cases.filter((c) => benign.has(c.id));
for (const fam of [...families, 'ALL']) {
  const set = fam === 'ALL' ? benignCases : benignCases.filter((c) => c.family === fam);
  if (set.length === 0) continue;
  const cols = [1, 2, 3, 4].map((pl) => pct(set.filter((c) => blocked(pl, c)).length, set.length));
  console.log(`${fam.padEnd(27)}${String(set.length).padStart(5)}  ${cols.join('  ')}`);
}

console.log('\nAcceptance (engine paranoia 1, case paranoia 1):');
let ok = true;
for (const fam of ACCEPTANCE_FAMILIES) {
  const set = cases.filter((c) => c.family === fam && c.paranoia === 1 && c.expect === 'match');
  const hit = set.filter((c) => blocked(1, c)).length;
  const rate = hit / set.length;
  ok &&= rate >= 0.97;
  console.log(
    `  ${fam.padEnd(6)} detection ${pct(hit, set.length)} (${hit}/${set.length})  ${rate >= 0.97 ? 'ok' : 'BELOW 97%'}`,
  );
}
const fp = benignCases.filter((c) => blocked(1, c)).length;
ok &&= fp / benignCases.length <= 0.02;
console.log(
  `  benign blocked ${pct(fp, benignCases.length)} (${fp}/${benignCases.length})  ${fp / benignCases.length <= 0.02 ? 'ok' : 'ABOVE 2%'}`,
);
console.log(ok ? 'Acceptance met.' : 'Acceptance NOT met.');
process.exitCode = ok ? 0 : 1;

if (missesArg && missesArg !== '--misses') {
  const [fam, cpl] = missesArg.split(':');
  console.log(`\nMissed ${fam} (case PL ${cpl ?? 'any'}) at engine PL ${cpl ?? 1}:`);
  for (const c of cases) {
    if (c.family !== fam || c.expect !== 'match' || (cpl && c.paranoia !== Number(cpl))) continue;
    if (!blocked(Number(cpl ?? 1), c))
      console.log(`  ${c.id}  ${c.method} ${c.uri.slice(0, 120)}  ${(c.body ?? '').slice(0, 120)}`);
  }
}
if (fpArg) {
  console.log('\nBenign blocked at PL1:');
  for (const c of benignCases) {
    const r = engines[0]!.inspect(parts(c));
    if (r.score >= THRESHOLD)
      console.log(
        `  ${c.id}  ${r.matches.map((m) => `${m.id}@${m.target}`).join(',')}  ${c.uri.slice(0, 100)} ${(c.body ?? '').slice(0, 100)}`,
      );
  }
}
