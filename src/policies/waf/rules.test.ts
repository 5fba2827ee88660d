import { describe, expect, it } from 'vitest';
import { compileEngine, viewOf } from './engine.ts';
import { COMMANDS, HTML_EVENTS, OS_FILES, SQL_FUNCTIONS } from './lists.ts';
import { Prefilter } from './plain.ts';
import { RULES } from './rules/index.ts';
import type { Example, RequestParts, Target } from './types.ts';

/** The engine's plain and prose value shapes (engine.ts): only these go through the prefilter. */
const PLAIN = /^[A-Za-z0-9 _.,@-]*$/;
const PROSE = /^[A-Za-z0-9 _.,@'-]*$/;

const targetOf = (e: Example): Target =>
  typeof e === 'string' ? { kind: 'query', key: 'query:q', value: e } : { ...e };

/** A request carrying the example where its kind is read (undefined for multipart file names). */
function requestOf(e: Example): RequestParts | undefined {
  const t = targetOf(e);
  const headers: Record<string, string> = { host: 'api.example.com', 'user-agent': 'test' };
  switch (t.kind) {
    case 'query':
      return { method: 'GET', url: `/x?q=${encodeURIComponent(t.value)}`, headers };
    case 'query-name':
      return { method: 'GET', url: `/x?${encodeURIComponent(t.value)}=1`, headers };
    case 'path':
      return { method: 'GET', url: t.value, headers };
    case 'header':
      return { method: 'GET', url: '/x', headers: { ...headers, [t.key.slice('header:'.length)]: t.value } };
    default:
      return undefined;
  }
}

describe('rules as data', () => {
  it('every rule has a unique id, a view, an operator and examples', () => {
    expect(new Set(RULES.map((r) => r.id)).size).toBe(RULES.length);
    for (const rule of RULES) {
      expect(rule.examples.length, rule.id).toBeGreaterThan(0);
      expect(['decoded', 'lower', 'sql', 'shell', 'path']).toContain(rule.view);
      expect(rule.operator, rule.id).toMatch(/^(?:pattern|phrases:|paths:|tokenizer:|grammar:|decoder)/);
    }
  });

  it('every rule that can match a plain value says which words make it worth running', () => {
    expect(RULES.filter((r) => r.plain && !r.triggers).map((r) => r.id)).toEqual([]);
  });

  describe.each(RULES.map((r) => [r.id, r] as const))('%s', (_id, rule) => {
    it.each(rule.examples.map((e) => [typeof e === 'string' ? e : `${e.kind} ${e.value}`, e] as const))(
      'catches %j, through the prefilter and the engine',
      (_label, example) => {
        const target = targetOf(example);
        expect(!rule.kinds || rule.kinds.includes(target.kind)).toBe(true);
        expect(rule.test(viewOf(target))).toBe(true);
        // The prefilter of an engine at the rule's paranoia lets the value reach the rule.
        const enabled = RULES.filter((r) => r.paranoia <= rule.paranoia && r.plain);
        const pre = new Prefilter(enabled);
        const lower = viewOf(target).lower;
        if (PLAIN.test(target.value) && rule.plain) expect(pre.plain(lower)).toBe(true);
        else if (PROSE.test(target.value) && (rule.plain || rule.prose)) {
          if (rule.plain) expect(pre.prose(lower)).toBe(true);
        }
        const request = requestOf(example);
        if (request) {
          const result = compileEngine({ paranoia: rule.paranoia }).inspect(request);
          expect(result.matches.map((m) => m.id)).toContain(rule.id);
        }
      },
    );
  });
});

describe('no word of a list is unreachable', () => {
  const engine = compileEngine({ paranoia: 1 });
  const fired = (value: string, kind: 'query' | 'path' = 'query'): string[] =>
    engine
      .inspect({
        method: 'GET',
        url: kind === 'path' ? value : `/x?q=${encodeURIComponent(value)}`,
        headers: { host: 'h', 'user-agent': 'test' },
      })
      .matches.map((m) => m.id);

  it('every command name, with a flag, is a command line (rce-command)', () => {
    const missed = [...COMMANDS.keys()].filter((name) => !fired(`${name} -v`).includes('rce-command'));
    expect(missed).toEqual([]);
  });

  it('every command name after a pipe is a command chain (rce-command-chain)', () => {
    const missed = [...COMMANDS.keys()].filter(
      (name) => !fired(`x|${name} -v`).includes('rce-command-chain'),
    );
    expect(missed).toEqual([]);
  });

  it('every file name of os-files.txt is caught alone and as a path (lfi-sensitive-file)', () => {
    const missed = OS_FILES.words.filter(
      (w) => !fired(w).includes('lfi-sensitive-file') || !fired(`/x/../${w}`).includes('lfi-sensitive-file'),
    );
    expect(missed).toEqual([]);
  });

  it('every SQL function is caught in SQL context (sqli-function)', () => {
    const missed = SQL_FUNCTIONS.filter((f) => !fired(`1' or ${f.name}(1)`).includes('sqli-function')).map(
      (f) => f.name,
    );
    expect(missed).toEqual([]);
  });

  it('every HTML event handler is caught in a tag and injected into one (xss-event-handler)', () => {
    const missed = [...HTML_EVENTS].filter(
      (h) =>
        !fired(`<x ${h}=y>`).includes('xss-event-handler') ||
        !fired(`"/${h}=y`).includes('xss-event-handler'),
    );
    expect(missed).toEqual([]);
  });
});
