/**
 * Screening of plain values (letters, digits, blanks, `_ - . , @`), the bulk of API traffic: such
 * a value can only be an attack through its words (`whoami`, `union select`, `tempdb`,
 * `document.cookie`, `../`, `4294967296`), so one look-up per word decides whether the rules
 * that can match plain text need to run at all.
 *
 * The prefilter is built from the triggers of the rules an engine runs (Rule.triggers), never
 * from a list of its own: a word added to a rule's list (a command in unix-commands.txt, a file
 * in os-files.txt, an SQL keyword) reaches the rule by construction.
 *
 * It runs on every plain payload value of every request, so it scans the value in place: words,
 * their pieces between dots and hyphens are index ranges of the value, looked up in a hash table
 * of the trigger words built once per engine (no substring, array or closure per value). Only a
 * word holding a character other than a letter is copied, for the word patterns.
 */
import type { Rule } from './types.ts';

/**
 * The top-level alternatives of a pattern's source, groups around a whole alternative dropped
 * (`(?:a|b(c|d))|(?:e)` → `a`, `b(c|d)`, `e`). The triggers' patterns are joined as one flat alternation
 * without repeats, which V8 runs faster than an alternation of groups (the value pattern of
 * paranoia 1: 0.17 instead of 0.21 µs for three values).
 */
function alternatives(source: string): string[] {
  const { bars } = scanSource(source);
  const out: string[] = [];
  let start = 0;
  for (const bar of bars) {
    out.push(source.slice(start, bar));
    start = bar + 1;
  }
  out.push(source.slice(start));
  // A piece wrapped whole in a non-capturing group is an alternation of its own.
  return out.flatMap((piece) =>
    piece.startsWith('(?:') && scanSource(piece).firstClose === piece.length - 1
      ? alternatives(piece.slice(3, -1))
      : [piece],
  );
}

/**
 * One pass over a pattern's source, escapes and character classes skipped: the `|` outside any
 * group, and where the first group that returns to the top level closes (-1 if none does).
 */
function scanSource(source: string): { bars: number[]; firstClose: number } {
  const bars: number[] = [];
  let firstClose = -1;
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')' && --depth === 0 && firstClose === -1) firstClose = i;
    else if (c === '|' && depth === 0) bars.push(i);
  }
  return { bars, firstClose };
}

