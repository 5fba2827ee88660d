import { describe, expect, it } from 'vitest';
import { compileEngine } from '../../src/policies/waf/engine.ts';
import { benignCorpus, HARD_CASES } from './benign-corpus.ts';
import { HOLDOUT_HARD_CASES, holdoutBenignCorpus } from './benign-holdout.ts';

/** Most requests of the benign corpus the WAF may block at paranoia 1 (the bound). */
const MAX_FP_PL1 = 0.005;
const THRESHOLD = 5;

const corpus = benignCorpus();
const blockedAt = (paranoia: number) => {
  const engine = compileEngine({ paranoia });
  return corpus.filter((r) => engine.inspect(r.parts).score >= THRESHOLD);
};

describe('WAF false positives on realistic API traffic (test/waf/benign-corpus.ts)', () => {
  it('the corpus is large, varied and the same on every run', () => {
    expect(corpus.length).toBeGreaterThan(3000);
    expect(new Set(corpus.map((r) => r.shape))).toEqual(new Set(['query', 'json', 'form', 'header']));
    const locales = new Set(corpus.map((r) => r.source.split(':')[0]));
    expect(locales.size).toBeGreaterThanOrEqual(10);
    // Seeded: a second build gives the same values.
    expect(
      JSON.stringify(
        benignCorpus()
          .slice(0, 50)
          .map((r) => r.parts),
      ),
    ).toBe(JSON.stringify(corpus.slice(0, 50).map((r) => r.parts)));
  });

  it(`blocks at most ${MAX_FP_PL1 * 100}% of the requests at paranoia 1`, () => {
    const blocked = blockedAt(1);
    const rate = blocked.length / corpus.length;
    console.log(
      `benign corpus: ${corpus.length} requests; blocked at PL1 ${blocked.length} (${(100 * rate).toFixed(2)}%)`,
    );
    expect(rate).toBeLessThanOrEqual(MAX_FP_PL1);
  });

  it.each([2, 3, 4])('measures paranoia %i (reported; stricter levels may block more)', (paranoia) => {
    const blocked = blockedAt(paranoia);
    console.log(
      `benign corpus: blocked at PL${paranoia} ${blocked.length}/${corpus.length} (${((100 * blocked.length) / corpus.length).toFixed(2)}%)`,
    );
    // A stricter level never blocks less than a laxer one, and stays usable.
    expect(blocked.length).toBeGreaterThanOrEqual(blockedAt(paranoia - 1).length);
    expect(blocked.length / corpus.length).toBeLessThanOrEqual(0.05);
  });

  const p1 = compileEngine({ paranoia: 1 });
  it.each([
    "O'Brien",
    'Tom & Jerry',
    '1=1 is true',
    'select a size',
    `Ann's note; please select "gift wrap" or leave it`,
    "I'd like to update my order, or cancel it if it's too late",
    'Price < 100 and rating > 4',
    "The 'select' element lists options",
    'Learning Java & Python (3rd edition)',
    'Run `npm install` first',
    'Just in case (abc)',
    'Format (A4)',
    'Head & Shoulders shampoo',
  ])('lets %j through as a query value, a JSON field and a header', (value) => {
    expect(HARD_CASES).toContain(value);
    const query = p1.inspect({
      method: 'GET',
      url: `/search?q=${encodeURIComponent(value)}`,
      headers: { host: 'api.example.com' },
    });
    const json = p1.inspect({
      method: 'POST',
      url: '/items',
      headers: { host: 'api.example.com', 'content-type': 'application/json' },
      body: JSON.stringify({ note: value }),
    });
    const header = p1.inspect({ method: 'GET', url: '/items', headers: { 'x-note': value } });
    expect([query.matches, json.matches, header.matches]).toEqual([[], [], []]);
  });

  it(`blocks at most ${MAX_FP_PL1 * 100}% of the HELD-OUT corpus at paranoia 1 (other seeds and locales, own hard cases)`, () => {
    const holdout = holdoutBenignCorpus();
    expect(holdout.length).toBeGreaterThan(7000);
    // Its hard cases are its own, and few generated requests repeat the tuning corpus's (faker
    // draws short values such as a department name from small lists).
    expect(HOLDOUT_HARD_CASES.filter((v) => HARD_CASES.includes(v))).toEqual([]);
    const tuning = new Set(corpus.map((r) => JSON.stringify(r.parts)));
    expect(holdout.filter((r) => tuning.has(JSON.stringify(r.parts))).length).toBeLessThan(
      holdout.length * 0.02,
    );
    const blocked = holdout.filter((r) => p1.inspect(r.parts).score >= THRESHOLD);
    console.log(
      `held-out benign corpus: ${holdout.length} requests; blocked at PL1 ${blocked.length} (${((100 * blocked.length) / holdout.length).toFixed(2)}%)`,
    );
    expect(blocked.length / holdout.length).toBeLessThanOrEqual(MAX_FP_PL1);
  });
});
