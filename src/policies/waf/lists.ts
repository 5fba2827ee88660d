/**
 * The WAF's word lists, loaded once from the data files in ./data (each documents its sources):
 * shell and Windows commands, operating-system and web-application files, SQL functions, HTML
 * event handlers. Rules read these lists; the prefilter (plain.ts) takes its trigger words from
 * the rules that use them, so a name added to a list is never unreachable.
 */
import { readFileSync } from 'node:fs';

/** One entry of a word list: the name and its markers (see the data files' headers). */
export interface ListEntry {
  name: string;
  /** `~`: also an ordinary word or too short; counts only in clear context. */
  ambiguous: boolean;
  /** `!`: a command even alone. */
  alone: boolean;
}

/** Names of the data files in ./data, without `.txt`. */
export type ListName =
  | 'unix-commands'
  | 'windows-commands'
  | 'os-files'
  | 'system-folders'
  | 'web-files'
  | 'sql-functions'
  | 'html-events';

/** Parse a list file's text: one entry a line, `#` comments, markers `~` and `!` after the name. */
export function parseList(text: string): ListEntry[] {
  const out: ListEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const parts = line.split(/\s+/);
    const markers = new Set(parts.slice(1));
    // A name may hold a blank (`program files/`): markers are the trailing `~`/`!` words only.
    const nameParts = parts.filter((p, i) => i === 0 || (p !== '~' && p !== '!'));
    out.push({
      name: nameParts.join(' ').toLowerCase(),
      ambiguous: markers.has('~'),
      alone: markers.has('!'),
    });
  }
  return out;
}

const cache = new Map<ListName, ListEntry[]>();

/** The entries of a data file (read once per process). */
export function loadList(name: ListName): readonly ListEntry[] {
  let list = cache.get(name);
  if (!list) {
    list = parseList(readFileSync(new URL(`./data/${name}.txt`, import.meta.url), 'utf8'));
    cache.set(name, list);
  }
  return list;
}

/** How a command name counts (see the markers of unix-commands.txt). */
export interface CommandInfo {
  ambiguous: boolean;
  alone: boolean;
}

/** Every Unix and Windows command name, merged (a name ambiguous in either list is ambiguous). */
export const COMMANDS: ReadonlyMap<string, CommandInfo> = (() => {
  const map = new Map<string, CommandInfo>();
  for (const e of [...loadList('unix-commands'), ...loadList('windows-commands')]) {
    const prev = map.get(e.name);
    map.set(e.name, {
      ambiguous: e.ambiguous || (prev?.ambiguous ?? false),
      alone: e.alone || (prev?.alone ?? false),
    });
  }
  return map;
})();

/** A path token of a value: the value is cut at blanks, quotes, shell and query punctuation, `:` of a drive or scheme. */
const PATH_TOKEN = /[^\s=;|&,'"`<>()?:]+/g;
/** Where a matching token may be: a `/`, a `_`, or a `.` followed by a name character (not a sentence's end). */
const GATE = /[/_]|\.(?=[\w~-])/g;

/** A letter: what every entry has. */
const HAS_LETTER = /[a-z]/;

/** True when `s` holds only blanks (or trailing dots) from `from` to `to`. */
function blank(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c !== 32 && c !== 9 && c !== 10 && c !== 13 && c !== 46) return false;
  }
  return true;
}

/** PATH_TOKEN's break characters below 128, as a table for the scan around a gate character. */
const BREAKS = new Uint8Array(128);
for (const c of ' \t\n\r\f\v=;|&,\'"`<>()?:') BREAKS[c.charCodeAt(0)] = 1;
function isBreak(c: number): boolean {
  return c < 128
    ? BREAKS[c] === 1
    : c === 0xa0 ||
        c === 0x2028 ||
        c === 0x2029 ||
        (c >= 0x2000 && c <= 0x200a) ||
        c === 0x1680 ||
        c === 0x202f ||
        c === 0x205f ||
        c === 0x3000 ||
        c === 0xfeff;
}

/**
 * A list of file and folder paths matched segment by segment on a normalised path (lower-case,
 * `/` separators). Entries: `a/b` (those segments in a row), `a/` (a folder: something below
 * it), `name*` (a prefix of the last segment), `*.ext` (a suffix of the last segment).
 */
