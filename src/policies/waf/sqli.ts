/**
 * A small SQL tokenizer and the token patterns that give injections away (the idea of
 * libinjection — our own code and patterns). A value is read three ways: as written, as if it
 * continued a single-quoted string and as if it continued a double-quoted one, because an injection
 * typically first closes the string the application put it in (`x' OR 'a'='a`).
 */

/** Token classes: s string, 1 number, n name, f function call, v variable, U union, E statement, & logic, o operator, k keyword, c comment, and ( ) , ; as themselves. */
export type TokenType =
  | 's'
  | '1'
  | 'n'
  | 'f'
  | 'v'
  | 'U'
  | 'E'
  | '&'
  | 'o'
  | 'k'
  | 'c'
  | '('
  | ')'
  | ','
  | ';';

export interface Token {
  t: TokenType;
  v: string;
}

const MAX_TOKENS = 48;
/** Cheap pre-check: without one of these a value cannot hold an injection worth tokenizing. */
const SQLISH =
  /['"`]|\|\||&&|\b(?:or|and|xor|union|select|insert|update|delete|drop|create|alter|truncate|declare|exec|execute|shutdown|having)\b/;

export const STATEMENTS = new Set([
  'select',
  'insert',
  'update',
  'delete',
  'drop',
  'create',
  'alter',
  'truncate',
  'declare',
  'exec',
  'execute',
  'shutdown',
  'grant',
  'revoke',
  'rename',
  'merge',
  'handler',
]);
export const LOGIC = new Set(['and', 'or', 'xor', 'not']);
export const OPERATORS = new Set([
  'like',
  'rlike',
  'regexp',
  'is',
  'in',
  'between',
  'sounds',
  'mod',
  'div',
  'collate',
  'escape',
]);
export const KEYWORDS = new Set([
  'from',
  'where',
  'having',
  'group',
  'order',
  'by',
  'limit',
  'offset',
  'into',
  'outfile',
  'dumpfile',
  'values',
  'set',
  'table',
  'database',
  'case',
  'when',
  'then',
  'else',
  'end',
  'as',
  'null',
  'true',
  'false',
  'all',
  'distinct',
  'distinctrow',
  'top',
  'procedure',
  'waitfor',
  'delay',
  'join',
  'on',
  'asc',
  'desc',
  'immediate',
]);
const COMPARISON = new Set([
  '=',
  '==',
  '<',
  '>',
  '<=',
  '>=',
  '!=',
  '<>',
  '<=>',
  'like',
  'rlike',
  'regexp',
  'is',
  'in',
  'between',
  'sounds',
]);
const OPERAND = new Set<TokenType>(['1', 's', 'n', 'f', 'v']);
/** Arithmetic and bitwise operators: between literals they make an expression of constants. */
const ARITHMETIC = new Set(['+', '-', '*', '/', '%', '^', '&', '|', 'div', 'mod']);

function isWordStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c === 64 || c === 36 || c >= 0x80;
}
function isWord(c: number): boolean {
  return isWordStart(c) || (c >= 48 && c <= 57) || c === 46;
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** Tokenize `s` (lower-case). With `quote`, the input is taken to start inside a string opened by it. */
export function tokenize(s: string, quote?: '"' | "'" | '`'): Token[] {
  const out: Token[] = [];
  const n = s.length;
  let i = 0;
  if (quote) {
    const end = s.indexOf(quote);
    if (end === -1) return out;
    out.push({ t: 's', v: s.slice(0, end) });
    i = end + 1;
  }
  while (i < n && out.length < MAX_TOKENS) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (c <= 32 || c === 0xa0) {
      i++;
      continue;
    }
    if (ch === "'" || ch === '"') {
      let j = i + 1;
      while (j < n) {
        if (s[j] === '\\') j += 2;
        else if (s[j] === ch) {
          if (s[j + 1] === ch) j += 2;
          else break;
        } else j++;
      }
      out.push({ t: 's', v: s.slice(i + 1, Math.min(j, n)) });
      i = j + 1;
      continue;
    }
    if (ch === '`') {
      const end = s.indexOf('`', i + 1);
      out.push({ t: 'n', v: s.slice(i + 1, end === -1 ? n : end) });
      i = end === -1 ? n : end + 1;
      continue;
    }
    if ((ch === '-' && s[i + 1] === '-') || ch === '#') {
      const nl = s.indexOf('\n', i);
      // A line comment that a line break ends, with SQL after it, is a blank (`1--\nand--\n1=1`).
      if (nl === -1 || s.slice(nl + 1).trim() === '') out.push({ t: 'c', v: '--' });
      i = nl === -1 ? n : nl + 1;
      continue;
    }
    if (ch === '/' && s[i + 1] === '*') {
      if (s[i + 2] === '!') {
        i += 3;
        while (i < n && isDigit(s.charCodeAt(i))) i++;
        continue;
      }
      out.push({ t: 'c', v: '/*' });
      const end = s.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
      continue;
    }
    if (isDigit(c) || (ch === '.' && isDigit(s.charCodeAt(i + 1)))) {
      let j = i + 1;
      if (ch === '0' && (s[j] === 'x' || s[j] === 'b')) j++;
      while (j < n && (isWord(s.charCodeAt(j)) || ((s[j] === '-' || s[j] === '+') && s[j - 1] === 'e'))) j++;
      out.push({ t: '1', v: s.slice(i, j) });
      i = j;
      continue;
    }
    if (isWordStart(c)) {
      let j = i + 1;
      while (j < n && isWord(s.charCodeAt(j))) j++;
      const w = s.slice(i, j);
      let k = j;
      while (k < n && s.charCodeAt(k) <= 32) k++;
      let t: TokenType;
      if (w[0] === '@') t = 'v';
      else if (w === 'true' || w === 'false') t = '1';
      else if (w === 'union') t = 'U';
      else if (STATEMENTS.has(w)) t = 'E';
      else if (LOGIC.has(w)) t = '&';
      else if (OPERATORS.has(w)) t = 'o';
      else if (KEYWORDS.has(w)) t = 'k';
      else t = s[k] === '(' ? 'f' : 'n';
      out.push({ t, v: w });
      i = j;
      continue;
    }
    if (ch === '(' || ch === ')' || ch === ',' || ch === ';') {
      out.push({ t: ch, v: ch });
      i++;
      continue;
    }
    // Operators: the longest run of operator characters.
    let j = i;
    while (j < n && j - i < 3 && '=<>!|&+-*/%^~:?'.includes(s[j]!)) j++;
    if (j === i) {
      i++;
      continue;
    }
    const op = s.slice(i, j);
    out.push({ t: op === '||' || op === '&&' ? '&' : 'o', v: op });
    i = j;
  }
  return out;
}

