/**
 * OS command injection: a command name in command position. Command position is the start of
 * the value or the place right after a shell separator (`;`, `|`, `&`, newline, backtick, `$(`,
 * `(`, `{`, `<(`), once the shell evasions are undone (see shellNormalize). The command names are
 * the data lists unix-commands.txt and windows-commands.txt (lists.ts): a name that is not an
 * English word counts after any separator; an ambiguous one (`time`, `ping`, `set`, `python`)
 * only in clear shell context: glued to `;`/`&`/`|`, after a pipe, backtick or `$(`, or with a
 * flag, path or address argument.
 */
import { COMMANDS } from './lists.ts';

/** Interpreters the shell-syntax rule looks for anywhere (`bash -c`, `perl -e`). */
export const INTERPRETERS: readonly string[] = [
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

/** Every command name (Unix and Windows), for the prefilter's first-word test. */
export const COMMAND_NAMES: readonly string[] = [...COMMANDS.keys()];

const SEPARATOR = /[;|`\n&({<>]/g;
const WORD = /[\w./+-]{1,80}/y;
/** What comes before the `;base64,` of a data: URL: `data:` and a media type with parameters. */
const DATA_URL_TYPE = /data:[\w.+/-]*(?:;[\w.+-]+=[\w.+-]+)*$/;
/**
 * An argument only a command line has: a flag, a path (Unix, or a Windows drive: `c:`, `c:\users`
 * reads `c:users` once the shell view drops the backslash), a variable, a quote, a URL, an
 * address or a host name.
 */
const ARGUMENT =
  /\s+(?:(?:[\w.-]{1,30}\s+)?(?:--?[a-z0-9]|\/(?:[\w.]|\s|$)|[%$~\\]|[a-z]:(?:[\w/.$%]|$))|['"]|[a-z][a-z0-9+.-]{1,10}:\/\/|[\w-]+(?:\.[\w-]+)+(?:[:/\s;|&`)]|$)|[\w.-]+@[\w.-]+)/y;
const WORD_END = /[\s;|&<>(`)/,-]/;
/** What may follow a glued ambiguous command (`;id`): the end, a separator or redirection, a number ending the command. */
const CLOSES = /^\s*(?:$|[;|&<>`)\n]|\d+\s*(?:$|[;|&`)\n]))/;
/** After a spaced ambiguous command (`; env`): the end, or a pipe, `&&`, a redirection or a backtick (not `;`: `eat; sleep; repeat`). */
const SPACED_CLOSES = /^\s*(?:$|\||&&|[<>`])/;
/**
 * After a spaced ambiguous command, one number and the end or a separator (`; sleep 5`,
 * `| sleep 5`); after a lone `&`, a separator must follow (`& sleep 10 &`, not `cut & paste 3`).
 */
