/**
 * Screening of plain values (letters, digits, blanks, `_ - . , @`), the bulk of API traffic: such
 * a value can only be an attack through its words (`whoami`, `union select`, `tempdb`,
 * `document.cookie`, `../`, `4294967296`), so one set look-up per word decides whether the rules
 * that can match plain text need to run at all.
 *
 * The prefilter is built from the triggers of the rules an engine runs (Rule.triggers), never
 * from a list of its own: a word added to a rule's list (a command in unix-commands.txt, a file
 * in os-files.txt, an SQL keyword) reaches the rule by construction.
 */
import type { Rule } from './types.ts';

/** The trigger test of one engine: which plain and prose values need the plain rules. */
export class Prefilter {
  readonly #words = new Set<string>();
  readonly #first = new Set<string>();
  readonly #word: RegExp | undefined;
  readonly #value: RegExp | undefined;

  constructor(rules: readonly Rule[]) {
    const wordRes: string[] = [];
    const valueRes: string[] = [];
    for (const rule of rules) {
      const t = rule.triggers;
      if (!t) continue;
      for (const w of t.words ?? []) this.#words.add(w);
      for (const w of t.firstWords ?? []) this.#first.add(w);
      if (t.word) wordRes.push(`(?:${t.word.source})`);
      if (t.value) valueRes.push(`(?:${t.value.source})`);
    }
    this.#word = wordRes.length ? new RegExp(wordRes.join('|')) : undefined;
    this.#value = valueRes.length ? new RegExp(valueRes.join('|')) : undefined;
  }

  /** True when a plain value (see PLAIN in engine.ts) has a word some rule could match. */
  plain(lower: string): boolean {
    if (this.#value?.test(lower)) return true;
    // Words are split by hand at ` `, `,` and `@`: a one-word value (the usual) is not copied.
    const n = lower.length;
    let start = 0;
    let first = true;
    while (start < n) {
      let end = start;
      while (end < n && !isSeparator(lower.charCodeAt(end))) end++;
      if (end > start) {
        if (this.#piece(start === 0 && end === n ? lower : lower.slice(start, end), first)) return true;
        first = false;
      }
      start = end + 1;
    }
    return false;
  }

  /**
   * True when a prose value (a plain value with apostrophes: `it's fine`, `O'Brien`) has something
   * a plain rule could match. On top of the plain words, an apostrophe can glue words
   * (`x'union`) and split a command name (`wh'oami`, read by the shell view without quotes), so
   * the first word is also tried without its quotes and words are also cut at apostrophes.
   */
  prose(lower: string): boolean {
    if (this.#value?.test(lower)) return true;
    if (this.#word_(firstWordUnquoted(lower), true)) return true;
    const n = lower.length;
    let start = 0;
    while (start < n) {
      let end = start;
      while (end < n && !isProseSeparator(lower.charCodeAt(end))) end++;
      if (end > start && this.#piece(lower.slice(start, end), false)) return true;
      start = end + 1;
    }
    return false;
  }

  /**
   * A word, then its pieces between dots, then those pieces' pieces between hyphens: a rule's `\b`
   * cuts words there too (`x.sp_executesql`, `x-processbuilder`).
   */
  #piece(word: string, first: boolean): boolean {
    if (this.#word_(word, first)) return true;
    if (!word.includes('.') && !word.includes('-')) return false;
    for (const piece of word.split('.')) {
      if (piece && piece !== word && this.#word_(piece, first)) return true;
      if (piece.includes('-'))
        for (const part of piece.split('-')) if (part && this.#word_(part, false)) return true;
    }
    return false;
  }

  /** `first`: the value's first word (or a piece of it), where a command name counts. */
  #word_(word: string, first: boolean): boolean {
    if (word.length === 0) return false;
    if (this.#words.has(word) || (first && this.#first.has(word))) return true;
    return this.#word !== undefined && !LETTERS.test(word) && this.#word.test(word);
  }
}

/** Words of letters only: the word patterns need another character, so they are skipped. */
const LETTERS = /^[a-z]+$/;

/** The first word of `lower` once quotes are dropped and leading blanks trimmed (the shell view's). */
function firstWordUnquoted(lower: string): string {
  const n = lower.length;
  let i = 0;
  while (i < n && (lower.charCodeAt(i) === 32 || lower.charCodeAt(i) === 39)) i++;
  let end = i;
  let quoted = false;
  for (; end < n; end++) {
    const c = lower.charCodeAt(end);
    if (c === 39) quoted = true;
    else if (isSeparator(c)) break;
  }
  const word = lower.slice(i, end);
  return quoted ? word.replaceAll("'", '') : word;
}

function isProseSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64 || c === 39;
}

function isSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64;
}
