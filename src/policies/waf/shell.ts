/**
 * OS command injection: a command name in command position. Command position is the start of
 * the value or the place right after a shell separator (`;`, `|`, `&`, newline, backtick, `$(`,
 * `(`, `{`, `<(`), once the shell evasions are undone (see shellNormalize). Two dictionaries: names
 * that are not English words count even at the very start of a value (`whoami`, `cat /etc/x`), the
 * ambiguous ones (`time`, `ping`, `set`) only after a separator.
 */

/** Unix and Windows commands that no sentence starts with. */
export const DISTINCT = [
  'whoami',
  'uname',
  'ifconfig',
  'ipconfig',
  'netstat',
  'nslookup',
  'wget',
  'curl',
  'nc',
  'ncat',
  'netcat',
  'socat',
  'telnet',
  'ssh',
  'scp',
  'sftp',
  'tftp',
  'rsync',
  'nmap',
  'bash',
  'sh',
  'zsh',
  'ksh',
  'csh',
  'tcsh',
  'dash',
  'fish',
  'busybox',
  'python',
  'python2',
  'python3',
  'perl',
  'ruby',
  'irb',
  'php',
  'lua',
  'node',
  'nodejs',
  'java',
  'jjs',
  'nohup',
  'chmod',
  'chown',
  'chgrp',
  'chattr',
  'passwd',
  'useradd',
  'usermod',
  'userdel',
  'sudo',
  'visudo',
  'crontab',
  'cat',
  'tac',
  'ls',
  'dir',
  'id',
  'ps',
  'pwd',
  'printf',
  'base64',
  'base32',
  'xxd',
  'hexdump',
  'od',
  'gzip',
  'gunzip',
  'zcat',
  'zstd',
  'zstdcat',
  'xz',
  'unxz',
  'xzcat',
  'bzip2',
  'bunzip2',
  'bzcat',
  'tar',
  'rmt-tar',
  'unzip',
  'awk',
  'gawk',
  'nawk',
  'sed',
  'grep',
  'egrep',
  'fgrep',
  'xargs',
  'strings',
  'dd',
  'rm',
  'rmdir',
  'wc',
  'uniq',
  'ansible',
  'ansible-config',
  'ansible-console',
  'ansible-doc',
  'ansible-galaxy',
  'ansible-inventory',
  'ansible-playbook',
  'ansible-pull',
  'ansible-vault',
  'chef-client',
  'chef-shell',
  'chef-solo',
  'chef-vault',
  'knife',
  'cscli',
  'certutil',
  'bcdboot',
  'bcdedit',
  'powershell',
  'pwsh',
  'cmd',
  'cmd.exe',
  'wmic',
  'schtasks',
  'bitsadmin',
  'mshta',
  'rundll32',
  'regsvr32',
  'cscript',
  'wscript',
  'reg',
  'htop',
  'lastlogin',
  'aptitude',
  'apt-get',
  'yum',
  'dnf',
  'rpm',
  'dpkg',
  'systemctl',
  'killall',
  'pkill',
  'flock',
  'perf',
  'env',
  'printenv',
  'uptime',
  'hostname',
  'lsof',
  'tcpdump',
  'iptables',
  'mkfifo',
  'mknod',
  'openssl',
  'gcc',
  'cc',
  'make',
  'docker',
  'kubectl',
  'tee',
  'nl',
  'iwr',
  'iex',
  'iwmi',
  'icm',
  'sal',
  'tasklist',
  'taskkill',
  'net1',
  'sc',
  'whoami.exe',
  'getfacl',
  'setfacl',
  'readlink',
  'realpath',
  'stat',
  'lsattr',
  'dmesg',
  'sysctl',
  'modprobe',
  'insmod',
  'at',
  'batch',
  'expect',
  'sshpass',
  'ftp',
  'rcp',
  'rlogin',
  'rsh',
  'su',
  'doas',
  'pkexec',
  'rev',
  'fold',
  'comm',
  'bridge',
  'paste',
  'diff',
  'cmp',
  'look',
  'column',
  'iconv',
  'uudecode',
  'uuencode',
  'shuf',
  'split',
  'csplit',
  'ed',
  'vi',
  'vim',
  'nano',
  'emacs',
  'less',
  'more',
  'head',
  'tail',
  'echo',
  'type',
  'who',
  'ping',
  'regedit',
  'time',
  'set',
  'kill',
  'sleep',
  'find',
  'sort',
  'cut',
  'tr',
  'ln',
  'cp',
  'mv',
  'touch',
  'mkdir',
  'cd',
  'exec',
  'eval',
  'source',
  'alias',
  'export',
  'unset',
  'shutdown',
  'reboot',
  'halt',
  'poweroff',
  'mount',
  'umount',
  'nice',
  'timeout',
  'watch',
  'strace',
  'ltrace',
  'gdb',
  'ssh-keygen',
  'nproc',
  'lscpu',
  'lsblk',
  'fdisk',
  'df',
  'du',
  'free',
  'ip',
  'route',
  'arp',
  'dig',
  'host',
  'traceroute',
  'tracert',
  'ver',
  'systeminfo',
  'net',
  'start',
  'call',
  'del',
  'copy',
  'move',
  'ren',
  'attrib',
  'icacls',
  'cacls',
  'takeown',
  'vssadmin',
  'wevtutil',
  'fsutil',
  'c89',
  'c99',
  'rmt',
  'aa-disable',
  'aa-enforce',
  'aa-complain',
  'aa-exec',
  'aa-status',
];

