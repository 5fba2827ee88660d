import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { normalise, renderReference } from '../../scripts/docs.ts';
import { POLICY_KINDS } from './index.ts';

describe('policy reference docs', () => {
  it('docs/policies.md holds the reference generated from the current schemas (npm run docs)', async () => {
    const doc = await readFile(new URL('../../docs/policies.md', import.meta.url), 'utf8');
    expect(normalise(doc)).toContain(normalise(renderReference()));
  });

  it('documents every kind and every top-level field', () => {
    const ref = renderReference();
    for (const kind of POLICY_KINDS) {
      expect(ref).toContain(`### \`${kind.name}\``);
      for (const field of Object.keys((kind.schema as { properties?: object }).properties ?? {})) {
        expect(ref).toContain(`| \`${field}\` |`);
      }
    }
  });
});