export class PathList {
  /** Exact runs of segments, joined by `/`. */
  readonly #exact = new Set<string>();
  /** Folder runs (without the trailing `/`): match when a segment follows. */
  readonly #folders = new Set<string>();
  /** `dir/prefix*`: the run before the last segment (may be empty) → prefixes of the last segment. */
  readonly #prefixes = new Map<string, string[]>();
  readonly #suffixes: string[] = [];
  /** True when every entry needs `/`, `.` or `_`: tokens without one are skipped unread. */
  readonly #gated: boolean;
  /** Most segments in an entry: candidate runs are never longer. */
  readonly #maxSegments: number;
  /** Single-segment names a plain value (no `/`) can match: the prefilter's trigger words. */
  readonly words: readonly string[];

  constructor(entries: readonly ListEntry[]) {
    let max = 1;
    const words: string[] = [];
    for (const { name } of entries) {
      if (name.startsWith('*')) {
        this.#suffixes.push(name.slice(1));
        continue;
      }
      if (name.endsWith('*')) {
        const body = name.slice(0, -1);
        const slash = body.lastIndexOf('/');
        const dir = slash === -1 ? '' : body.slice(0, slash);
        const prefix = body.slice(slash + 1);
        const list = this.#prefixes.get(dir) ?? [];
        list.push(prefix);
        this.#prefixes.set(dir, list);
        max = Math.max(max, dir ? dir.split('/').length + 1 : 1);
        continue;
      }
      if (name.endsWith('/')) {
        const run = name.slice(0, -1);
        this.#folders.add(run);
        max = Math.max(max, run.split('/').length + 1);
        continue;
      }
      this.#exact.add(name);
      const n = name.split('/').length;
      max = Math.max(max, n);
      if (n === 1) words.push(name);
    }
    this.#maxSegments = max;
    this.words = words;
    // Entries without `/`, `.` or `_` (none today) would need every token tried.
    this.#gated =
      words.every((w) => /[._]/.test(w)) &&
      [...this.#prefixes].every(([dir, list]) => dir !== '' || list.every((p) => /[._]/.test(p))) &&
      this.#suffixes.every((x) => /[._]/.test(x));
  }

  /**
   * The first entry found in `path` (the path view of a value), or undefined. The value is cut
   * into path-shaped tokens at blanks and shell or query punctuation (`cat /etc/passwd`,
   * `file=../.env`, `c:/windows/win.ini`), then each token's segments are tried.
   */
  match(path: string, options?: { wordsAlone?: boolean }): string | undefined {
    // A lone file name (`.env`, `id_rsa`) in prose is talk about it, not a path: with `wordsAlone`
    // a token without `/` counts only when it is the whole value.
    const alone = options?.wordsAlone === true;
    if (this.#gated) {
      // Only tokens holding `/`, `_` or a `.` inside a name can match: find those, take their tokens
      // (a sentence's closing `.` is skipped by the search itself).
      GATE.lastIndex = 0;
      for (let g = GATE.exec(path); g; g = GATE.exec(path)) {
        let start = g.index;
        while (start > 0 && !isBreak(path.charCodeAt(start - 1))) start--;
        let end = g.index + 1;
        while (end < path.length && !isBreak(path.charCodeAt(end))) end++;
        GATE.lastIndex = end;
        // Trailing dots end a sentence (and Windows drops them from a file name: `boot.ini.`).
        let last = end;
        while (last > start && path.charCodeAt(last - 1) === 46) last--;
        if (last === start) continue;
        const token = path.slice(start, last);
        if (alone && !token.includes('/') && !(blank(path, 0, start) && blank(path, last, path.length)))
          continue;
        const hit = this.#matchAny(token);
        if (hit !== undefined) return hit;
      }
      return undefined;
    }
    PATH_TOKEN.lastIndex = 0;
    for (let m = PATH_TOKEN.exec(path); m; m = PATH_TOKEN.exec(path)) {
      if (alone && !m[0].includes('/') && m[0] !== path.trim()) continue;
      const hit = this.#matchAny(m[0]);
      if (hit !== undefined) return hit;
    }
    return undefined;
  }

  #matchAny(token: string): string | undefined {
    // Every entry names something with a letter: `5/5`, `1.5` and `10_000` are skipped.
    if (!HAS_LETTER.test(token)) return undefined;
    // Most tokens are words: one segment, no folder run to build.
    return token.includes('/') ? this.#matchToken(token) : this.#matchSegment(token, '', true);
  }