/** Names that are also ordinary words or too short to trust at the start of a value. */
const AMBIGUOUS = new Set([
  'dir',
  'id',
  'ps',
  'od',
  'dd',
  'wc',
  'java',
  'node',
  'make',
  'cc',
  'at',
  'batch',
  'expect',
  'su',
  'rev',
  'fold',
  'comm',
  'bridge',
  'paste',
  'diff',
  'look',
  'column',
  'split',
  'ed',
  'vi',
  'less',
  'more',
  'head',
  'tail',
  'echo',
  'type',
  'who',
  'ping',
  'regedit',
  'time',
  'set',
  'kill',
  'sleep',
  'find',
  'sort',
  'cut',
  'tr',
  'ln',
  'cp',
  'mv',
  'touch',
  'mkdir',
  'cd',
  'exec',
  'eval',
  'source',
  'export',
  'unset',
  'shutdown',
  'reboot',
  'halt',
  'mount',
  'nice',
  'timeout',
  'watch',
  'free',
  'ip',
  'route',
  'host',
  'ver',
  'net',
  'start',
  'call',
  'del',
  'copy',
  'move',
  'ren',
  'stat',
  'env',
  'uptime',
  'tee',
  'nl',
  'sc',
  'sal',
  'icm',
  'reg',
  'knife',
  'perf',
  'php',
  'cmd',
  'df',
  'du',
  'dig',
  'arp',
  'ftp',
  'strings',
  'flock',
  'sed',
  'nc',
  'ls',
  'rm',
  'cat',
  'sh',
  'tac',
  'alias',
]);

/** Names people also write in prose about software: at the start of a value they need a flag or path after them. */
const PROSE_NAMES = new Set([
  'python',
  'python2',
  'python3',
  'perl',
  'ruby',
  'php',
  'node',
  'nodejs',
  'java',
  'docker',
  'kubectl',
  'bash',
  'curl',
  'wget',
  'ssh',
  'make',
  'openssl',
  'busybox',
  'expect',
  'ansible',
  'powershell',
  'telnet',
  'nmap',
  'netcat',
  'rsync',
  'gcc',
  'lua',
  'fish',
  'dash',
  'tar',
  'sudo',
  'knife',
  'irb',
  'cmd',
  'reg',
  'sc',
  'net',
  'at',
  'sal',
]);

/** Admin tools that, named alone, are a command and not a data value (`base64` or `gzip` alone are data). */
const ALONE = new Set([
  'whoami',
  'ifconfig',
  'ipconfig',
  'netstat',
  'nslookup',
  'visudo',
  'nohup',
  'cscli',
  'certutil',
  'bcdboot',
  'bcdedit',
  'powershell',
  'pwsh',
  'wmic',
  'schtasks',
  'bitsadmin',
  'mshta',
  'rundll32',
  'regsvr32',
  'htop',
  'aptitude',
  'systeminfo',
  'tasklist',
  'printenv',
  'crontab',
  'useradd',
  'usermod',
  'userdel',
  'ifconfig',
  'uname',
]);

const escapeName = (w: string): string => w.replace(/[.-]/g, (c) => `\\${c}`);
const alternation = (names: string[]): string => names.map(escapeName).join('|');
const FREE_NAMES = alternation(DISTINCT.filter((w) => !AMBIGUOUS.has(w) && !PROSE_NAMES.has(w)));
const ALONE_NAMES = alternation(
  DISTINCT.filter((w) => ALONE.has(w) || (w.includes('-') && !AMBIGUOUS.has(w))),
);
const FLAGGED_NAMES = alternation(DISTINCT.filter((w) => PROSE_NAMES.has(w) || AMBIGUOUS.has(w)));