function isComparison(tok: Token | undefined): boolean {
  return tok !== undefined && (tok.t === 'o' || tok.t === '&') && COMPARISON.has(tok.v);
}

/** A literal operand: a number, a string, a variable or a function call's value. */
const LITERAL = new Set<TokenType>(['1', 's', 'v', 'f']);

/**
 * `& X op Y` (or `& X` closing the statement): the always-true/false clause of a tautology.
 * 0 when it is none; 1 when it compares names (`and rating > 4`, prose reads like this too);
 * 2 when it compares literals or calls (`or 1=1`, `and 'a'='a'`, `and ascii(x)>64`) or is a bare
 * literal closing the statement (`or 1--`).
 */
function logicClause(tokens: Token[], i: number): 0 | 1 | 2 {
  let j = i + 1;
  if (tokens[j]?.v === 'not') j++;
  while (tokens[j]?.t === '(') j++;
  const a = tokens[j];
  if (!a || !OPERAND.has(a.t)) return 0;
  // `('x')=('x'`: the operand's own parentheses close before the comparison.
  let o = j + 1;
  while (tokens[o]?.t === ')') o++;
  if (o > j + 1 && isComparison(tokens[o])) {
    let k = o + 1;
    while (tokens[k]?.t === '(') k++;
    const b = tokens[k];
    if (b && LITERAL.has(a.t) && LITERAL.has(b.t)) return 2;
  }
  const op = tokens[j + 1];
  if (isComparison(op)) {
    const b = tokens[j + 2];
    if (b === undefined || !(OPERAND.has(b.t) || b.t === '(' || b.t === 'k')) return 0;
    if (LITERAL.has(a.t) || LITERAL.has(b.t) || b.t === '(') return a.t === 'n' && b.t !== 'f' ? 1 : 2;
    // `x=x`: the same name on both sides is always true.
    return a.v === b.v ? 2 : 1;
  }
  // A bare literal closing the statement (`or 1--`, `or true`): weak alone, `pick 2 or 3` reads so too.
  const after = tokens[j + 1];
  return (a.t === '1' || a.t === 's' || a.t === 'v') &&
    (after === undefined || after.t === 'c' || after.t === ';')
    ? after === undefined
      ? 1
      : 2
    : 0;
}