/** Entry flags: a trigger word anywhere in the value, or only as its first word (command names). */
const ANYWHERE = 1;
const FIRST = 2;
/** FNV-1a offset basis and prime (32-bit). */
const FNV_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a of the UTF-16 code units of `s[from, to)`. */
function hashRange(s: string, from: number, to: number): number {
  let h = FNV_BASIS;
  for (let i = from; i < to; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h | 0;
}

/** The trigger test of one engine: which plain and prose values need the plain rules. */
export class Prefilter {
  /** Open addressing, linear probing: slot → entry index + 1 (0 = empty). */
  readonly #slots: Int32Array;
  /** slot → hash of its entry, compared before the entry's characters. */
  readonly #hashes: Int32Array;
  readonly #mask: number;
  readonly #entries: string[] = [];
  readonly #flags: number[] = [];
  readonly #wordPattern: RegExp | undefined;
  readonly #valuePattern: RegExp | undefined;

  constructor(rules: readonly Rule[]) {
    const flags = new Map<string, number>();
    const wordRes: string[] = [];
    const valueRes: string[] = [];
    for (const rule of rules) {
      const t = rule.triggers;
      if (!t) continue;
      for (const w of t.words ?? []) flags.set(w, (flags.get(w) ?? 0) | ANYWHERE);
      for (const w of t.firstWords ?? []) flags.set(w, (flags.get(w) ?? 0) | FIRST);
      if (t.word) wordRes.push(...alternatives(t.word.source));
      if (t.value) valueRes.push(...alternatives(t.value.source));
    }
    this.#wordPattern = wordRes.length ? new RegExp([...new Set(wordRes)].join('|')) : undefined;
    this.#valuePattern = valueRes.length ? new RegExp([...new Set(valueRes)].join('|')) : undefined;
    // At most a quarter full: a miss (the usual answer) ends at an empty slot within a probe or two.
    let size = 16;
    while (size < flags.size * 4) size *= 2;
    this.#slots = new Int32Array(size);
    this.#hashes = new Int32Array(size);
    this.#mask = size - 1;
    for (const [word, f] of flags) {
      const h = hashRange(word, 0, word.length);
      let slot = h & this.#mask;
      while (this.#slots[slot] !== 0) slot = (slot + 1) & this.#mask;
      this.#entries.push(word);
      this.#flags.push(f);
      this.#slots[slot] = this.#entries.length;
      this.#hashes[slot] = h;
    }
  }

  /** True when a plain value (see PLAIN in engine.ts) has a word some rule could match. */
  plain(lower: string): boolean {
    if (this.#valuePattern?.test(lower)) return true;
    return this.#words(lower, false);
  }

  /**
   * True when a prose value (a plain value with apostrophes: `it's fine`, `O'Brien`) has something
   * a plain rule could match. On top of the plain words, an apostrophe can glue words
   * (`x'union`) and split a command name (`wh'oami`, read by the shell view without quotes), so
   * the first word is also tried without its quotes and words are also cut at apostrophes.
   */
  prose(lower: string): boolean {
    if (this.#valuePattern?.test(lower)) return true;
    if (this.#firstUnquoted(lower)) return true;
    return this.#words(lower, true);
  }

  /**
   * Every word of `s`, cut at ` `, `,` and `@` (and `'` for prose, where no word counts as the
   * first: the unquoted first word was tried on its own), each scanned once for its hash and
   * the characters that make it worth cutting further.
   */
  #words(s: string, prose: boolean): boolean {
    const n = s.length;
    let first = !prose;
    let start = 0;
    while (start < n) {
      let end = start;
      let h = FNV_BASIS;
      let shape = 0;
      for (; end < n; end++) {
        const c = s.charCodeAt(end);
        if (c === 32 || c === 44 || c === 64 || (c === 39 && prose)) break;
        h = Math.imul(h ^ c, FNV_PRIME);
        shape |= shapeOf(c);
      }
      if (end > start) {
        if (this.#word(s, start, end, h | 0, shape, first)) return true;
        first = false;
      }
      start = end + 1;
    }
    return false;
  }

  /**
   * The word `s[from, to)` (hash `h`, `shape` its SHAPE_* bits), then its pieces between dots,
   * then those pieces' pieces between hyphens: a rule's `\b` cuts words there too
   * (`x.sp_executesql`, `x-processbuilder`).
   */
  #word(s: string, from: number, to: number, h: number, shape: number, first: boolean): boolean {
    if (this.#test(s, from, to, h, first, shape !== 0)) return true;
    if ((shape & (SHAPE_DOT | SHAPE_HYPHEN)) === 0) return false;
    const dots = (shape & SHAPE_DOT) !== 0;
    let start = from;
    while (start < to) {
      let end = start;
      let ph = FNV_BASIS;
      let pshape = 0;
      for (; end < to; end++) {
        const c = s.charCodeAt(end);
        if (c === 46) break;
        ph = Math.imul(ph ^ c, FNV_PRIME);
        pshape |= shapeOf(c);
      }
      if (end > start) {
        // Without a dot the only piece is the word itself, tested above.
        if (dots && this.#test(s, start, end, ph | 0, first, pshape !== 0)) return true;
        if ((pshape & SHAPE_HYPHEN) !== 0 && this.#parts(s, start, end)) return true;
      }
      start = end + 1;
    }
    return false;
  }

  /** The pieces of `s[from, to)` between hyphens (never a first word). */
  #parts(s: string, from: number, to: number): boolean {
    let start = from;
    while (start < to) {
      let end = start;
      let h = FNV_BASIS;
      let nonLetter = false;
      for (; end < to; end++) {
        const c = s.charCodeAt(end);
        if (c === 45) break;
        h = Math.imul(h ^ c, FNV_PRIME);
        if (c < 97 || c > 122) nonLetter = true;
      }
      if (end > start && this.#test(s, start, end, h | 0, false, nonLetter)) return true;
      start = end + 1;
    }
    return false;
  }

  /** The first word of a prose value once quotes are dropped and leading blanks trimmed (the shell view's). */
  #firstUnquoted(lower: string): boolean {
    const n = lower.length;
    let i = 0;
    while (i < n && (lower.charCodeAt(i) === 32 || lower.charCodeAt(i) === 39)) i++;
    let end = i;
    let quoted = false;
    let nonLetter = false;
    for (; end < n; end++) {
      const c = lower.charCodeAt(end);
      if (c === 39) quoted = true;
      else if (isSeparator(c)) break;
      else if (c < 97 || c > 122) nonLetter = true;
    }
    if (!quoted) return this.#test(lower, i, end, hashRange(lower, i, end), true, nonLetter);
    const word = lower.slice(i, end).replaceAll("'", '');
    return this.#test(word, 0, word.length, hashRange(word, 0, word.length), true, nonLetter);
  }

  /**
   * Whether the word `s[from, to)`, of hash `h`, is a trigger (`first`: it is the value's first
   * word, or a piece of it, where a command name counts). `nonLetter`: it holds a character other
   * than a-z, the only words the word patterns can match (see Triggers.word).
   */
  #test(s: string, from: number, to: number, h: number, first: boolean, nonLetter: boolean): boolean {
    if (to <= from) return false;
    const len = to - from;
    const mask = this.#mask;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const entry = this.#slots[slot] as number;
      if (entry === 0) break;
      if (this.#hashes[slot] !== h) continue;
      const word = this.#entries[entry - 1] as string;
      if (word.length !== len || !sameRange(word, s, from)) continue;
      if (((this.#flags[entry - 1] as number) & (first ? ANYWHERE | FIRST : ANYWHERE)) !== 0) return true;
      break;
    }
    if (!nonLetter || this.#wordPattern === undefined) return false;
    return this.#wordPattern.test(from === 0 && to === s.length ? s : s.slice(from, to));
  }
}

/** Bits of a word's shape: a dot, a hyphen, another character that is not a-z. */
const SHAPE_DOT = 1;
const SHAPE_HYPHEN = 2;
const SHAPE_OTHER = 4;

function shapeOf(c: number): number {
  if (c >= 97 && c <= 122) return 0;
  return c === 46 ? SHAPE_DOT : c === 45 ? SHAPE_HYPHEN : SHAPE_OTHER;
}

/** Whether `word` equals `s` from `from` on (the caller checked the length). */
function sameRange(word: string, s: string, from: number): boolean {
  for (let i = 0; i < word.length; i++) if (word.charCodeAt(i) !== s.charCodeAt(from + i)) return false;
  return true;
}

function isSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64;
}
