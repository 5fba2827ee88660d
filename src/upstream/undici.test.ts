import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

describe('upstream/undici.ts', () => {
  it("loads Pool, Client and the connector without undici's index (fetch, WebSocket, Node's own undici)", () => {
    // A fresh process: what loading this module alone brings in.
    const probe = `
      const { createRequire } = await import('node:module');
      const m = await import(${JSON.stringify(fileURLToPath(new URL('./undici.ts', import.meta.url)))});
      const cache = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify({
        index: cache.some((f) => f.endsWith('/undici/index.js')),
        fetch: cache.some((f) => f.includes('/undici/lib/web/fetch/')),
        request: typeof m.Pool.prototype.request,
        clientStream: typeof m.Client.prototype.stream,
        connector: typeof m.buildConnector({}),
      }));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({
      index: false,
      fetch: false,
      request: 'function',
      clientStream: 'function',
      connector: 'function',
    });
  });
});