const CLEAR = new Set(DISTINCT.filter((w) => !AMBIGUOUS.has(w)));
const SEPARATOR = /[;|`\n&({<>]/g;
const WORD = /[\w./-]{1,80}/y;
const ARGUMENT = /\s+[-/%$~]/y;
const WORD_END = /[\s;|&<>(`)/,-]/;

/**
 * A command after a separator: `;cmd`, `|cmd`, `&&cmd`, `` `cmd ``, `$(cmd`, `\ncmd`, `<(cmd`,
 * `{cmd`. Unambiguous names count after any separator; names that are also English words only
 * right after `;`, `&` or `|` (`;set`), after a pipe, backtick or `$(` (`| type x`), or with a flag
 * or path argument (`; regedit /e`). A scan with set look-ups: cheaper than one regex of 300 names.
 */
function commandAfterSeparator(s: string): boolean {
  SEPARATOR.lastIndex = 0;
  for (let m = SEPARATOR.exec(s); m; m = SEPARATOR.exec(s)) {
    const at = m.index;
    const c = s[at]!;
    if ((c === '<' || c === '>') && s[at + 1] !== '(') continue;
    const prev = s[at - 1];
    // `$(`, `<(`, `>(`, `&&`, `||` are strong separators; `(` and `{` alone only introduce clear names.
    const strong =
      c === '|' ||
      c === '`' ||
      (c === '(' && (prev === '$' || prev === '<' || prev === '>')) ||
      (c === '&' && s[at + 1] === '&');
    const tight = c === ';' || c === '\n' || c === '&' || c === '|';
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
    const after = k + w[0].length;
    if (after < s.length && !WORD_END.test(s[after]!)) continue;
    // `/usr/bin/curl` names `curl`; `bcdboot/r` is `bcdboot` with a flag glued on.
    const slash = w[0].lastIndexOf('/');
    let word = slash === -1 ? w[0] : w[0].slice(slash + 1);
    if (slash !== -1 && !CLEAR.has(word) && !AMBIGUOUS.has(word)) word = w[0].slice(0, w[0].indexOf('/'));
    if (word.endsWith('.exe')) word = word.slice(0, -4);
    if (CLEAR.has(word)) return true;
    if (!AMBIGUOUS.has(word)) continue;
    if ((tight && !spaced) || strong) return true;
    if (tight && (c !== '|' || !spaced)) {
      ARGUMENT.lastIndex = after;
      if (ARGUMENT.test(s)) return true;
    }
  }
  return false;
}

/** A command at the start of the value: `whoami`, `nohup ifconfig`, `cscli alerts list`, `python3 -m x`, `ls -la`. */
const AT_START = new RegExp(
  [
    `^\\s*(?:${FREE_NAMES})(?:\\.exe)?(?:\\s+\\S|\\s*[;|&<>\`])`,
    `^\\s*(?:${ALONE_NAMES})(?:\\.exe)?\\s*$`,
    `^\\s*(?:${FLAGGED_NAMES})(?:\\.exe)?\\s+(?:[\\w.-]{1,30}\\s+)?(?:-{1,2}[a-z]|[/~$<>|])`,
  ].join('|'),
);

/** A command name behind a backslash (`\\ls`), which the shell reads as the plain command. */
const ESCAPED_COMMAND = new RegExp(`(?:^|[\\s;|&])\\\\(?:${alternation(DISTINCT)})(?:$|\\s)`);

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
    String.raw`\{[a-z0-9-]{0,20},[a-z0-9,-]{0,40}\}[a-z]?|[a-z]\{[a-z0-9-]{0,20},[a-z0-9,-]{0,40}\}`,
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

/** `%SYSTEMROOT%`-style variables of Windows system locations. */
const WINDOWS_ENV =
  /%(?:systemroot|systemdrive|windir|comspec|programfiles|appdata|userprofile|temp|homedrive)%/;

export const SHELL = {
  ESCAPED_COMMAND,
  ALIAS,
  commandAfterSeparator,
  AT_START,
  AMBIGUOUS_AT_START,
  BIN_PATH,
  SHELL_SYNTAX,
  WINDOWS_FOR,
  WINDOWS_IF,
  POWERSHELL,
  WINDOWS_ENV,
};