  /** A lone segment (a word without `/`): an exact name, a prefix entry without folder, a suffix entry. */
  #matchSegment(seg: string, dir: string, last: boolean): string | undefined {
    if (!dir && this.#exact.has(seg)) return seg;
    const prefixes = this.#prefixes.get(dir);
    if (prefixes)
      for (const p of prefixes)
        if (seg.startsWith(p) && seg.length > p.length) return `${dir ? `${dir}/` : ''}${p}*`;
    if (last) for (const s of this.#suffixes) if (seg.endsWith(s) && seg.length > s.length) return `*${s}`;
    return undefined;
  }

  #matchToken(token: string): string | undefined {
    const segments = token.split('/');
    const n = segments.length;
    for (let i = 0; i < n; i++) {
      if (!segments[i]) continue;
      let run = '';
      for (let j = i; j < n && j - i < this.#maxSegments; j++) {
        const seg = segments[j] as string;
        if (!seg) break;
        const dir = run;
        run = run ? `${run}/${seg}` : seg;
        if (this.#exact.has(run)) return run;
        if (j + 1 < n && segments[j + 1] && this.#folders.has(run)) return `${run}/`;
        const prefixes = this.#prefixes.get(dir);
        if (prefixes)
          for (const p of prefixes)
            if (seg.startsWith(p) && seg.length > p.length) return `${dir ? `${dir}/` : ''}${p}*`;
      }
      // Suffixes (`*.sql`) apply to the last segment only: a file name, not a folder.
      if (i === n - 1 && this.#suffixes.length > 0) {
        const seg = segments[i] as string;
        for (const s of this.#suffixes) if (seg.endsWith(s) && seg.length > s.length) return `*${s}`;
      }
    }
    return undefined;
  }
}

/** Operating-system files and dot-folders that hold secrets or system state. */
export const OS_FILES = new PathList(loadList('os-files'));
/** Web-application files that must never be served (configs, VCS folders, backups). */
export const WEB_FILES = new PathList(loadList('web-files'));

/**
 * A pattern for system-folders.txt: an absolute path into one of its folders, with a name below
 * it, at the start of the value or of a word (path view: lower-case, `/` separators, no `./`).
 * `/x/` entries are Unix roots (also after `file:`, `file://localhost` or a drive, as Cygwin and
 * MSYS mount them: `c:/etc/x`), `?:/x/` entries roots
 * of any Windows drive (also `c:x/`, `/c:/x/`, `\\?\c:\x\`, an admin share `\\host\c$\x\`).
 */
export function systemFolderPattern(entries: readonly ListEntry[]): RegExp {
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const unix: string[] = [];
  const windows: string[] = [];
  for (const { name } of entries) {
    if (!name.endsWith('/')) throw new Error(`system-folders.txt: ${name} is not a folder (ends in /)`);
    if (name.startsWith('?:/')) windows.push(esc(name.slice(3, -1)));
    else if (name.startsWith('/')) unix.push(esc(name.slice(1, -1)));
    else throw new Error(`system-folders.txt: ${name} is neither /x/ nor ?:/x/`);
  }
  const start = `(?:^|[\\s=;|&'"(<>,])`;
  // A drive after a UNC or device prefix too: `\\\\?\\c:\\`, `\\\\host\\c$\\` (an admin share).
  const drive = `(?:^|[\\s=;|&'"(<>,/?])`;
  // What comes before the folder's `/` (or the drive's `:`) is a look-behind: the pattern starts
  // with `/`, `:` or `$`, which V8 scans for, instead of at every blank of a long text (5× faster
  // on 1 KiB of prose that holds a `/`; the same matches).
  return new RegExp(
    `(?<=${start}(?:file:(?:/localhost)?|/?[a-z]:)?)/(?:${unix.join('|')})/[^\\s/]|(?<=${drive}[a-z])[:$]/?(?:${windows.join('|')})/[^\\s/]`,
  );
}

/** System folders (system-folders.txt) as one pattern. */
export const SYSTEM_FOLDER = systemFolderPattern(loadList('system-folders'));

/** HTML event-handler attribute names (`onload`, `onpointerrawupdate`, …). */
export const HTML_EVENTS: ReadonlySet<string> = new Set(loadList('html-events').map((e) => e.name));

/** SQL function names; `ambiguous` ones count only in SQL context. */
export const SQL_FUNCTIONS: readonly ListEntry[] = loadList('sql-functions');
