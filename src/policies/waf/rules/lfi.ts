import { OS_FILES, SYSTEM_FOLDER, WEB_FILES } from '../lists.ts';
import { type Rule, SCORE } from '../types.ts';

/**
 * `../` in any spelling once decoded (`..\`, `..;/`, `.%2e/`, hex `0x2e`, the Unicode slashes that
 * Windows best-fit mapping turns into `/` or `\`: U+2215, U+2216, U+2044, U+29F5, U+29F8, U+29F9,
 * and the private-use U+EFC8 and U+F025 that old IIS `%u` decoding read as `/`),
 * and runs of three or more dots between separators (`/.../`), which older Windows and IIS
 * resolved to `../..`.
 */
const TRAVERSAL =
  /(?:^|[\\/;\s=\u2215\u2216\u2044\u29f5\u29f8\u29f9\uefc8\uf025])\.\.[\\/;\u2215\u2216\u2044\u29f5\u29f8\u29f9\uefc8\uf025]|(?:^|[\\/])\.{3,}[\\/]|\.\.(?:0x5c|0x2f)|(?:0x2e){2}|(?:0x5c|0x2f)(?:0x2e|\.)/;

/**
 * Files and folders that hold secrets or system state: system files, shell histories, keys,
 * cloud/CI credentials, app configs, AI-agent configs, backups and logs.
 */
const SENSITIVE_PATH = new RegExp(
  [
    String.raw`/etc/(?:passwd|shadow|master\.passwd|group|gshadow|sudoers|hosts|issue|crontab|subuid|subgid|security/|ssh/|mysql/|apache2?/|nginx/|httpd/|php\d?/|\w*\.conf\b)`,
    String.raw`(?:^|/)(?:proc/(?:self|\d+|cpuinfo|meminfo|version|interrupts|net|mounts|cmdline|environ)|sys/(?:class|kernel|devices|firmware|power)|dev/(?:tcp|udp)/)`,
    String.raw`(?:^|/)(?:var/log/|var/run/secrets|tmp/(?:curl|wget|\w+\.sh)\b|root/|home/[^/]{1,40}/\.)`,
    String.raw`/\.(?:ssh|aws|docker|kube|gnupg|git|svn|hg)/`,
    String.raw`(?:^|/)\.(?:cursor|continue|roo|zed|cline|kiro|windsurf|claude|junie|aider|codeium|copilot|a0proj|fabric|n8n|gemini|codex|vscode|idea)(?:/|$)|(?:^|/)\.(?:aiignore|cursorrules|clinerules|windsurfrules)\b`,
    String.raw`(?:^|/)(?:wp-config\.php|wp-content/(?:debug|error|errors)\.log|web\.config|boot\.ini|win\.ini|system\.ini|php\.ini|\.user\.ini|httpd\.conf|server\.xml|web\.xml|applicationhost\.config)`,
    String.raw`(?:^|/)(?:windows|winnt)/(?:system32|win\.ini|repair)`,
    '(?:^|/)@(?:fs|id)/',
  ].join('|'),
);

/** Secret files recognisable by name alone: dotfiles with credentials or histories, keys, database dumps. */
const SENSITIVE_NAME = new RegExp(
  [
    String.raw`(?:^|/)\.(?:ssh|aws|docker|kube|gnupg|git|svn|hg)(?:/|$)`,
    String.raw`(?:^|/)\.(?:env\b|htaccess|htpasswd|bash_history|zsh_history|history\b|mysql_history|psql_history|netrc|npmrc|pgpass|boto\b|s3cfg|git-credentials|dockercfg)`,
    String.raw`(?:^|/)(?:id_rsa|id_dsa|id_ecdsa|id_ed25519|authorized_keys|known_hosts)\b`,
  ].join('|'),
);
/**
 * Database dumps and backups by name (`x.sql`, `site.bak.gz`), the last alternative of
 * SENSITIVE_NAME: run only when the value ends like one (DUMP_END), since from every blank of a
 * long text it would re-read up to 40 characters.
 */
const DUMP_NAME = /(?:^|[/=\s])[\w.-]{0,40}\.(?:sql|bak|dump|db|sqlite3?)(?:\.(?:gz|zip|tar|bz2|7z|xz))?$/;
const DUMP_END = /\.(?:sql|bak|dump|db|sqlite3?)(?:\.(?:gz|zip|tar|bz2|7z|xz))?$/;

