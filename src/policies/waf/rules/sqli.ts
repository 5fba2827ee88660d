import { SQL_FUNCTIONS } from '../lists.ts';
import { detectSqli, KEYWORDS, LOGIC, OPERATORS, STATEMENTS } from '../sqli.ts';
import { type Rule, SCORE } from '../types.ts';

/** sql-functions.txt by name: true for a word-like name (`char`, `version`), which needs SQL context. */
const FUNCTIONS = new Map(SQL_FUNCTIONS.map((f) => [f.name, f.ambiguous]));
/** Characters after which a word-like name is a call in SQL (`'+char(`, `=user(`, `,left(`). */
const SQL_PUNCTUATION = new Set([...`'"\`,=<>+|&*/%^-`].map((c) => c.charCodeAt(0)));
/** Keywords after which a word-like name glued to `(` is a call (`and user(`, `select version(`). */
const SQL_CONTEXT_WORDS = new Set([
  'select',
  'and',
  'or',
  'not',
  'xor',
  'where',
  'union',
  'having',
  'by',
  'when',
  'then',
  'else',
  'like',
  'from',
  'in',
  'is',
  'return',
  'values',
  'exec',
  'div',
  'mod',
]);

function isNameChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95 || c === 46 || c === 36 || c === 64;
}

/**
 * A call of an SQL function injections use (sql-functions.txt), found from each `(` back to the
 * name before it. Names that are not words count anywhere (`benchmark(`, `pg_sleep (`); word-like
 * names (`char(`, `version(`, `user(`) only in SQL context: after a quote, an operator or a comma,
 * inside a call (`concat(char(`), or glued to their parenthesis at the start or after an SQL
 * keyword (`and user(`), never in prose (`in case (x)`, `Format (A4)`). A scan with map look-ups:
 * its cost does not grow with the list.
 */
function functionCall(sql: string): boolean {
  for (let p = sql.indexOf('('); p !== -1; p = sql.indexOf('(', p + 1)) {
    let end = p;
    while (end > 0 && sql.charCodeAt(end - 1) === 32) end--;
    // `name\(` and `name=(` are read as calls too (MySQL's lenient parser, obfuscation).
    if (end > 0 && (sql.charCodeAt(end - 1) === 92 || sql.charCodeAt(end - 1) === 61)) {
      end--;
      while (end > 0 && sql.charCodeAt(end - 1) === 32) end--;
    }
    let start = end;
    while (start > 0 && isNameChar(sql.charCodeAt(start - 1))) start--;
    if (start === end) continue;
    const ambiguous = FUNCTIONS.get(sql.slice(start, end));
    if (ambiguous === undefined) continue;
    if (!ambiguous) return true;
    let k = start;
    while (k > 0 && sql.charCodeAt(k - 1) === 32) k--;
    const before = k > 0 ? sql.charCodeAt(k - 1) : -1;
    if (SQL_PUNCTUATION.has(before)) return true;
    if (
      before === 40 &&
      k === start &&
      k > 1 &&
      (isNameChar(sql.charCodeAt(k - 2)) || sql.charCodeAt(k - 2) === 41)
    )
      return true;
    if (end !== p) continue;
    if (k === 0) return true;
    let w = k;
    while (w > 0 && isNameChar(sql.charCodeAt(w - 1))) w--;
    if (w < k && SQL_CONTEXT_WORDS.has(sql.slice(w, k))) return true;
  }
  return false;
}

