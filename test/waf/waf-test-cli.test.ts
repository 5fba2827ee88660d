import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../../bin/portcullis.js', import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, 'waf-test', ...args], { encoding: 'utf8' });

describe('portcullis waf-test', () => {
  it('explains a blocked value: views, token fingerprints, the rule, the score, an exclusion to write; exit 1', () => {
    const r = run("x' or 1=1--");
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(`query:q  (query)  "x' or 1=1--"`);
    expect(r.stdout).toContain("after ' s&1o1c");
    expect(r.stdout).toMatch(/sqli-syntax\s+sqli\s+\+5\s+on query:q/);
    expect(r.stdout).toContain('Score 5 (threshold 5): BLOCKED');
    expect(r.stdout).toContain("- { target: 'query:q', rules: [sqli-syntax] }");
  });

  it('passes benign prose with exit 0 and shows the score at every paranoia level', () => {
    const r = run('--in', 'body', '--name', 'note', `Ann's note; please select "gift wrap" or leave it`);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('body:note  (body)');
    expect(r.stdout).toContain('Rules that fired (each counted once per request):\n  none');
    expect(r.stdout).toMatch(/Score by paranoia level: PL1 0, PL2 \d+, PL3 \d+, PL4 \d+/);
  });

  it('judges a whole request and applies a path-scoped exclusion given on the command line', () => {
    const request = ['--method', 'POST', '--path', '/cms/pages/1', '-H', 'content-type: application/json'];
    const body = ['--body', '{"html":"<script>x</script>"}'];
    const blocked = run(...request, ...body);
    expect(blocked.status).toBe(1);
    expect(blocked.stdout).toMatch(/xss-tag\s+xss\s+\+5\s+on body:html/);
    const excluded = run(...request, ...body, '--exclude', 'paths=/cms/**,families=xss');
    expect(excluded.status).toBe(0);
    expect(excluded.stdout).toContain('fires xss-tag (xss, PL1, +5; reads lower, pattern) — excluded');
    const elsewhere = run(
      '--method',
      'POST',
      '--path',
      '/blog/1',
      '-H',
      'content-type: application/json',
      ...body,
      '--exclude',
      'paths=/cms/**,families=xss',
    );
    expect(elsewhere.status).toBe(1);
  });

  it('prints JSON with --json', () => {
    const r = run('--json', '--in', 'header', '--name', 'x-note', '<svg onload=alert(1)>');
    expect(r.status).toBe(1);
    const out = JSON.parse(r.stdout) as { verdict: string; matches: Array<{ id: string; target: string }> };
    expect(out.verdict).toBe('block');
    expect(out.matches.map((m) => m.target)).toContain('header:x-note');
  });

  it('refuses a bad command line with exit 2 and the usage', () => {
    const r = run('--paranoia', '7', 'x');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--paranoia must be 1, 2, 3 or 4');
    expect(r.stderr).toContain('Usage: portcullis waf-test');
    expect(run().status).toBe(2);
    const help = spawnSync(process.execPath, [BIN, 'help', 'waf-test'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: portcullis waf-test');
  });
});