function sensitiveName(path: string): boolean {
  return SENSITIVE_NAME.test(path) || (DUMP_END.test(path) && DUMP_NAME.test(path));
}

/** An absolute path (`/x`, `~/x`, `c:/x`, `file:/x`): with `../`, what an application opens outside its folder. */
const ABSOLUTE = /^\s*(?:[a-z]:|file:|~)?\//;

/** Local file inclusion and path traversal rules. */
export const LFI_RULES: Rule[] = [
  {
    id: 'lfi-traversal',
    view: 'path',
    operator: 'pattern',
    triggers: { value: /\.\.|0x/ },
    examples: ['../../etc/passwd', '..\\..\\windows', '..;/admin', '0x2e0x2e/'],
    plain: true,
    family: 'lfi',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Path traversal (../ in any encoding, ..\\, ..;/)',
    test: (v) => (v.lower.includes('..') || v.lower.includes('0x')) && TRAVERSAL.test(v.path),
  },
  {
    id: 'lfi-sensitive-file',
    view: 'path',
    operator: 'paths:os-files+pattern',
    triggers: {
      words: [...OS_FILES.words, 'known_hosts', 'authorized_keys'],
      word: /^\.|\.\.|\.(?:sql|bak|dump|db|sqlite3?)\b|^id_/,
    },
    examples: [
      '/etc/shadow',
      'id_rsa',
      '.bash_history',
      'c:\\windows\\win.ini',
      '/proc/self/environ',
      '~/.aws/credentials',
      'boot.ini',
      '/var/run/secrets/kubernetes.io/serviceaccount/token',
    ],
    plain: true,
    family: 'lfi',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'Path of a file holding secrets or system state (/etc/passwd, .ssh/id_rsa, .env, agent configs, …)',
    test: (v) =>
      ((v.path.includes('/') || v.path.includes('.') || v.path.includes('_')) &&
        OS_FILES.match(v.path, { wordsAlone: true }) !== undefined) ||
      (v.path.includes('/') && SENSITIVE_PATH.test(v.path)) ||
      ((v.path.includes('.') ||
        v.path.includes('id_') ||
        v.path.includes('_keys') ||
        v.path.includes('_hosts')) &&
        sensitiveName(v.path)),
  },
  {
    id: 'lfi-system-folder',
    view: 'path',
    operator: 'paths:system-folders',
    examples: [
      '/etc/defaultrouter',
      '/var/adm/messages',
      'file:///proc/sys/kernel/hostname',
      'C:\\$Recycle.Bin\\S-1-5-18\\desktop.ini',
      'c:/documents and settings/administrator/ntuser.dat',
      'd:\\xampp\\apache\\conf\\extra\\httpd-vhosts.conf',
    ],
    family: 'lfi',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'body', 'cookie', 'header', 'filename'],
    description:
      'Absolute path into an operating-system folder (/etc/…, /var/log/…, /proc/…, C:\\Windows\\…, C:\\$Recycle.Bin\\…, server install roots), whatever the file',
    test: (v) => v.path.includes('/') && SYSTEM_FOLDER.test(v.path),
  },
  {
    id: 'lfi-web-file',
    view: 'path',
    operator: 'paths:web-files',
    examples: [
      { kind: 'path', key: 'path', value: '/.git/config' },
      '/var/www/html/wp-config.php',
      '../.env',
      { kind: 'path', key: 'path', value: '/backup/db.sql' },
    ],
    family: 'lfi',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['path', 'query', 'body', 'cookie', 'header'],
    description:
      'Web-application file that is never served (.git/, .htaccess, wp-config.php, composer.json, *.sql dumps, …): in the URL path, or in an argument as an absolute path or after a traversal',
    test: (v) =>
      (v.target.kind === 'path' || ABSOLUTE.test(v.path) || v.path.includes('../')) &&
      WEB_FILES.match(v.target.kind === 'path' ? v.path : v.path.replace(/^[a-z]{2,10}:/, '')) !== undefined,
  },
  {
    id: 'lfi-null-byte',
    view: 'decoded',
    operator: 'pattern',
    examples: ['../../etc/passwd%00.png'],
    family: 'lfi',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['path', 'query', 'body', 'cookie'],
    description: 'NUL byte truncating a file name',
    test: (v) => v.decoded.includes('\0'),
  },
];