/**
 * `& A op B` or `& A B` where A and B are constants and one of them a string: `or ''-'`,
 * `or ""&"`, `or "" "` (MySQL concatenates adjacent strings). A constant expression is always
 * true or false, the tautology of a login bypass. Counted only as the first clause of the
 * injection (see suspicious): prose has numbers joined by operators (`size 10 or 10-1/2`).
 */
function constantExpression(tokens: Token[], i: number): boolean {
  const a = tokens[i + 1];
  const op = tokens[i + 2];
  if (!a || (a.t !== 's' && a.t !== '1')) return false;
  if (op?.t === 's') return a.t === 's';
  const b = tokens[i + 3];
  return (
    op?.t === 'o' &&
    ARITHMETIC.has(op.v) &&
    b !== undefined &&
    (b.t === 's' || b.t === '1') &&
    (a.t === 's' || b.t === 's')
  );
}

/** True when `&` at `i` opens the stream (after the breakout string and closing parentheses). */
function firstClause(tokens: Token[], i: number, breakout: boolean): boolean {
  for (let k = breakout ? 1 : 0; k < i; k++) if (tokens[k]!.t !== ')') return false;
  return !breakout || i >= 1;
}

/** A stream that starts like an injected value in a numeric context: `1 or …`, `-1) and …`, `(1 …`. */
function numericStart(tokens: Token[]): boolean {
  let j = 0;
  if (tokens[j]?.t === 'o' && tokens[j]?.v === '-') j++;
  const first = tokens[j];
  return first !== undefined && (first.t === '1' || first.t === '(' || first.t === ')' || first.t === 'v');
}

/** Statements that only make sense as SQL: `insert into x (`, `drop table`, `declare @x`, `exec xp_…`. */
function statement(tokens: Token[], i: number): boolean {
  const w = tokens[i]!.v;
  const a = tokens[i + 1];
  const b = tokens[i + 2];
  if (!a) return false;
  switch (w) {
    case 'select': {
      if (a.t === 'f') return true;
      if (a.t === '(') return b !== undefined && (b.t === 'E' || b.t === '1' || b.t === 'f' || b.t === 'v');
      // `select 1,2`, `select 'a' from`, `select * from`, `select @@version--`: not `select 2 items`.
      if (a.t === '1' || a.t === 'v' || a.t === 's' || a.v === '*') {
        if (b === undefined) return a.t !== 's';
        return (
          b.t === ',' ||
          b.v === 'from' ||
          b.t === 'c' ||
          b.t === ';' ||
          b.t === ')' ||
          b.t === 'U' ||
          b.v === 'into' ||
          (a.t === 'v' && b.v === 'as') ||
          (b.t === 'o' && !COMPARISON.has(b.v))
        );
      }
      if (a.t === 'k' && a.v !== 'from') return b !== undefined && b.t !== 'n';
      if (a.t === 'n') {
        let j = i + 2;
        while (tokens[j]?.t === ',' && tokens[j + 1]?.t === 'n') j += 2;
        const from = tokens[j];
        const table = tokens[j + 1];
        const next = tokens[j + 2];
        return (
          from?.v === 'from' &&
          table?.t === 'n' &&
          (next === undefined || next.t === 'k' || next.t === ';' || next.t === 'c' || next.t === ')')
        );
      }
      return false;
    }
    case 'insert':
      return (
        a.v === 'into' &&
        b?.t === 'n' &&
        (tokens[i + 3]?.t === '(' || tokens[i + 3]?.v === 'values' || tokens[i + 3]?.t === 'E')
      );
    case 'update':
      return a.t === 'n' && b?.v === 'set';
    case 'delete':
      return a.v === 'from' && b?.t === 'n';
    case 'drop':
    case 'create':
    case 'alter':
    case 'truncate':
      return (
        a.v === 'table' ||
        a.v === 'database' ||
        a.v === 'procedure' ||
        a.t === 'f' ||
        /^(?:function|view|index|user|trigger|schema)$/.test(a.v)
      );
    case 'declare':
      return a.t === 'v';
    case 'exec':
    case 'execute':
      return a.t === 'v' || a.t === '(' || a.v === 'immediate' || /^(?:xp_|sp_|master\.)/.test(a.v);
    case 'shutdown':
      return a.t === 'c' || a.t === ';';
    default:
      return false;
  }
}

