/**
 * Screening of plain values (letters, digits, blanks, `_ - . , @`), the bulk of API traffic: such
 * a value can only be an attack through its words (`whoami`, `union select`, `tempdb`,
 * `document.cookie`, `../`, `4294967296`), so one set look-up per word decides whether the rules
 * that can match plain text need to run at all.
 */
import { DISTINCT } from './shell.ts';
import { KEYWORDS, LOGIC, OPERATORS, STATEMENTS } from './sqli.ts';

const TRIGGER_WORDS = new Set<string>([
  ...DISTINCT,
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

const RISKY_EXTENSION =
  /\.(?:sql|bak|dump|db|sqlite3?|php\d?|phtml|ya?ml|ini|conf|cfg|env|exe|json|xml|toml|py|rb|old|orig|save|swp|dist)(?:\.\w+)?$/;

/** True when a plain value (see PLAIN in engine.ts) has a word some rule could match. */
export function plainHasTrigger(lower: string): boolean {
  // Words are split by hand at ` `, `,` and `@`: a one-word value (the usual) is not copied.
  const n = lower.length;
  let start = 0;
  while (start < n) {
    let end = start;
    while (end < n && !isSeparator(lower.charCodeAt(end))) end++;
    if (end > start && wordHasTrigger(start === 0 && end === n ? lower : lower.slice(start, end)))
      return true;
    start = end + 1;
  }
  return false;
}

function isSeparator(c: number): boolean {
  return c === 32 || c === 44 || c === 64;
}

function wordHasTrigger(word: string): boolean {
  if (TRIGGER_WORDS.has(word)) return true;
  if (word.includes('union') || word.includes('0x') || word.startsWith('xp_') || word.startsWith('sp_'))
    return true;
  if (
    word.startsWith('invoke-') ||
    word.startsWith('id_') ||
    word.startsWith('ro0ab') ||
    word.startsWith('aced0005')
  )
    return true;
  const dot = word.indexOf('.');
  if (dot !== -1) {
    if (dot === 0 || word.includes('..')) return true;
    if (TRIGGER_WORDS.has(word.slice(0, dot))) return true;
    if (RISKY_EXTENSION.test(word)) return true;
    if (/^\d+\.e/.test(word)) return true;
  }
  return word.length >= 10 && /^[\d.e-]+$/.test(word);
}
