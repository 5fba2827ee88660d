import { SHELL } from '../shell.ts';
import { type Rule, SCORE } from '../types.ts';

/** Remote command execution rules. */
export const RCE_RULES: Rule[] = [
  {
    id: 'rce-command-chain',
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Shell separator followed by a command (;id, |sh, &&curl, `…`, $(…))',
    test: (v) => SHELL.AFTER_SEPARATOR.test(v.shell),
  },
  {
    id: 'rce-command',
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description: 'Value that is a command line (whoami, cat /etc/…, ansible …, /usr/bin/perl -e …)',
    test: (v) => SHELL.AT_START.test(v.shell) || SHELL.AMBIGUOUS_AT_START.test(v.shell) || SHELL.BIN_PATH.test(v.path),
  },
  {
    id: 'rce-shell-syntax',
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'body-raw', 'cookie', 'cookie-name', 'header'],
    description: 'Shell expansion or redirection ($(…), backticks, ${x#…}, <(…), brace and glob expansion, () {)',
    test: (v) => SHELL.SHELL_SYNTAX.test(v.lower),
  },
  {
    id: 'rce-windows',
    family: 'rce',
    paranoia: 1,
    score: SCORE.critical,
    description: 'cmd.exe FOR/IF grammar, PowerShell download/execute cmdlets',
    test: (v) => SHELL.WINDOWS_FOR.test(v.lower) || SHELL.WINDOWS_IF.test(v.lower) || SHELL.POWERSHELL.test(v.lower),
  },
  {
    id: 'rce-windows-env',
    family: 'rce',
    paranoia: 1,
    score: SCORE.warning,
    description: 'Windows system-location variable (%SYSTEMROOT%, %COMSPEC%, …)',
    test: (v) => v.lower.includes('%') && SHELL.WINDOWS_ENV.test(v.lower),
  },
  {
    id: 'rce-variable',
    family: 'rce',
    paranoia: 2,
    score: SCORE.warning,
    kinds: ['query', 'body', 'cookie', 'header'],
    description: 'Shell variable expansion (${x}, $x)',
    test: (v) => /\$\{?[a-z_]\w*\}?/.test(v.lower),
  },
];
