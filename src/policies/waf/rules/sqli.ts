import { SQL_FUNCTIONS } from '../lists.ts';
import { detectSqli } from '../sqli.ts';
import { type Rule, SCORE } from '../types.ts';

const escapeRe = (w: string): string => w.replace(/[.$@]/g, (c) => `\\${c}`);
const CLEAR_FUNCTIONS = SQL_FUNCTIONS.filter((f) => !f.ambiguous).map((f) => escapeRe(f.name));
const WORD_FUNCTIONS = SQL_FUNCTIONS.filter((f) => f.ambiguous).map((f) => escapeRe(f.name));

/**
 * A call of an SQL function injections use (sql-functions.txt). Names that are not words count
 * anywhere (`benchmark(`, `pg_sleep(`); word-like names (`char(`, `version(`, `user(`) only in SQL
 * context: after a quote, an operator, a comma, a glued call (`concat(char(`) or an SQL keyword.
 */
const FUNCTION_CALL = new RegExp(
  [
    `(?:^|[^\\w.$@])(?:${CLEAR_FUNCTIONS.join('|')})\\s*[\\\\=]?\\s*\\(`,
    // After a quote, an operator, a comma or a glued call: `'+char(`, `concat(char(`, `= user ()`.
    `(?:[\\w)]\\(|['"\x60,=<>+|&*/%^-])\\s*(?:${WORD_FUNCTIONS.join('|')})\\s*\\(`,
    // After an SQL keyword or at the start, glued to its parenthesis: `and user(`, `database(`; not `in case (x)`.
    `(?:^\\s*|\\b(?:select|and|or|not|xor|where|union|having|by|when|then|else|like|from|in|is|return|values|exec|div|mod)\\s+)(?:${WORD_FUNCTIONS.join('|')})\\(`,
  ].join('|'),
);

/** Names of system catalogues and sample databases, which no ordinary request mentions. */
const SYSTEM_OBJECTS =
  /(?:^|[^\w])(?:information_schema|pg_catalog|pg_shadow|pg_user|pg_database|mysql\.(?:db|user|host)|sysobjects|syscolumns|sysdatabases|sysusers|msysaccessobjects|msysobjects|msysqueries|msysrelationships|sqlite_master|sqlite_temp_master|all_tables|all_tab_columns|user_tables|dba_users|tempdb|northwind|master\.\.sysdatabases|schema_name|table_name|column_name)(?:[^\w]|$)/;

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
    String.raw`\) ?like ?\(`,
    String.raw`\bif ?\( ?\d+ ?=`,
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
    String.raw`\bselect (?:pg_sleep|sleep|benchmark|load_file|current_user|version|database|@@\w+)\b`,
    String.raw`\x60 ?(?:regexp|rlike|like|xor|and|or|=)(?: |$)`,
  ].join('|'),
);

/** Integer-overflow and float-parsing probes (2^32 and the denormal that hung PHP and Java). */
const MAGIC_NUMBERS = /(?:^|[^\d.])(?:4294967296|18446744073709551616|2\.2250738585072011e-308)(?:[^\d]|$)/;

/** NoSQL (MongoDB) operator injection in a parameter name or a JSON key. */
const NOSQL_OPERATOR =
  /(?:^|\[)\$(?:ne|eq|gt|gte|lt|lte|in|nin|not|where|regex|exists|elemmatch|text|expr|or|and|nor|all|size|type|mod|jsonschema|function|accumulator)(?:\]|$)/;

/** SQL injection rules. */
export const SQLI_RULES: Rule[] = [
  {
    id: 'sqli-syntax',
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description: 'SQL token stream: tautology, UNION SELECT, stacked query or string breakout',
    test: (v) => detectSqli(v.sql),
  },
  {
    id: 'sqli-function',
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Call of an SQL function used by injections (sleep, benchmark, load_file, concat, …)',
    test: (v) => v.sql.includes('(') && FUNCTION_CALL.test(v.sql),
  },
  {
    id: 'sqli-keywords',
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'SQL keyword sequence (UNION SELECT, WAITFOR DELAY, INTO OUTFILE, xp_cmdshell, casts, JSON operators)',
    test: (v) => KEYWORD_SEQUENCES.test(v.sql) || (v.lower.includes('/*') && /\/\*[!+]/.test(v.lower)),
  },
  {
    id: 'sqli-system-objects',
    plain: true,
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'header'],
    description: 'Database catalogue or sample-database name',
    test: (v) => SYSTEM_OBJECTS.test(v.lower),
  },
  {
    id: 'sqli-magic-number',
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
    family: 'sqli',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query-name', 'body-name', 'body'],
    description: 'MongoDB query operator in a parameter name or JSON key',
    test: (v) => v.decoded.includes('$') && NOSQL_OPERATOR.test(v.lower),
  },
  {
    id: 'sqli-quote-comment',
    prose: true,
    family: 'sqli',
    paranoia: 2,
    score: SCORE.warning,
    description: 'Quote followed by an SQL comment or statement end',
    test: (v) => /['"`] ?(?:--|#|\/\*|;)/.test(v.sql),
  },
  {
    id: 'sqli-meta-characters',
    prose: true,
    family: 'sqli',
    paranoia: 3,
    score: SCORE.warning,
    kinds: ['query', 'body', 'cookie'],
    description: 'Several SQL meta-characters in one value',
    test: (v) => (v.decoded.match(/['"`;()#]|--/g)?.length ?? 0) >= 4,
  },
];
