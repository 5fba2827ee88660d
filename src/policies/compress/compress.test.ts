import { describe, expect, it } from 'vitest';
import { parseSource } from '../../config/yaml.ts';
import { ConfigError, formatIssue } from '../../errors.ts';
import { parsePolicyFile } from '../../pipeline/rules.ts';
import { POLICY_KINDS } from '../index.ts';
import { createTypeMatcher, DEFAULT_TYPES } from './media-types.ts';
import { negotiate } from './negotiate.ts';

const ALL = ['br', 'zstd', 'gzip'] as const;

describe('negotiate (Accept-Encoding, RFC 9110 §12.5.3)', () => {
  const CASES: Array<[string, string | undefined, readonly ('br' | 'zstd' | 'gzip')[], string | undefined]> =
    [
      ['no header: identity', undefined, ALL, undefined],
      ['empty header: identity', '', ALL, undefined],
      ['equal weights follow the route order', 'gzip, zstd, br', ALL, 'br'],
      ['equal weights follow another route order', 'gzip, zstd, br', ['gzip', 'br'], 'gzip'],
      ['highest q wins', 'br;q=0.1, gzip;q=0.2', ALL, 'gzip'],
      ['q=0 excludes', 'br;q=0, zstd;q=0.000, gzip;q=0.001', ALL, 'gzip'],
      ['* covers what is not listed', 'gzip;q=0.5, *;q=0.6', ALL, 'br'],
      ['*;q=0 with nothing else: identity', '*;q=0', ALL, undefined],
      ['an encoding not offered by the route is never chosen', 'br', ['gzip'], undefined],
      ['identity with the higher weight wins', 'identity;q=1, gzip;q=0.9', ALL, undefined],
      ['identity with an equal weight loses', 'identity, gzip', ALL, 'gzip'],
      ['x-gzip is gzip', 'x-gzip;q=0.5', ALL, 'gzip'],
      ['q 1.000 is valid', 'zstd;q=1.000', ALL, 'zstd'],
      ['q 1.5 is malformed: the entry is ignored', 'zstd;q=1.5', ALL, undefined],
      ['q 0.1234 is malformed', 'gzip;q=0.1234, br;q=0.1', ALL, 'br'],
      ['other parameters are ignored', 'gzip;level=1;q=0.5', ALL, 'gzip'],
      ['the first of a repeated name counts', 'gzip;q=0, gzip', ALL, undefined],
      ['empty members are skipped', ',,gzip,,', ALL, 'gzip'],
    ];
  it.each(CASES)('%s', (_d, header, preferred, expected) => {
    expect(negotiate(header, preferred)).toBe(expected);
  });
});

describe('createTypeMatcher', () => {
  const listed = createTypeMatcher(DEFAULT_TYPES);
  it.each([
    ['application/json', true],
    ['application/json; charset=utf-8', true],
    ['Application/JSON', true],
    ['application/problem+json', true],
    ['application/vnd.api+json', true],
    ['application/x-ndjson', true],
    ['text/html', true],
    ['text/event-stream', true],
    ['text/javascript', true],
    ['application/javascript', true],
    ['application/xml', true],
    ['application/atom+xml', true],
    ['image/svg+xml', true],
    ['image/png', false],
    ['image/jpeg', false],
    ['application/octet-stream', false],
    ['application/zip', false],
    ['video/mp4', false],
    ['font/woff2', false],
    ['json', false],
    ['', false],
  ])('%s → %s', (type, expected) => {
    expect(listed(type)).toBe(expected);
  });

  it('matches a custom list: exact, type/*, type/*+suffix', () => {
    const custom = createTypeMatcher(['application/x-custom', 'image/*', 'application/*+yaml']);
    expect(custom('application/x-custom')).toBe(true);
    expect(custom('image/png')).toBe(true);
    expect(custom('application/foo+yaml')).toBe(true);
    expect(custom('text/foo+yaml')).toBe(false);
    expect(custom('application/json')).toBe(false);
  });
});

describe('compress config', () => {
  const parse = (yaml: string) => parsePolicyFile(parseSource(yaml, 'policies/c.yaml'), POLICY_KINDS, '.');
  const errors = (yaml: string): string[] => {
    try {
      parse(yaml);
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map(formatIssue);
      throw err;
    }
    return [];
  };

  it('accepts the defaults and a full config', () => {
    expect(errors('- match: {}\n  compress: {}\n')).toEqual([]);
    expect(
      errors(
        '- match: {}\n  compress: { encodings: [gzip, br], minBytes: 0, types: [application/json, "text/*", "*/*+xml"], levels: { br: 5, zstd: 1, gzip: 9 } }\n',
      ),
    ).toEqual([]);
  });

  it.each([
    ['an unknown encoding', '{ encodings: [gzip, deflate] }', '/0/compress/encodings/1'],
    ['a repeated encoding', '{ encodings: [gzip, gzip] }', '/0/compress/encodings'],
    ['no encoding at all', '{ encodings: [] }', '/0/compress/encodings'],
    ['a negative minBytes', '{ minBytes: -1 }', '/0/compress/minBytes'],
    ['a minBytes that is not a number', '{ minBytes: 1kb }', '/0/compress/minBytes'],
    ['a fractional minBytes', '{ minBytes: 1.5 }', '/0/compress/minBytes'],
    ['a malformed media type', '{ types: [json] }', '/0/compress/types/0'],
    ['a brotli quality out of range', '{ levels: { br: 12 } }', '/0/compress/levels/br'],
    ['an unknown level key', '{ levels: { deflate: 1 } }', '/0/compress/levels'],
    ['an unknown field (typo)', '{ minbytes: 10 }', '/0/compress'],
  ])('%s is an error naming the file, line and field', (_d, config, path) => {
    const found = errors(`- match: {}\n  compress: ${config}\n`);
    expect(found.length).toBeGreaterThan(0);
    expect(found.some((e) => e.startsWith(`policies/c.yaml:2: ${path}`))).toBe(true);
  });
});