const NUMBER_CLOSES = /^\s+\d{1,6}(?:\.\d{1,3})?[smhd]?\s*(?:$|[;|&`\n])/;
const NUMBER_SEPARATED = /^\s+\d{1,6}(?:\.\d{1,3})?[smhd]?\s*[;|&`\n]/;
/** One or two plain arguments up to the end or a separator, after a glued command (`;ps aux`). */
const GLUED_ARGS = /^ [\w.-]{1,40}(?: [\w.-]{1,40})?\s*(?:$|[;|&`\n])/;
/** A second command name right after the first (`busybox nc`, `sudo rm`, `nohup sh`). */
const NEXT_COMMAND = /^ ([\w.-]{1,40})(?:$|[\s;|&])/;
/**
 * Commands whose argument is another command line (sudo(8), doas(1), BusyBox applets, coreutils
 * nohup/timeout/stdbuf/chroot, util-linux setsid/runuser, findutils xargs, strace): the name after
 * one is in command position even when it is also a word (`; busybox nc …`, `; sudo su`).
 */
const WRAPPERS = new Set([
  'sudo',
  'doas',
  'pkexec',
  'busybox',
  'nohup',
  'timeout',
  'stdbuf',
  'chroot',
  'setsid',
  'runuser',
  'xargs',
  'strace',
  'ltrace',
  'unbuffer',
  'torsocks',
  'proxychains',
  'proxychains4',
]);

/** The command a word names: `/usr/bin/curl` names `curl`, `bcdboot/r` is `bcdboot` with a flag, `cmd.exe` is `cmd`. */
function commandOf(w: string): string {
  const slash = w.lastIndexOf('/');
  let word = slash === -1 ? w : w.slice(slash + 1);
  if (word.endsWith('.exe')) word = word.slice(0, -4);
  if (slash !== -1 && !COMMANDS.has(word)) {
    word = w.slice(0, w.indexOf('/'));
    if (word.endsWith('.exe')) word = word.slice(0, -4);
  }
  return word;
}

/**
 * A command after a separator: `;cmd`, `|cmd`, `&&cmd`, `` `cmd ``, `$(cmd`, `\ncmd`, `<(cmd`,
 * `{cmd`. Unambiguous names count after any separator; names that are also English words only
 * right after `;`, `&` or `|` (`;set`), after a pipe, backtick or `$(` (`| type x`), or with a flag
 * or path argument (`; regedit /e`). A scan with set look-ups: cheaper than one regex of 300 names.
 */
function commandAfterSeparator(s: string): boolean {
  SEPARATOR.lastIndex = 0;
  // Backticks seen before this separator (every backtick is a separator, met in order).
  let ticks = 0;
  for (let m = SEPARATOR.exec(s); m; m = SEPARATOR.exec(s)) {
    const at = m.index;
    const c = s[at]!;
    const ticksBefore = ticks;
    if (c === '`') ticks++;
    if ((c === '<' || c === '>') && s[at + 1] !== '(') continue;
    const prev = s[at - 1];
    // `$(`, `<(`, `>(`, `|`, `&&` are strong separators; `(` and `{` alone only introduce clear
    // names. A backtick is tight, not strong: markdown quotes code with it (`npm install`).
    // A backtick glued to the letters before it, opening (an even number before it), substitutes
    // inside a word (`who\`echo am\`i`); Markdown opens a code span after a blank.
    const strong =
      c === '|' ||
      (c === '(' && (prev === '$' || prev === '<' || prev === '>')) ||
      (c === '&' && s[at + 1] === '&') ||
      (c === '`' && ticksBefore % 2 === 0 && prev !== undefined && /[a-z]/.test(prev));
    const tight = c === ';' || c === '\n' || c === '&' || c === '|' || c === '`';
    let j = at + 1;
    if ((c === '&' || c === '|') && s[j] === c) j++;
    if ((c === '<' || c === '>') && s[j] === '(') j++;
    let k = j;
    while (k < s.length && (s[k] === ' ' || s[k] === '\t')) k++;
    const spaced = k > j;
    if (!spaced && tight && s[k] === '(') k++;
    WORD.lastIndex = k;
    const w = WORD.exec(s);
    if (!w) continue;
    // The `;base64,` of a data: URL (`data:image/png;base64,iVBOR…`) is no command.
    if (
      c === ';' &&
      w[0] === 'base64' &&
      s[k + 6] === ',' &&
      DATA_URL_TYPE.test(s.slice(Math.max(0, at - 80), at))
    )
      continue;
    const after = k + w[0].length;
    if (after < s.length && !WORD_END.test(s[after]!)) continue;
    const word = commandOf(w[0]);
    const info = COMMANDS.get(word);
    if (info === undefined) continue;
    if (!info.ambiguous) return true;
    if (strong) return true;
    if (!tight) continue;
    const rest = s.slice(after, after + 40);
    // `;id`, `;set|x`, `;sleep 5`, `; env` at the end, `& dir`; a lone `&` between words only
    // before a short name (`cut & paste`, `save & exit` are prose).
    if (!spaced ? CLOSES.test(rest) : SPACED_CLOSES.test(rest) && (c !== '&' || word.length <= 3))
      return true;
    // A lone `&` between words needs a separator after the number (`cut & paste 3` is prose); one
    // opening the value does not (`& sleep 5`): prose never starts with it.
    const loneAmp = c === '&' && !strong && s.slice(0, at).trim() !== '';
    if (spaced && c !== '\n' && c !== '`' && (loneAmp ? NUMBER_SEPARATED : NUMBER_CLOSES).test(rest))
      return true;
    // Glued to its separator and given an argument or a second command: `;ps aux`,
    // `&net localgroup x`, `;busybox nc x`; not after a line break (`…\nfind my order`).
    // Not after a backtick either: markdown quotes code with it (`npm install`).
    const prose = c === '\n' || c === '`';
    if (!spaced && !prose && GLUED_ARGS.test(rest)) return true;
    const next = NEXT_COMMAND.exec(rest)?.[1];
    const nextInfo = next === undefined ? undefined : COMMANDS.get(next);
    if (nextInfo !== undefined && !prose && (!spaced || !nextInfo.ambiguous || WRAPPERS.has(word)))
      return true;
    ARGUMENT.lastIndex = after;
    if (ARGUMENT.test(s)) return true;
  }
  return false;
}

const FIRST_WORD = /^\s*([\w./+-]{1,80})/;
/** After an ambiguous name at the start: a flag or path argument (Unix or a drive: `dir c:`, `c:\*\*32`), possibly after one word (`ls foo -la`). */
const FLAG_AFTER = /^\s+(?:[\w.-]{1,30}\s+)?(?:-{1,2}[a-z]|[/~$<>|]|\.\w|[a-z]:(?:[\w/.$%*?]|$))/;
const ARGS_AFTER = /^(?:\s+\S|\s*[;|&<>`])/;

/**
 * A command at the start of the value: `whoami`, `nohup ifconfig`, `cscli alerts list`,
 * `python3 -m x`, `ls -la`. A clear name needs any argument (or, marked `!` or hyphenated, none);
 * an ambiguous one a flag or path (`find / -name x`, not `find my order`).
 */
function commandAtStart(s: string): boolean {
  const m = FIRST_WORD.exec(s);
  if (!m) return false;
  const name = commandOf(m[1] as string);
  const info = COMMANDS.get(name);
  if (info === undefined) return false;
  const rest = s.slice(m[0].length);
  if (rest.trim() === '') return info.alone || (!info.ambiguous && name.includes('-'));
  if (!info.ambiguous && ARGS_AFTER.test(rest)) return true;
  return FLAG_AFTER.test(rest);
}

/** A name behind a backslash (`\\ls`), which the shell reads as the plain command. */
const ESCAPED_WORD = /(?:^|[\s;|&])\\([\w.-]{1,40})(?=$|\s)/g;
function escapedCommand(s: string): boolean {
  ESCAPED_WORD.lastIndex = 0;
  for (let m = ESCAPED_WORD.exec(s); m; m = ESCAPED_WORD.exec(s))
    if (COMMANDS.has(commandOf(m[1] as string))) return true;
  return false;
}

/** An alias definition: the way to smuggle a command under another name (`alias a=curl&a …`). */
const ALIAS = /(?:^|[\s;|&])alias\s+(?:[+-][\w+]{1,4}\s+)*[\w.-]{0,40}=|(?:^|[\s;|&])alias\s+[+-][\w+]/;

/** Short commands that alone are a command line (`ls foo bar`). */
const AMBIGUOUS_AT_START = /^\s*ls(?:\s+[a-z0-9_.]+){1,2}\s*$/;

/** A command named by path: `/bin/sh`, `/usr/bin/python3`, `bin/visudo`. */
const BIN_PATH = /(?:^|[\s;|&`(=])\/?(?:usr\/)?(?:local\/)?s?bin\/(?:[a-z][\w.-]{1,30})(?:$|[\s;|&<>`)])/;

/** Shell expansions and redirections that only a shell gives meaning to. */
const SHELL_SYNTAX = new RegExp(
  [
    String.raw`\$\([^)]{0,100}\)`,
    String.raw`\$\(\(`,
    String.raw`\$\[[^\]]{1,50}\]`,
    String.raw`\$\{[a-z_][\w]{0,30}[#%:/^,@\[][^}]{0,60}\}`,
    String.raw`\$\{(?:ifs|path|shell|home|user|pwd)\}`,
    String.raw`[<>]\([^)]{1,200}\)`,
    '<<<',
    String.raw`\(\s*\)\s*\{`,
    // Brace expansion with a word inside (`{cat,/etc/passwd}`), not a regex quantifier (`{3,16}`).
    String.raw`\{(?=[\w,-]{0,60}[a-z])[a-z0-9-]{0,20},[a-z0-9,-]{0,40}\}[a-z]?|[a-z]\{(?=[\w,-]{0,60}[a-z])[a-z0-9-]{0,20},[a-z0-9,-]{0,40}\}`,
    String.raw`(?:^|[\s=])~[+-]\d*(?:$|[\s/])`,
    String.raw`(?:^|[\s=])!-\d+`,
    String.raw`/[\w.-]{0,20}\[!?\^?[\w/?*.-]{1,12}\][\w.?*-]{0,20}`,
    String.raw`/\?{2,}/|/[\w]{0,4}\?[\w?]{0,4}/[\w?*]{0,8}\?`,
    String.raw`\|\s*(?:ba|z|k|da)?sh\b`,
    String.raw`\b(?:ba|z|k|c|tc|da)?sh\s+-c\b|\b(?:perl|ruby|python[23]?|php|node)\s+-[er]\s`,
  ].join('|'),
);

/** cmd.exe grammar: `for [/d|/r|/l|/f] %x in (…) do …`, `if [/i] [not] exist|defined|errorlevel|a==b … cmd`. */
const WINDOWS_FOR =
  /(?:^|[\s&|;(])for\s+(?:\/[dlrf]\s+){0,4}(?:(?:\\?"[^"]{0,60}"|[\w:\\.-]{1,60})\s+){0,4}%%?[~\w\][/]{0,30}\s+in\s*\(/;
const WINDOWS_IF =
  /(?:^|[\s&|;(])if\s+(?:\/i\s+)?(?:not\s+)?(?:exist\s+\S|defined\s+\S|errorlevel\s+\d|cmdextversion\s+\d|"[^"]{0,60}"\s*===?|\S{1,60}?\s*===?\s*\S|(?:"[^"]{0,60}"|%[\w~]{1,30}%?|\(?[\w%]{1,30}\)?)\s+(?:equ|neq|lss|leq|gtr|geq)\s+\S|\(\s*\w+\s+(?:equ|neq|lss|leq|gtr|geq)\s)/;

/** PowerShell cmdlets that fetch or run code. */
const POWERSHELL =
  /\b(?:invoke-(?:webrequest|expression|command|restmethod|item|wmimethod|shellcode|mimikatz)|start-process|new-object\s+(?:system\.)?net\.webclient|downloadstring|downloadfile|set-executionpolicy|get-wmiobject|iex\s*\(|-encodedcommand|-enc\s+[a-z0-9+/=]{16})\b/;

/**
 * The Windows `net` and `reg` commands (Microsoft Learn command reference: `net` subcommands;
 * `reg` operations on a key under a root key HKLM, HKCU, HKCR, HKU, HKCC or HKEY_…). After a
 * separator any `net` subcommand counts; at the start of the value one that prose does not use
 * (`net localgroup`), or any with a switch or UNC argument or alone (`net view`, `net user x /add`),
 * not `Net user growth was 5%`.
 */
/** `net`, `net1`, `net.exe`, also by path (`c:\windows\system32\net.exe`). */
const NET = String.raw`(?:[\w:.~-]*[\\/])?net1?(?:\.exe)?`;
const NET_SUBCOMMANDS =
  'accounts|computer|config|continue|file|group|helpmsg|localgroup|pause|print|session|share|start|statistics|stop|time|use|user|view';
const WINDOWS_NET_REG = new RegExp(
  [
    String.raw`[;|&\n\x60(]\s*${NET}\s+(?:${NET_SUBCOMMANDS})\b`,
    String.raw`^\s*${NET}\s+(?:localgroup|accounts|helpmsg|statistics)\b`,
    String.raw`^\s*${NET}\s+(?:${NET_SUBCOMMANDS})(?:\s*$|\s.*\s\/[a-z]|\s+\\\\)`,
    String.raw`\breg(?:\.exe)?\s+(?:query|add|delete|copy|save|restore|load|unload|compare|export|import|flags)\s+"?(?:\\\\[^\\\s]+\\)?hk(?:lm|cu|cr|u|cc|ey_)`,
  ].join('|'),
);

/** `%SYSTEMROOT%`-style variables of Windows system locations. */
const WINDOWS_ENV =
  /%(?:systemroot|systemdrive|windir|comspec|programfiles|appdata|userprofile|temp|homedrive)%/;

/**
 * cmd.exe substring expansion of a variable (`%PROGRAMFILES:~10,-5%`): a space or letter smuggled
 * in. No closing `%` needed: a repeated percent-decoding may have eaten it (`…%127.0.0.1`).
 */
const WINDOWS_SUBSTRING = /%[a-z_][\w()]{0,40}:~-?\d{1,3}(?:,-?\d{1,3})?/;

export const SHELL = {
  escapedCommand,
  ALIAS,
  commandAfterSeparator,
  commandAtStart,
  AMBIGUOUS_AT_START,
  BIN_PATH,
  SHELL_SYNTAX,
  WINDOWS_FOR,
  WINDOWS_IF,
  WINDOWS_NET_REG,
  POWERSHELL,
  WINDOWS_ENV,
  WINDOWS_SUBSTRING,
};
