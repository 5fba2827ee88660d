import { describe, expect, it } from 'vitest';
import { HARD_CASES } from '../../../test/waf/benign-corpus.ts';
import { Prefilter } from './plain.ts';
import { RULES } from './rules/index.ts';
import type { Rule } from './types.ts';

/**
 * The prefilter's definition, written the plain way (split, sets, one pattern test per word):
 * Prefilter scans values in place, and must answer exactly as this does.
 */
class Reference {
  readonly words = new Set<string>();
  readonly first = new Set<string>();
  readonly word: RegExp | undefined;
  readonly value: RegExp | undefined;
  constructor(rules: readonly Rule[]) {
    const w: string[] = [];
    const v: string[] = [];
    for (const r of rules) {
      for (const x of r.triggers?.words ?? []) this.words.add(x);
      for (const x of r.triggers?.firstWords ?? []) this.first.add(x);
      if (r.triggers?.word) w.push(`(?:${r.triggers.word.source})`);
      if (r.triggers?.value) v.push(`(?:${r.triggers.value.source})`);
    }
    this.word = w.length ? new RegExp(w.join('|')) : undefined;
    this.value = v.length ? new RegExp(v.join('|')) : undefined;
  }
  test(word: string, first: boolean): boolean {
    if (word === '') return false;
    if (this.words.has(word) || (first && this.first.has(word))) return true;
    return this.word !== undefined && !/^[a-z]+$/.test(word) && this.word.test(word);
  }
  piece(word: string, first: boolean): boolean {
    if (this.test(word, first)) return true;
    for (const piece of word.split('.')) {
      if (piece && piece !== word && this.test(piece, first)) return true;
      for (const part of piece.includes('-') ? piece.split('-') : [])
        if (part && this.test(part, false)) return true;
    }
    return false;
  }
  plain(lower: string): boolean {
    if (this.value?.test(lower)) return true;
    const words = lower.split(/[ ,@]/).filter(Boolean);
    return words.some((w, i) => this.piece(w, i === 0));
  }
  prose(lower: string): boolean {
    if (this.value?.test(lower)) return true;
    const firstWord = /^[ ']*([^ ,@]*)/.exec(lower)?.[1] ?? '';
    if (this.test(firstWord.replaceAll("'", ''), true)) return true;
    return lower
      .split(/[ ,@']/)
      .filter(Boolean)
      .some((w) => this.piece(w, false));
  }
}

/** A fixed pseudo-random sequence (mulberry32): the same strings on every run. */
function random(seed: number): (n: number) => number {
  let a = seed;
  return (n) => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) % n) as number;
  };
}

/** Trigger words, examples and benign hard cases, then words glued with separators and decorations. */
function samples(rules: readonly Rule[]): string[] {
  const words: string[] = [];
  for (const r of rules) {
    for (const w of r.triggers?.words ?? []) words.push(w);
    for (const w of r.triggers?.firstWords ?? []) words.push(w);
  }
  const out = new Set<string>([...words, ...HARD_CASES]);
  for (const r of rules) for (const e of r.examples) out.add(typeof e === 'string' ? e : e.value);
  const rnd = random(20_260_107);
  const seps = [' ', ',', '@', '.', '-', "'", '_', '..', ' -', "x'", '.x-', '-x.', "' "];
  const decor = [
    'x',
    '1',
    '2026',
    '0x1f',
    'a.b',
    'id_',
    'sp_',
    'union',
    '4294967296',
    '.php',
    '.env',
    'invoke-',
    "'",
  ];
  const benign = [
    'jane.doe',
    'example.com',
    'kb-2041',
    'gift',
    'it',
    'please',
    'o',
    'brien',
    '3fa85f64-5717',
  ];
  for (let i = 0; i < 20_000; i++) {
    let s = rnd(6) === 0 ? (seps[rnd(seps.length)] as string) : '';
    for (let j = 0, k = 1 + rnd(4); j < k; j++) {
      const pick = rnd(3);
      const w =
        (pick === 0 ? decor : pick === 1 ? benign : words)[rnd(pick === 2 ? words.length : 13)] ?? 'x';
      if (j > 0) s += seps[rnd(seps.length)];
      if (rnd(5) === 0) s += decor[rnd(decor.length)];
      s += w;
      if (rnd(5) === 0) s += decor[rnd(decor.length)];
    }
    out.add(s);
  }
  return [...out].map((s) => s.toLowerCase());
}

describe('prefilter', () => {
  it.each([1, 2, 3, 4])('answers as its definition does for plain and prose values, paranoia %i', (pl) => {
    const enabled = RULES.filter((r) => r.paranoia <= pl && r.plain);
    const pre = new Prefilter(enabled);
    const ref = new Reference(enabled);
    const values = samples(enabled);
    const wrong = values.filter((v) => pre.plain(v) !== ref.plain(v) || pre.prose(v) !== ref.prose(v));
    expect(wrong).toEqual([]);
    // Both answers occur: the comparison is not between two constant functions.
    expect(values.some((v) => pre.plain(v))).toBe(true);
    expect(values.some((v) => !pre.plain(v))).toBe(true);
  });

  it('finds words anywhere, command names only first, and pieces between dots and hyphens', () => {
    const pre = new Prefilter(RULES.filter((r) => r.paranoia <= 1 && r.plain));
    expect(pre.plain('whoami')).toBe(true);
    expect(pre.plain('please run whoami')).toBe(false);
    expect(pre.plain('x.whoami')).toBe(true);
    expect(pre.plain('jane.doe@example.com')).toBe(false);
    expect(pre.plain('a b union')).toBe(true);
    expect(pre.plain('x-document')).toBe(true);
    expect(pre.prose("wh'oami")).toBe(true);
    expect(pre.prose("please leave it at the door, it's fine")).toBe(false);
  });
});