/** A string closed after a word or at the start, then a comment that swallows the rest of the query. */
const QUOTE_COMMENT = /(?:^|\w)['"`]\s*\)*\s*\/\*/;
/**
 * A value that is a string breakout and a comment and nothing else (`'--`, `' #`, `admin")-- -`):
 * the login-bypass truncation, whatever the comment style.
 */
const QUOTE_COMMENT_END = /^[\w@.-]{0,40}['"`]\s*\)*\s*(?:--|#|\/\*)[\s+-]*$/;

/** SQL words the tokenizer and keyword rules need: a plain value without one is never tokenized. */
const SQL_WORDS: readonly string[] = [
  ...STATEMENTS,
  ...LOGIC,
  ...OPERATORS,
  ...KEYWORDS,
  'union',
  'true',
  'false',
];

/** Words of SYSTEM_OBJECTS (catalogue and sample-database names), the triggers of its rule. */
const SYSTEM_OBJECT_WORDS: readonly string[] = [
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
  'msdasql',
  'sqloledb',
  'msoledbsql',
];

/**
 * Names of system catalogues and sample databases, and the OLE DB providers of SQL Server's ad hoc
 * queries (OPENROWSET/OPENDATASOURCE: MSDASQL, SQLOLEDB, MSOLEDBSQL), which no ordinary request
 * mentions.
 */
const SYSTEM_OBJECTS =
  /(?:^|[^\w])(?:information_schema|pg_catalog|pg_shadow|pg_user|pg_database|mysql\.(?:db|user|host)|sysobjects|syscolumns|sysdatabases|sysusers|msysaccessobjects|msysobjects|msysqueries|msysrelationships|sqlite_master|sqlite_temp_master|all_tables|all_tab_columns|user_tables|dba_users|tempdb|northwind|master\.\.sysdatabases|schema_name|table_name|column_name|msdasql|sqloledb|msoledbsql)(?:[^\w]|$)/;

/** SQL keyword sequences no prose produces. */
const KEYWORD_SEQUENCES = new RegExp(
  [
    String.raw`\bunion\b(?: (?:all|distinct|distinctrow))? ?\(?select\b`,
    'unionselect',
    String.raw`\bwaitfor (?:delay|time)\b`,
    String.raw`\binto (?:out|dump)file\b`,
    String.raw`\bxp_(?:cmdshell|dirtree|regread|fileexist|servicecontrol)\b`,
    String.raw`\bsp_(?:executesql|oacreate|makewebtask|password)\b`,
    String.raw`\bexec(?:ute)? (?:immediate|master\.|xp_|sp_|\(|@)`,
    String.raw`\bdeclare @`,
    String.raw`\bprocedure analyse\b`,
    String.raw`\bgroup by\b.{0,80}\bhaving\b`,
    String.raw`\bcase when\b.{0,80}\bthen\b`,
    // Simple CASE with a literal after WHEN (`case 1 when 1 then`), not `test case 3 when run then`.
    String.raw`\bcase [\w@$.'()]{1,40} when (?:-?\d+(?:\.\d+)?|'[^']{0,40}') then\b`,
    String.raw`\) ?like ?\(`,
    String.raw`\bif ?\( ?\d+ ?=`,
    // A parenthesised tautology of one number used as an operand (`(5930=5930)*1`, sqlmap).
    String.raw`\((?<n>\d{1,10}) ?= ?\k<n>\) ?[*+/-]`,
    String.raw`\bselect\b.{0,60}\bfrom\b ?[\x60(]`,
    String.raw`\b(?:order|group) by \d+ ?(?:--|#|$)`,
    String.raw`; ?(?:select|insert|update|delete|drop|create|alter|truncate|replace|declare|exec|shutdown)\b`,
    String.raw`\balter table\b`,
    String.raw`\bcreate (?:function|procedure|table|trigger)\b`,
    String.raw`\b\d+(?:\.\d+)?\.e ?[(.]`,
    String.raw`\) ?::(?:int|bigint|text|bool|boolean|json|jsonb|double precision|varchar|numeric)\b`,
    String.raw`' ?::jsonb?\b`,
    String.raw`' ?(?:<@|@>|\?[|&]|#>>?|->>?|#-|@\?|@@)`,
    String.raw`(?:<@|@>|\?[|&]|#>>?|->>?|#-|@\?|@@) ?'`,
    String.raw`\bor '[^']*' ?\? ?'`,
    String.raw`\b(?:select|union)\b.{0,40}\bnull ?, ?null\b`,
    "'(?: ?[|&]{2} ?')",
    String.raw`\bas ["\x60]\w+["\x60] ?from\b`,
    // A SELECT of a fingerprinting function or niladic value (MySQL, PostgreSQL, T-SQL references).
    String.raw`\bselect (?:pg_sleep|sleep|benchmark|load_file|current_user|session_user|system_user|current_role|current_schema|current_catalog|current_database|current_setting|version|database|@@\w+)\b`,
    // Statements that move data between the database and files or programs: T-SQL BACKUP/RESTORE
    // and BULK INSERT, MySQL LOAD DATA INFILE, PostgreSQL COPY … PROGRAM.
    String.raw`\b(?:backup|restore) (?:database|log) \S+ (?:to|from) (?:disk|url|tape)s? ?=`,
    String.raw`\bbulk insert \S+ from ?'`,
    String.raw`\bload data (?:local )?infile\b`,
    String.raw`\bcopy \(?\w+\)? (?:from|to) program ?'`,
    // A system variable (`@@version`, `@@datadir`, MSSQL `@@servername`): no prose writes `@@`.
    String.raw`(?:^|[^\w@])@@[a-z_]{2,}\b`,
  ].join('|'),
);

/** A backtick-quoted identifier closed, then an operator (`` admin` or 1=1 ``, `` `a`like`b` ``). */
const BACKTICK_OPERATOR = /\x60 ?(?:regexp|rlike|like|xor|and|or|=)(?: |$)/g;
/**
 * BACKTICK_OPERATOR where the backtick closes the application's identifier: an even number of
 * backticks before it. After an odd number it closes a code span the value opened itself, the
 * way chat and Markdown quote code (`` I ran `npm ci` and then … ``).
 */
function backtickOperator(sql: string): boolean {
  BACKTICK_OPERATOR.lastIndex = 0;
  for (let m = BACKTICK_OPERATOR.exec(sql); m; m = BACKTICK_OPERATOR.exec(sql)) {
    let n = 0;
    for (let i = sql.indexOf('`'); i !== -1 && i < m.index; i = sql.indexOf('`', i + 1)) n++;
    if (n % 2 === 0) return true;
  }
  return false;
}

/** Integer-overflow and float-parsing probes (2^32 and the denormal that hung PHP and Java). */
const MAGIC_NUMBERS = /(?:^|[^\d.])(?:4294967296|18446744073709551616|2\.2250738585072011e-308)(?:[^\d]|$)/;

/** NoSQL (MongoDB) operator injection in a parameter name or a JSON key. */
const NOSQL_OPERATOR =
  /(?:^|\[)\$(?:ne|eq|gt|gte|lt|lte|in|nin|not|where|regex|exists|elemmatch|text|expr|or|and|nor|all|size|type|mod|jsonschema|function|accumulator)(?:\]|$)/;

/** SQL injection rules. */
export const SQLI_RULES: Rule[] = [
  {
    id: 'sqli-syntax',
    view: 'sql',
    operator: 'tokenizer:sql',
    triggers: { words: SQL_WORDS, value: /union|--|@@/ },
    examples: [
      "1' or '1'='1",
      '1 or 1=1',
      "x' union select null--",
      '1;drop table users',
      "admin'--",
      "' #",
      '1--\nand--\n9227=9227',
      '1 union select 1',
    ],
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description: 'SQL token stream: tautology, UNION SELECT, stacked query or string breakout',
    // The SQL view drops comments: a string closed right before an unfinished `/*` (`admin'/*`)
    // is read on the lower-case view.
    test: (v) =>
      detectSqli(v.sql) ||
      (v.lower.includes('/*') && QUOTE_COMMENT.test(v.lower)) ||
      QUOTE_COMMENT_END.test(v.lower),
  },
  {
    id: 'sqli-function',
    view: 'sql',
    operator: 'phrases:sql-functions',
    examples: ["1' and sleep(5)--", "' + char(65)", 'benchmark(1000000,md5(1))', 'database('],
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Call of an SQL function used by injections (sleep, benchmark, load_file, concat, …)',
    test: (v) => v.sql.includes('(') && functionCall(v.sql),
  },
  {
    id: 'sqli-keywords',
    view: 'sql',
    operator: 'pattern',
    triggers: { words: SQL_WORDS, word: /^(?:xp_|sp_)|^\d+(?:\.\d+)?\.e/, value: /union|@@/ },
    examples: [
      'union all select',
      'waitfor delay',
      'exec xp_cmdshell',
      '1 group by 1 having 1=1',
      'print @@version',
      'select session_user',
      "backup database master to disk='\\\\10.0.0.1\\x\\db.bak'",
      'select (case 1 when 1 then 1 else 0 end) from rdb$database',
    ],
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'SQL keyword sequence (UNION SELECT, WAITFOR DELAY, INTO OUTFILE, xp_cmdshell, casts, JSON operators, BACKUP DATABASE … TO DISK, BULK INSERT, LOAD DATA INFILE, COPY … PROGRAM)',
    test: (v) =>
      KEYWORD_SEQUENCES.test(v.sql) ||
      (v.lower.includes('/*') && /\/\*[!+]/.test(v.lower)) ||
      (v.sql.includes('`') && backtickOperator(v.sql)),
  },
  {
    id: 'sqli-system-objects',
    view: 'lower',
    operator: 'pattern',
    triggers: { words: SYSTEM_OBJECT_WORDS },
    examples: [
      'information_schema.tables',
      'pg_catalog',
      'sqlite_master',
      'mysql.user',
      'tempdb',
      "'msdasql'",
    ],
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'header'],
    description: 'Database catalogue, sample-database or ad hoc query provider name',
    test: (v) => SYSTEM_OBJECTS.test(v.lower),
  },
  {
    id: 'sqli-magic-number',
    view: 'decoded',
    operator: 'pattern',
    triggers: { value: /\d{10}/ },
    examples: ['4294967296', '2.2250738585072011e-308'],
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw'],
    description: 'Integer overflow or float parsing probe',
    test: (v) => MAGIC_NUMBERS.test(v.decoded),
  },
  {
    id: 'sqli-nosql-operator',
    view: 'lower',
    operator: 'pattern',
    examples: [{ kind: 'query-name', key: 'query:user[$ne]', value: 'user[$ne]' }],
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query-name', 'body-name', 'body'],
    description: 'MongoDB query operator in a parameter name or JSON key',
    test: (v) => v.decoded.includes('$') && NOSQL_OPERATOR.test(v.lower),
  },
  {
    id: 'sqli-quote-comment',
    view: 'sql',
    operator: 'pattern',
    examples: ["admin'--"],
    prose: true,
    family: 'sqli',
    paranoia: 2,
    score: SCORE.warning,
    description: 'Quote followed by an SQL comment or statement end',
    test: (v) => /['"`] ?(?:--|#|\/\*|;)/.test(v.sql),
  },
  {
    id: 'sqli-meta-characters',
    view: 'decoded',
    operator: 'pattern',
    examples: ["'; select (x); #"],
    prose: true,
    family: 'sqli',
    paranoia: 3,
    score: SCORE.warning,
    kinds: ['query', 'body', 'cookie'],
    description: 'Several SQL meta-characters in one value',
    test: (v) => (v.decoded.match(/['"`;()#]|--/g)?.length ?? 0) >= 4,
  },
];
