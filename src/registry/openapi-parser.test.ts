import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const LOAD_SERVICE = fileURLToPath(new URL('./load-service.ts', import.meta.url));
const PETSTORE = fileURLToPath(new URL('../../openapi/petstore.yaml', import.meta.url));

describe('registry/openapi-parser.ts', () => {
  it('loads a spec without the parser ever loading in the calling process, which exits once done', () => {
    // A fresh process records every module it resolves, loads the example spec, and must then
    // exit by itself (the parser's child neither keeps it alive nor outlives it).
    const probe = `
      const { registerHooks } = await import('node:module');
      const resolved = [];
      registerHooks({ resolve(specifier, context, next) { resolved.push(specifier); return next(specifier, context); } });
      const { loadServiceFile } = await import(${JSON.stringify(LOAD_SERVICE)});
      const service = await loadServiceFile(${JSON.stringify(PETSTORE)});
      console.log(JSON.stringify({
        parser: resolved.filter((s) => s.includes('openapi-parser') && !s.startsWith('.')),
        routes: service.routes.length,
        title: service.document.info.title,
      }));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', probe], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(JSON.parse(out)).toEqual({ parser: [], routes: 4, title: 'Petstore' });
  });
});
