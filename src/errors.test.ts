import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { normalise, renderErrorTable } from '../scripts/docs.ts';
import { ERRORS, ProblemError } from './errors.ts';

describe('error catalogue', () => {
  it('docs/errors.md holds the table generated from src/errors.ts (npm run docs)', async () => {
    const doc = await readFile(new URL('../docs/errors.md', import.meta.url), 'utf8');
    expect(normalise(doc)).toContain(normalise(renderErrorTable()));
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
