/**
 * The admin port's cache purge (`POST /cache/purge`): drop one URL (every variant of it) or every
 * URL under a prefix, from each cache store of the gateway (memory and Redis: a purge through one
 * instance empties the shared Redis cache for all of them).
 *
 *   curl -X POST localhost:9090/cache/purge -H 'content-type: application/json' -d '{"url":"/petstore/pets/1"}'
 *   curl -X POST localhost:9090/cache/purge -H 'content-type: application/json' -d '{"prefix":"/petstore/"}'
 *
 * The URL is taken through the same canonical form as request targets (net/target.ts), so any
 * spelling of a path purges the entry its requests share; an absolute URL counts by its path and query.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ProblemError } from '../../errors.ts';
import { canonicalTarget } from '../../net/target.ts';
import { sendProblem } from '../../problem.ts';
import type { Store } from '../../state/store.ts';
import { cacheKey } from './serve.ts';
import { existingCacheStores } from './stores.ts';

/** Answer a purge request: 200 `{ purged }` (URLs dropped, summed over the stores), 400 when malformed. */
export async function purgeCache(
  req: FastifyRequest,
  reply: FastifyReply,
  gatewayStore: Store,
): Promise<unknown> {
  const body = (req.body ?? {}) as { url?: unknown; prefix?: unknown };
  const { url, prefix } = body;
  const bad = (detail: string) => sendProblem(req, reply, new ProblemError('PC_BAD_REQUEST', detail));
  if ((url === undefined) === (prefix === undefined))
    return bad(
      'Give exactly one of "url" (one URL, every variant) or "prefix" (every URL starting with it).',
    );
  const raw = url ?? prefix;
  if (typeof raw !== 'string' || raw === '') return bad('"url" / "prefix" must be a non-empty string.');
  let key: string;
  try {
    const ref = raw.startsWith('/') ? raw : new URL(raw).pathname + new URL(raw).search;
    key = cacheKey(canonicalTarget(ref));
  } catch {
    return bad(`"${url === undefined ? 'prefix' : 'url'}" is not a path (/...) or an absolute URL.`);
  }
  const stores = existingCacheStores(gatewayStore)?.all() ?? [];
  const counts = await Promise.all(
    stores.map((s) => (url === undefined ? s.purgePrefix(key) : s.purge(key))),
  );
  return { purged: counts.reduce((a, b) => a + b, 0) };
}
