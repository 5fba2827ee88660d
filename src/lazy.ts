/**
 * Optional machinery loaded on first use, not at start: a gateway whose configuration does not
 * use JWT never loads jose (about 5 MB resident). Synchronous (Node's require of an ES module), so
 * a factory that runs at config build time can load what it needs without turning async.
 */
import { createRequire } from 'node:module';

const requireModule = createRequire(import.meta.url);

/**
 * A getter for the package `specifier`, loaded by its first call (call it where the config is
 * built, not per request). Pass the module's type: `lazyModule<typeof import('jose')>('jose')`.
 */
export function lazyModule<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= requireModule(specifier) as T;
    return loaded;
  };
}
