/**
 * Screening of plain values (letters, digits, blanks, `_ - . , @`), the bulk of API traffic: such
 * a value can only be an attack through its words (`whoami`, `union select`, `tempdb`,
 * `document.cookie`, `../`, `4294967296`), so one set look-up per word decides whether the rules
 * that can match plain text need to run at all.
 */
import { COMMAND_NAMES } from './shell.ts';
import { KEYWORDS, LOGIC, OPERATORS, STATEMENTS } from './sqli.ts';

/**
 * Command names are matched only at the start of a value (a command line, see rce-command); the
 * shell rules look for these interpreters anywhere (`bash -c`, `perl -e`).
 */
const COMMANDS = new Set<string>(COMMAND_NAMES);
const INTERPRETERS = [
  'sh',
  'bash',
  'zsh',
  'ksh',
  'csh',
  'tcsh',
  'dash',
  'perl',
  'ruby',
  'python',
  'python2',
  'python3',
  'php',
  'node',
];

const TRIGGER_WORDS = new Set<string>([
  ...INTERPRETERS,
  ...STATEMENTS,
  ...LOGIC,
  ...OPERATORS,
  ...KEYWORDS,
  'if',
  'for',
  'union',
  'like',
  // SQL catalogues and sample databases.
  'information_schema',
  'pg_catalog',
  'pg_shadow',
  'pg_user',
  'pg_database',
  'mysql',
  'master',
  'sysobjects',
  'syscolumns',
  'sysdatabases',
  'sysusers',
  'msysaccessobjects',
  'msysobjects',
  'msysqueries',
  'msysrelationships',
  'sqlite_master',
  'sqlite_temp_master',
  'all_tables',
  'all_tab_columns',
  'user_tables',
  'dba_users',
  'tempdb',
  'northwind',
  'schema_name',
  'table_name',
  'column_name',
  'pg_sleep',
  // PowerShell.
  'start-process',
  'new-object',
  'set-executionpolicy',
  'get-wmiobject',
  'downloadstring',
  'downloadfile',
  '-encodedcommand',
  '-enc',
  // Script objects and Java classes.
  'document',
  'window',
  'location',
  'string',
  'java',
  'processbuilder',
  'scriptengine',
  'scriptenginemanager',
  'objectinputstream',
  'xmldecoder',
  'classloader',
  // Secret and configuration files.
  'passwd',
  'shadow',
  'mtrr',
  'authorized_keys',
  'known_hosts',
  'config',
  'configuration',
  'settings',
  'wp-config',
  'database',
  'secret',
  'secrets',
  'credentials',
  'parameters',
  'web',
]);

/** Prefixes of procedure, key-file and serialized-object names. */
const TRIGGER_PREFIX = /^(?:xp_|sp_|id_|ro0ab|aced0005)/;
/** PowerShell cmdlets and flags, wherever a hyphenated word holds them (`x-invoke-expression`). */
const CMDLET = /invoke-|start-process|new-object|set-executionpolicy|get-wmiobject|-enc/;

const RISKY_EXTENSION =
  /\.(?:sql|bak|dump|db|sqlite3?|php\d?|phtml|ya?ml|ini|conf|cfg|env|exe|json|xml|toml|py|rb|old|orig|save|swp|dist)(?:\.\w+)?$/;

/** True when a plain value (see PLAIN in engine.ts) has a word some rule could match. */
export function plainHasTrigger(lower: string): boolean {
  if (LONG_NUMBER.test(lower)) return true;
  // Words are split by hand at ` `, `,` and `@`: a one-word value (the usual) is not copied.
  const n = lower.length;
  let start = 0;
  let first = true;
  while (start < n) {
    let end = start;
    while (end < n && !isSeparator(lower.charCodeAt(end))) end++;
    if (end > start) {
      if (pieceHasTrigger(start === 0 && end === n ? lower : lower.slice(start, end), first)) return true;
      first = false;
    }
    start = end + 1;
  }
  return false;
}

/** Ten digits in a row: the start of an overflow probe (`4294967296`), wherever it is glued. */
const LONG_NUMBER = /\d{10}/;

/**
 * True when a prose value (a plain value with apostrophes: `it's fine`, `O'Brien`) has something
 * a rule could match. On top of the plain words, an apostrophe can close an SQL string before a
 * `--` comment or a JSON operator (`@@`), glue words (`x'union`) and split a command name
 * (`wh'oami`, read by the shell view without quotes). Words are also cut at `.` and `-`, as `\b`
 * in a rule's pattern cuts them (`x.invoke-expression`, `x-or 1`).
 */
export function proseHasTrigger(lower: string): boolean {
  if (lower.includes('--') || lower.includes('@@') || LONG_NUMBER.test(lower)) return true;
  if (wordHasTrigger(firstWordUnquoted(lower), true)) return true;
  const n = lower.length;
  let start = 0;
  while (start < n) {
    let end = start;
    while (end < n && !isProseSeparator(lower.charCodeAt(end))) end++;
    if (end > start && pieceHasTrigger(lower.slice(start, end), false)) return true;
    start = end + 1;
  }
  return false;
}

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

/**
 * A word, then its pieces between dots, then those pieces' pieces between hyphens: a rule's `\b`
 * cuts words there too (`x.sp_executesql`, `x-processbuilder`).
 */
function pieceHasTrigger(word: string, first: boolean): boolean {
  if (wordHasTrigger(word, first)) return true;
  if (!word.includes('.') && !word.includes('-')) return false;
  for (const piece of word.split('.')) {
    if (piece && piece !== word && wordHasTrigger(piece, false)) return true;
    if (piece.includes('-'))
      for (const part of piece.split('-')) if (part && wordHasTrigger(part, false)) return true;
  }
  return false;
}

function isProseSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64 || c === 39;
}

function isSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64;
}

/** `first`: the value's first word, where a command name counts. */
function wordHasTrigger(word: string, first: boolean): boolean {
  if (word.length < 2) return word === '.';
  if (TRIGGER_WORDS.has(word) || (first && COMMANDS.has(word))) return true;
  if (word.includes('union') || word.includes('0x')) return true;
  // The prefixes hold `_` or start with `r`/`a`; cmdlets hold `-`: most words skip both patterns.
  const c0 = word.charCodeAt(0);
  if ((c0 === 97 || c0 === 114 || word.includes('_')) && TRIGGER_PREFIX.test(word)) return true;
  if (word.includes('-') && CMDLET.test(word)) return true;
  const dot = word.indexOf('.');
  if (dot !== -1) {
    if (dot === 0 || word.includes('..')) return true;
    const head = word.slice(0, dot);
    if (TRIGGER_WORDS.has(head) || (first && COMMANDS.has(head))) return true;
    if (RISKY_EXTENSION.test(word)) return true;
    if (/^\d+\.e/.test(word)) return true;
  }
  return word.length >= 10 && /^[\d.e-]+$/.test(word);
}
