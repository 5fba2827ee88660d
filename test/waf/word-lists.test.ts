import { readdirSync, readFileSync } from 'node:fs';
import { en } from '@faker-js/faker';
import { describe, expect, it } from 'vitest';
import {
  COMMANDS,
  type ListName,
  loadList,
  PathList,
  parseList,
  SQL_FUNCTIONS,
  systemFolderPattern,
} from '../../src/policies/waf/lists.ts';

const DATA = new URL('../../src/policies/waf/data/', import.meta.url);
const FILES = readdirSync(DATA).filter((f) => f.endsWith('.txt'));

/** English words (faker's en word lists): a name that is one needs the `~` marker. */
const ENGLISH = new Set(
  Object.values(en.word ?? {})
    .flat()
    .map((w) => String(w).toLowerCase()),
);

describe('WAF word lists (src/policies/waf/data)', () => {
  it('has the documented lists', () => {
    expect(FILES.sort()).toEqual(
      [
        'html-events',
        'os-files',
        'sql-functions',
        'system-folders',
        'unix-commands',
        'web-files',
        'windows-commands',
      ].map((n) => `${n}.txt`),
    );
  });

  it.each(FILES)('%s says where its names come from, and holds lower-case names once each', (file) => {
    const text = readFileSync(new URL(file, DATA), 'utf8');
    expect(text).toMatch(/^# Sources?\b/m);
    const names = parseList(text).map((e) => e.name);
    // Folders are fewer than file names: system-folders.txt lists roots, the others names.
    expect(names.length).toBeGreaterThan(file === 'system-folders.txt' ? 60 : 100);
    const dupes = names.filter((n, i) => names.indexOf(n) !== i);
    // A name listed twice in one file is a sign of a list grown case by case.
    expect(dupes).toEqual([]);
    expect(names.filter((n) => n !== n.toLowerCase() || /\s$/.test(n))).toEqual([]);
  });

  it('marks every command name that is an English word as ambiguous (`~`)', () => {
    expect(ENGLISH.size).toBeGreaterThan(1000);
    const clearWords = [...COMMANDS]
      .filter(([name, info]) => !info.ambiguous && ENGLISH.has(name))
      .map(([n]) => n);
    expect(clearWords).toEqual([]);
  });

  it('marks every SQL function name that is an English word as ambiguous (`~`)', () => {
    expect(SQL_FUNCTIONS.filter((f) => !f.ambiguous && ENGLISH.has(f.name)).map((f) => f.name)).toEqual([]);
  });

  it('is broad: hundreds of commands, files and functions', () => {
    expect(COMMANDS.size).toBeGreaterThan(700);
    const size = (n: ListName) => loadList(n).length;
    expect(size('os-files')).toBeGreaterThan(250);
    expect(size('web-files')).toBeGreaterThan(120);
    expect(size('sql-functions')).toBeGreaterThan(200);
    expect(size('html-events')).toBeGreaterThan(150);
  });

  it('matches paths segment by segment (folders, prefixes, suffixes), never inside a name', () => {
    const list = new PathList(parseList('etc/passwd\n.ssh/\n.bash_*\n*.sql\nboot.ini\n'));
    expect(list.match('/etc/passwd')).toBe('etc/passwd');
    expect(list.match('../../etc/passwd')).toBe('etc/passwd');
    expect(list.match('cat /etc/passwd;id')).toBe('etc/passwd');
    expect(list.match('file:///etc/passwd')).toBe('etc/passwd');
    expect(list.match('/home/ann/.ssh/id_rsa')).toBe('.ssh/');
    expect(list.match('~/.bash_history')).toBe('.bash_*');
    expect(list.match('/backup/db.sql')).toBe('*.sql');
    expect(list.match('c:/boot.ini')).toBe('boot.ini');
    expect(list.match('/etc/passwd2')).toBeUndefined();
    expect(list.match('/myetc/passwd')).toBeUndefined();
    expect(list.match('/home/ann/.ssh')).toBeUndefined();
    expect(list.match('/backup/db.sql/readme')).toBeUndefined();
    expect(list.match('.bash_')).toBeUndefined();
  });

  it('matches system folders only at the root of an absolute path, with a name below them', () => {
    const re = systemFolderPattern(parseList('/etc/\n/var/adm/\n?:/windows/\n?:/$recycle.bin/\n'));
    for (const path of [
      '/etc/defaultrouter',
      'file:/etc/x',
      'cat /etc/x',
      'f=/var/adm/messages',
      'c:/windows/explorer.exe',
      'c:windows/system32/',
      '/c:/windows/x',
      'd:/$recycle.bin/s-1-5-18/desktop.ini',
    ])
      expect(re.test(path), path).toBe(true);
    for (const path of [
      '/etc',
      '/etc/',
      '/etc is a folder',
      'docs/etc/notes',
      '//example.com/etc/x',
      '/var/admin/x',
      'c:/users/ann/windows/x',
      'my windows/x',
    ])
      expect(re.test(path), path).toBe(false);
  });
});
