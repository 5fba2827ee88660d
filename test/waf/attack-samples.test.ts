import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compileEngine } from '../../src/policies/waf/engine.ts';

/**
 * Attacks in the shapes public payload lists use (SQL injection, XSS, command injection, path
 * traversal and file access), written for this test, each sent as a query value, a JSON field
 * and a form field: all must be blocked at paranoia 1.
 */
const SAMPLES = JSON.parse(readFileSync(new URL('./attack-samples.json', import.meta.url), 'utf8')) as Record<
  string,
  string[]
>;
const engine = compileEngine({ paranoia: 1 });
const headers = { host: 'api.example.com', 'user-agent': 'Mozilla/5.0' };

describe.each(Object.entries(SAMPLES))('%s samples are blocked at paranoia 1', (_family, list) => {
  it.each(list)('%j', (payload) => {
    const shapes = [
      { method: 'GET', url: `/x?q=${encodeURIComponent(payload)}`, headers },
      {
        method: 'POST',
        url: '/x',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ q: payload }),
      },
      {
        method: 'POST',
        url: '/x',
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
        body: `q=${encodeURIComponent(payload)}`,
      },
    ];
    expect(shapes.map((r) => engine.inspect(r).score >= 5)).toEqual([true, true, true]);
  });
});
