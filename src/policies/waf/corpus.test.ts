import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../../scripts/waf-corpus.ts', import.meta.url));
const CORPUS = fileURLToPath(new URL('../../../../shared/data/crs/crs-regression.jsonl', import.meta.url));

// The OWASP CRS corpus lives outside the project (shared/ next to the repository, as on CI);
// where it is absent there is nothing to measure against.
describe.skipIf(!existsSync(CORPUS))('WAF on the OWASP CRS regression corpus (npm run waf:corpus)', () => {
  it('detects >= 95% of held-back sqli, xss, rce and lfi attacks at paranoia 1; blocks <= 2% of CRS benign cases and <= 0.5% of the project benign corpus', () => {
    const run = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8', timeout: 120_000 });
    expect(run.stdout).toContain('Acceptance met.');
    expect(run.status).toBe(0);
  }, 150_000);
});
