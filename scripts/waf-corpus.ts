/**
 * Measure the WAF on the OWASP CRS regression corpus (../shared/data/crs/ next to the repo) and on
 * the project's benign corpus (test/waf/benign-corpus.ts). The CRS corpus is never copied into the
 * project.
 *
 * The CRS cases are split once, by a hash of the case id, into a TUNING part (70 %) and a
 * HELD-BACK part (30 %). Rules are tuned by looking at misses of the tuning part only
 * (`--misses` lists those); the held-back part says how the rules do on cases nobody tuned on.
 * A change that raises the tuning part and lowers the held-back part is a regression.
 *
 * Reported, for the tuning part, the held-back part and the whole: detection of `match` cases per
 * family and case paranoia level, for engine paranoia 1 to 4; false positives on the ids in
 * benign-ids.txt (requests the CRS itself lets through) and on the project's benign corpus.
 *
 *   npm run waf:corpus                        # tables and the acceptance check
 *   npm run waf:corpus -- --misses sqli:1     # missed TUNING cases of a family at paranoia 1
 *   npm run waf:corpus -- --fp                # benign requests blocked at paranoia 1
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileEngine } from '../src/policies/waf/engine.ts';
import type { RequestParts } from '../src/policies/waf/types.ts';
import { benignCorpus } from '../test/waf/benign-corpus.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CORPUS_DIR = resolve(ROOT, '../shared/data/crs');
const CORPUS = join(CORPUS_DIR, 'crs-regression.jsonl');
const BENIGN = join(CORPUS_DIR, 'benign-ids.txt');
const ACCEPTANCE_FAMILIES = ['sqli', 'xss', 'rce', 'lfi'];
const THRESHOLD = 5;
/** Acceptance at engine paranoia 1: detection per family on the held-back part, false-positive ceilings. */
const MIN_DETECTION = 0.95;
const MAX_FP_PROJECT = 0.005;
const MAX_FP_CRS = 0.02;

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

/** The fixed split: the first byte of SHA-256(id) below 70 % of 256 is tuning, the rest held back. */
export function isHeldBack(id: string): boolean {
  return (createHash('sha256').update(id).digest()[0] as number) >= Math.round(0.7 * 256);
}

const engines = [1, 2, 3, 4].map((pl) => compileEngine({ paranoia: pl }));
const pct = (a: number, b: number): string =>
  b === 0 ? '     - ' : `${((100 * a) / b).toFixed(1).padStart(6)}%`;
const args = process.argv.slice(2);
const missesArg = args.includes('--misses') ? args[args.indexOf('--misses') + 1] : undefined;
const fpArg = args.includes('--fp');
let ok = true;

// The project's benign corpus: always present.
const benign = benignCorpus();
const benignBlocked = [1, 2, 3, 4].map(
  (pl) => benign.filter((r) => engines[pl - 1]!.inspect(r.parts).score >= THRESHOLD).length,
);