/** What gives the token stream away; `breakout` when the stream starts by closing a string. */
function suspicious(tokens: Token[], breakout: boolean): boolean {
  const n = tokens.length;
  // A literal compared with something: `'x'!='y`, `'{"a":1}' < '$.a' = 7`.
  if (!breakout && tokens[0]?.t === 's' && isComparison(tokens[1]) && tokens[2] && OPERAND.has(tokens[2].t))
    return true;
  for (let i = 0; i < n; i++) {
    const tok = tokens[i]!;
    if (tok.t === 'U') {
      let j = i + 1;
      while (tokens[j]?.t === 'k' || tokens[j]?.t === '(') j++;
      if (tokens[j]?.v === 'select') return true;
    } else if (tok.t === ';' && tokens[i + 1]?.t === 'E') {
      return true;
    } else if (tok.t === '&' && (tok.v !== 'not' || i > 0)) {
      // The first clause of the stream (`' or ''-'`, `') or ""&"`): a constant expression.
      if (tok.v !== 'not' && firstClause(tokens, i, breakout) && constantExpression(tokens, i)) return true;
      // After a breakout any clause counts (`x' or 'a'='a`); as written, a clause of literals
      // (`x or 1=1`) or one after a numeric start (`1 and id>0`), not prose (`price < 9 and rating > 4`).
      const clause = logicClause(tokens, i);
      // A value that is only the clause (`or 1=1`, `|| 'a'='a'`) is the injected tail itself.
      if (
        clause === 2
          ? breakout || i > 0 || tok.v !== 'not'
          : clause === 1 && (breakout || numericStart(tokens))
      )
        return true;
    } else if (
      tok.v === 'having' &&
      (firstClause(tokens, i, breakout) || numericStart(tokens)) &&
      logicClause(tokens, i) === 2
    ) {
      // `having 1=1`: the tautology of a HAVING clause (error-based column enumeration).
      return true;
    } else if (tok.t === 'E' && statement(tokens, i)) {
      return true;
    }
  }
  if (breakout && n > 1) {
    let j = 1;
    while (tokens[j]?.t === ')') j++;
    const next = tokens[j];
    if (!next) return false;
    if (next.t === 'c' || next.t === ';' || next.t === 'U') return true;
    // `x' select …`, not a quoted word or title (`the 'select' element`, `the "delete account"
    // button`, `'Drop Dead Gorgeous' (1999)`): a statement word and up to three names closed by
    // the quote.
    if (next.t === 'E') {
      if (statement(tokens, j) || /^(?:exec|execute|declare|shutdown)$/.test(next.v)) return true;
      let k = j + 1;
      while (k <= j + 3 && tokens[k]?.t === 'n') k++;
      return tokens[k]?.t !== 's';
    }
    if (next.t === 'k' && /^(?:order|group|having|into|waitfor|procedure|limit|union|where)$/.test(next.v))
      return true;
    if (next.t === 'o' && COMPARISON.has(next.v)) {
      // `' = 1`, `' like 'a`, `' > x--`: not `x' is a prime variable`.
      const b = tokens[j + 1];
      const c = tokens[j + 2];
      if (b && (LITERAL.has(b.t) || (b.t === 'n' && (!c || c.t === 'c' || c.t === ';' || c.t === '&'))))
        return true;
    }
    if (next.t === 'o' && (next.v === '+' || next.v === '||') && tokens[j + 1]?.t === 'f') return true;
    if (next.t === 'f' && tokens[j + 1]?.t === undefined) return false;
  }
  return false;
}

/**
 * What `suspicious` needs in at least one of the three readings: a token of type U, E, &, o
 * (comparison, `+`, `||`), k, c or `;`. Those come only from these characters, comment openers
 * and SQL words, so a value without any (prose with an apostrophe: `it's fine`) is never tokenized.
 * `\b` splits words at least as finely as the tokenizer does, so the test never misses one.
 */
function sqlTriggerPattern(): RegExp {
  const words = ['union', ...STATEMENTS, ...LOGIC, ...OPERATORS, ...KEYWORDS, ...COMPARISON].filter((w) =>
    /^[a-z]+$/.test(w),
  );
  return new RegExp(`[=<>!+|&;#]|--|/\\*|\\b(?:${[...new Set(words)].join('|')})\\b`);
}
const SQL_TRIGGER = sqlTriggerPattern();

/** True when `lower` (a lower-cased, decoded value) reads as an SQL injection in any of the three contexts. */
export function detectSqli(lower: string): boolean {
  if (lower.length < 4 || !SQLISH.test(lower)) return false;
  if (!SQL_TRIGGER.test(lower)) return false;
  if (suspicious(tokenize(lower), false)) return true;
  if (lower.includes("'") && suspicious(tokenize(lower, "'"), true)) return true;
  if (lower.includes('"') && suspicious(tokenize(lower, '"'), true)) return true;
  if (lower.includes('`') && suspicious(tokenize(lower, '`'), true)) return true;
  return false;
}
