/**
 * undici's Pool, Client and connector, loaded from their own modules rather than the package's
 * index. The index also loads fetch, WebSocket, EventSource, the cache and mock machinery, and its
 * cookies module touches the global `Headers`, which makes Node load its own bundled copy of undici
 * too: 5.8 MB of heap against 2.3 MB for these three (measured on Node 24, after a GC), none of it
 * used by the gateway. The index's one side effect the gateway relies on is reproduced here: the
 * `request`/`stream`/... methods on every dispatcher (health checks call `pool.request`).
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const requireUndici = createRequire(import.meta.url);

// Typed through the package's own declarations: these are the very classes its index exports.
export const Pool = requireUndici('undici/lib/dispatcher/pool.js') as typeof Undici.Pool;
export type Pool = Undici.Pool;
export const Client = requireUndici('undici/lib/dispatcher/client.js') as typeof Undici.Client;
export type Client = Undici.Client;
export const buildConnector = requireUndici('undici/lib/core/connect.js') as typeof Undici.buildConnector;

const Dispatcher = requireUndici('undici/lib/dispatcher/dispatcher.js') as typeof Undici.Dispatcher;
Object.assign(Dispatcher.prototype, requireUndici('undici/lib/api/index.js'));