if (!existsSync(CORPUS) || !existsSync(BENIGN)) {
  console.log(`WAF corpus not found: expected ${CORPUS} and ${BENIGN}.`);
  console.log(
    'It lives outside the project (shared/data/crs/ next to the repository); only the benign corpus was measured.',
  );
} else {
  console.log(`Reading the corpus from ${CORPUS}`);
  const cases: Case[] = readFileSync(CORPUS, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Case);
  const benignIds = new Set(readFileSync(BENIGN, 'utf8').split(/\s+/).filter(Boolean));
  const parts = (c: Case): RequestParts => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(c.headers)) headers[k.toLowerCase()] = String(v);
    return { method: c.method, url: c.uri, headers, body: c.body ?? undefined };
  };
  // Each case judged once per engine paranoia.
  const verdict = new Map<Case, boolean[]>();
  for (const c of cases)
    verdict.set(
      c,
      engines.map((e) => e.inspect(parts(c)).score >= THRESHOLD),
    );
  const blocked = (pl: number, c: Case): boolean => verdict.get(c)![pl - 1]!;
  const families = [...new Set(cases.map((c) => c.family))].sort();
  const partsOf: Array<[string, (c: Case) => boolean]> = [
    ['TUNING (70 %)', (c) => !isHeldBack(c.id)],
    ['HELD-BACK (30 %)', (c) => isHeldBack(c.id)],
    ['WHOLE', () => true],
  ];

  for (const [label, inPart] of partsOf) {
    console.log(
      `\n== ${label}: detection of \`match\` cases (blocked at threshold ${THRESHOLD}) by family and case paranoia; columns: engine paranoia`,
    );
    console.log(
      `${'family'.padEnd(18)}${'case PL'.padEnd(9)}${'n'.padStart(5)}     PL1     PL2     PL3     PL4`,
    );
    for (const fam of families) {
      for (const cpl of [1, 2, 3, 4]) {
        const set = cases.filter(
          (c) => inPart(c) && c.family === fam && c.paranoia === cpl && c.expect === 'match',
        );
        if (set.length === 0) continue;
        const cols = [1, 2, 3, 4].map((pl) => pct(set.filter((c) => blocked(pl, c)).length, set.length));
        console.log(
          `${fam.padEnd(18)}${String(cpl).padEnd(9)}${String(set.length).padStart(5)}  ${cols.join(' ')}`,
        );
      }
    }
    const bset = cases.filter((c) => inPart(c) && benignIds.has(c.id));
    const cols = [1, 2, 3, 4].map((pl) => pct(bset.filter((c) => blocked(pl, c)).length, bset.length));
    console.log(
      `${'CRS benign-ids (false positives)'.padEnd(27)}${String(bset.length).padStart(5)}  ${cols.join(' ')}`,
    );
  }

  console.log('\nAcceptance (engine paranoia 1, HELD-BACK part, case paranoia 1):');
  for (const fam of ACCEPTANCE_FAMILIES) {
    const set = cases.filter(
      (c) => isHeldBack(c.id) && c.family === fam && c.paranoia === 1 && c.expect === 'match',
    );
    const hit = set.filter((c) => blocked(1, c)).length;
    const pass = hit >= MIN_DETECTION * set.length;
    ok &&= pass;
    console.log(
      `  ${fam.padEnd(6)} detection ${pct(hit, set.length)} (${hit}/${set.length})  ${pass ? 'ok' : `BELOW ${MIN_DETECTION * 100}%`}`,
    );
  }
  const crsBenign = cases.filter((c) => benignIds.has(c.id));
  const fp = crsBenign.filter((c) => blocked(1, c)).length;
  const crsPass = fp <= MAX_FP_CRS * crsBenign.length;
  ok &&= crsPass;
  console.log(
    `  CRS benign-ids blocked      ${pct(fp, crsBenign.length)} (${fp}/${crsBenign.length})  ${crsPass ? 'ok' : `ABOVE ${MAX_FP_CRS * 100}%`}`,
  );

  if (missesArg) {
    const [fam, cpl] = missesArg.split(':');
    const pl = Number(cpl ?? 1);
    console.log(`\nMissed TUNING ${fam} cases (case PL ${cpl ?? 'any'}) at engine PL ${pl}:`);
    for (const c of cases) {
      if (isHeldBack(c.id) || c.family !== fam || c.expect !== 'match' || (cpl && c.paranoia !== pl))
        continue;
      if (!blocked(pl, c))
        console.log(`  ${c.id}  ${c.method} ${c.uri.slice(0, 140)}  ${(c.body ?? '').slice(0, 140)}`);
    }
  }
  if (fpArg) {
    console.log('\nCRS benign cases blocked at PL1:');
    for (const c of crsBenign) {
      const r = engines[0]!.inspect(parts(c));
      if (r.score >= THRESHOLD)
        console.log(
          `  ${c.id}  ${r.matches.map((m) => `${m.id}@${m.target}`).join(',')}  ${c.uri.slice(0, 100)} ${(c.body ?? '').slice(0, 100)}`,
        );
    }
  }
}

console.log(
  `\nFalse positives on the project's benign corpus (${benign.length} requests; test/waf/benign-corpus.ts):`,
);
console.log(
  `  ${[1, 2, 3, 4].map((pl) => `PL${pl} ${pct(benignBlocked[pl - 1]!, benign.length)}`).join('   ')}`,
);
const projectPass = benignBlocked[0]! <= MAX_FP_PROJECT * benign.length;
ok &&= projectPass;
console.log(
  `  at PL1 ${benignBlocked[0]}/${benign.length}  ${projectPass ? 'ok' : `ABOVE ${MAX_FP_PROJECT * 100}%`}`,
);
if (fpArg) {
  console.log('\nProject benign requests blocked at PL1:');
  for (const r of benign) {
    const res = engines[0]!.inspect(r.parts);
    if (res.score >= THRESHOLD)
      console.log(`  ${r.source} (${r.shape})  ${res.matches.map((m) => `${m.id}@${m.target}`).join(',')}`);
  }
}
console.log(ok ? '\nAcceptance met.' : '\nAcceptance NOT met.');
process.exitCode = ok ? 0 : 1;
