import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { ERRORS, PROBLEM_BASE, ProblemError } from './errors.ts';

describe('error catalogue', () => {
  it('docs/errors.md lists every code with its status and type, and nothing else', async () => {
    const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8');
    const documented = [...doc.matchAll(/^\| `(PC_\w+)` \| (\d+) \| `([^`]+)` \|/gm)].map((m) => [
      m[1],
      Number(m[2]),
      m[3],
    ]);
    const actual = Object.entries(ERRORS).map(([code, e]) => [code, e.status, PROBLEM_BASE + e.type]);
    expect(documented).toEqual(actual);
  });

  it('every problem type is unique', () => {
    const types = Object.values(ERRORS).map((e) => e.type);
    expect(new Set(types).size).toBe(types.length);
  });

  it('a ProblemError takes its status from the catalogue', () => {
    const err = new ProblemError('PC_UPSTREAM_TIMEOUT');
    expect(err.status).toBe(504);
    expect(err.message).toBe(ERRORS.PC_UPSTREAM_TIMEOUT.title);
  });
});
