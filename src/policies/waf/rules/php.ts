import { type Rule, SCORE } from '../types.ts';

/** PHP functions that run code, commands or read files. */
const PHP_FUNCTIONS =
  /(?:^|[^\w$>.:])(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|eval|assert|create_function|call_user_func(?:_array)?|preg_replace|base64_decode|gzinflate|gzuncompress|str_rot13|file_get_contents|file_put_contents|fopen|fwrite|readfile|include(?:_once)?|require(?:_once)?|phpinfo|unserialize|highlight_file|show_source|move_uploaded_file|chr|ord|array_map|usort|ini_set|putenv|mail|curl_exec|symlink)\s*\(/;

/** Superglobals, open tags, serialized objects. */
const PHP_SYNTAX =
  /<\?(?:php\b|=)|\$_(?:get|post|server|cookie|request|files|env|session|globals)\b|\$globals\[|(?:^|[;{(])\s*[oc]:\d+:"[\w\\]{1,100}":\d+:\{|\bphp:\/\/(?:input|filter|memory|temp|stdin|fd)/;

/** Uploaded or named file with a script extension. */
const SCRIPT_FILE = /\.(?:php\d?|phtml|phar|pht|phps|inc|asp|aspx|jsp|jspx|cgi|pl|py|sh)\s*$/;

/** PHP injection rules. */
export const PHP_RULES: Rule[] = [
  {
    id: 'php-function',
    view: 'lower',
    operator: 'pattern',
    examples: ['system("id")', 'eval($_POST[x])'],
    family: 'php',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'header'],
    description: 'Call of a PHP function that runs code or commands',
    test: (v) => v.lower.includes('(') && PHP_FUNCTIONS.test(v.lower),
  },
  {
    id: 'php-syntax',
    view: 'lower',
    operator: 'pattern',
    examples: ['<?php echo 1; ?>', '$_SERVER'],
    family: 'php',
    paranoia: 1,
    score: SCORE.critical,
    description: 'PHP open tag, superglobal, serialized object or php:// stream',
    test: (v) => PHP_SYNTAX.test(v.lower),
  },
  {
    id: 'php-script-filename',
    view: 'lower',
    operator: 'pattern',
    triggers: { word: /\.(?:php\d?|phtml|phar|pht|phps|inc|asp|aspx|jsp|jspx|cgi|pl|py|sh)$/ },
    examples: [{ kind: 'header', key: 'header:x-filename', value: 'shell.php' }],
    plain: true,
    family: 'php',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['header'],
    description: 'File-name header naming a server-side script',
    test: (v) => /filename/.test(v.target.key) && SCRIPT_FILE.test(v.lower.replace(/\s+/g, '')),
  },
];
