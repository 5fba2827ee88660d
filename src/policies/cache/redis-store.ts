/**
 * The Redis cache store, shared by every gateway instance: one hash per URL at
 * `pc:v1:cache:<url>` holding `vary` (the field list its variants are selected by) and one field
 * per variant (`v:<id>`, the encoded response). The hash expires with its longest-lived variant;
 * each variant also carries its own times, so a stale one is never served as fresh.
 *
 * Redis is best-effort here: when it is unreachable a lookup is a miss and a store is skipped (the
 * request is forwarded as without a cache), logged once per outage.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { GatewayConfig } from '../../config/schema.ts';
import type { Logger } from '../../logger.ts';
import { KEY_PREFIX } from '../../state/redis.ts';
import { type CacheStore, decodeEntry, encodeEntry } from './store.ts';

/** Keys of cached responses: `pc:v1:cache:<canonical path and query>`. */
export const CACHE_KEY_PREFIX = `${KEY_PREFIX}cache:`;
/** A URL holding more variants than this is emptied before the next is added (bounds Vary abuse). */
const MAX_VARIANTS = 64;
/** Commands carry whole bodies: a longer timeout than the rate limiter's 250 ms. */
const COMMAND_TIMEOUT_MS = 2_000;
const CONNECT_TIMEOUT_MS = 2_000;
const MAX_RECONNECT_DELAY_MS = 2_000;
/** SCAN batch size when purging by prefix. */
const SCAN_COUNT = 500;

const PUT_LUA = `
local n = redis.call('HLEN', KEYS[1])
local old = redis.call('HGET', KEYS[1], 'vary')
if n > tonumber(ARGV[5]) or (old and old ~= ARGV[1]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'vary', ARGV[1], ARGV[2], ARGV[3])
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`;

interface PutCommand {
  pcCachePut(
    key: string,
    vary: string,
    field: string,
    data: Buffer,
    ttlMs: number,
    max: number,
  ): Promise<number>;
}

export function createRedisCacheStore(state: GatewayConfig['state'], logger: Logger): CacheStore {
  const common: RedisOptions = {
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: CONNECT_TIMEOUT_MS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(times * 100, MAX_RECONNECT_DELAY_MS),
  };
  let client: Redis | Cluster;
  if (state.cluster) {
    const nodes = state.cluster.nodes.map((a) => {
      const i = a.lastIndexOf(':');
      return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
    });
    client = new Cluster(nodes, { enableOfflineQueue: false, redisOptions: common });
  } else if (state.sentinel) {
    client = new Redis({
      ...common,
      name: state.sentinel.name,
      sentinels: state.sentinel.sentinels.map((a) => {
        const i = a.lastIndexOf(':');
        return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
      }),
      sentinelPassword: state.sentinel.sentinelPassword,
    });
  } else {
    client = new Redis(state.redis ?? 'redis://127.0.0.1:6379', common);
  }
  client.defineCommand('pcCachePut', { numberOfKeys: 1, lua: PUT_LUA });
  const cmd = client as unknown as PutCommand;
  let down = false;
  client.on('error', () => undefined); // reported once per outage by `failed`
  client.on('ready', () => {
    if (down) logger.info('redis cache store recovered');
    down = false;
  });
  const failed = (op: string, err: unknown) => {
    if (!down)
      logger.warn({ err: (err as Error).message, op }, 'redis cache store unavailable; serving uncached');
    down = true;
  };

  const keyOf = (url: string) => CACHE_KEY_PREFIX + url;

  const scanDelete = async (node: Redis, pattern: string): Promise<number> => {
    let cursor = '0';
    let n = 0;
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
      cursor = next;
      // One key per command: in a cluster the keys of one batch live in many slots.
      for (const k of keys) n += await node.del(k);
    } while (cursor !== '0');
    return n;
  };

  return {
    kind: 'redis',
    async get(url, select) {
      const key = keyOf(url);
      try {
        // One round trip in the common case: the variant of a URL that varies on nothing.
        const plainVariant = select([]);
        const [vary, plain] = await client.hmgetBuffer(key, 'vary', `v:${plainVariant}`);
        if (vary === null || vary === undefined) return undefined;
        const names = vary.length === 0 ? [] : vary.toString().split(',');
        const data = names.length === 0 ? plain : await client.hgetBuffer(key, `v:${select(names)}`);
        return data ? decodeEntry(data) : undefined;
      } catch (err) {
        failed('get', err);
        return undefined;
      }
    },
    async put(url, vary, variant, entry, ttlMs) {
      try {
        await cmd.pcCachePut(
          keyOf(url),
          vary.join(','),
          `v:${variant}`,
          encodeEntry(entry),
          Math.max(1, Math.ceil(ttlMs)),
          MAX_VARIANTS,
        );
      } catch (err) {
        failed('put', err);
      }
    },
    async purge(url) {
      return client.del(keyOf(url));
    },
    async purgePrefix(prefix) {
      const pattern = `${keyOf(prefix).replace(/[*?[\]\\]/g, '\\$&')}*`;
      if (client instanceof Cluster) {
        let n = 0;
        for (const node of client.nodes('master')) n += await scanDelete(node, pattern);
        return n;
      }
      return scanDelete(client, pattern);
    },
    async close() {
      client.disconnect();
    },
  };
}
