import { describe, expect, it } from 'vitest';
import { parseSource } from '../../config/yaml.ts';
import { ConfigError, formatIssue } from '../../errors.ts';
import { parsePolicyFile } from '../../pipeline/rules.ts';
import { POLICY_KINDS } from '../index.ts';

describe('cache config', () => {
  const errors = (yaml: string): string[] => {
    try {
      parsePolicyFile(parseSource(yaml, 'policies/c.yaml'), POLICY_KINDS, '.');
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map(formatIssue);
      throw err;
    }
    return [];
  };

  it.each(['{}', '{ ttl: 30s }', '{ ttl: 1000 }', '{ ttl: 5m, targeted: Acme-Cache-Control }'])(
    'accepts %s',
    (config) => {
      expect(errors(`- match: {}\n  cache: ${config}\n`)).toEqual([]);
    },
  );

  it.each([
    ['a ttl in seconds written as a bare number (it is milliseconds)', '{ ttl: 300 }', '/0/cache/ttl'],
    ['a ttl that is no duration', '{ ttl: soon }', '/0/cache/ttl'],
    ['an unknown field (typo)', '{ tll: 30s }', '/0/cache'],
  ])('%s is an error naming the file, line and field', (_d, config, path) => {
    const found = errors(`- match: {}\n  cache: ${config}\n`);
    expect(found.some((e) => e.startsWith(`policies/c.yaml:2: ${path}`))).toBe(true);
  });
});
