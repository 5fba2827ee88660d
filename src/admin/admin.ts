import fastify, { type FastifyInstance } from 'fastify';
import { purgeCache } from '../policies/cache/purge.ts';
import { describeSnapshot, type Runtime } from '../runtime.ts';
import type { Store } from '../state/store.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import type { GroupStatus, GroupView } from '../upstream/group.ts';
import {
  type AdminConfig,
  adminAllowedHosts,
  createAdminHostCheck,
  interfaceAddresses,
  type LocalAddresses,
} from './allowed-hosts.ts';

/** The admin settings assumed when none are given: gateway.yaml's defaults (loopback only). */
const DEFAULT_ADMIN_CONFIG: AdminConfig = { port: 9090, host: '127.0.0.1' };

export interface AdminDeps {
  runtime: Runtime;
  store: Store;
  /** Served at /metrics (Prometheus text format). Default: no /metrics route. */
  metrics?: Pick<Metrics, 'render' | 'contentType'>;
  /**
   * With `workers: N`, the primary's admin: each worker's state. /readyz then lists them, is ready
   * while at least one serves, and reports upstreams as the workers see them (the primary forwards
   * nothing). Default: none (a single process reports its own).
   */
  workers?: () => Promise<ClusterStatus>;
  /** True once shutdown began: readiness turns false so load balancers stop sending. */
  isClosing: () => boolean;
  /**
   * gateway.yaml `admin`: the loopback names, `host` (or this machine's addresses when it is a
   * wildcard) and `hosts` are the Host names answered; any other Host gets 421. Default: the
   * loopback names only.
   */
  config?: AdminConfig;
  /** The gateway's zone (gateway.yaml `zone`), shown on /upstreams. Default: none. */
  zone?: string;
  /** This machine's addresses, answered by default when `host` is a wildcard. Default: os.networkInterfaces(). */
  localAddresses?: LocalAddresses;
}

/** What /readyz shows of a `workers: N` instance. */
export interface ClusterStatus {
  workers: Array<{ worker: number; pid: number; ready: boolean; version: string | null }>;
  /** Per service, merged over the workers (the most ejected / unhealthy any worker sees; panic if any is). */
  upstreams: Record<string, GroupStatus>;
  /** GET /upstreams' groups merged over the workers (see mergeGroupViews in src/cluster/primary.ts). */
  groups: Record<string, GroupView>;
}

/**
 * The admin app, on its own port (never the public one): liveness, readiness, Prometheus
 * metrics and the current route table, answered only for the Host names in `admin.hosts`.
 */
export function createAdmin(deps: AdminDeps): FastifyInstance {
  const app = fastify({ logger: false });
  const allowed = adminAllowedHosts(
    deps.config ?? DEFAULT_ADMIN_CONFIG,
    deps.localAddresses ?? interfaceAddresses,
  );
  if (allowed) app.addHook('onRequest', createAdminHostCheck(allowed));
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const snapshot = deps.runtime.snapshot;
    const cluster = await deps.workers?.();
    const rejected = deps.runtime.rejected;
    const served = snapshot ? snapshot.table.services.size - snapshot.withheld.length : 0;
    // Ready while anything is served; rejected files are listed, they do not unready what works.
    const ready =
      snapshot !== null &&
      !deps.isClosing() &&
      (served > 0 || rejected.length === 0) &&
      (cluster === undefined || cluster.workers.some((w) => w.ready));
    reply.code(ready ? 200 : 503);
    return {
      ready,
      version: snapshot?.version ?? null,
      loadedAt: snapshot?.loadedAt.toISOString() ?? null,
      services: served,
      // Spec and policy files the last load refused, with what serves meanwhile and file:line errors.
      rejected,
      // Services answering 503 until their rejected policy file is fixed.
      withheld: snapshot?.withheld ?? [],
      // A down store degrades (policies apply their onStoreError) but does not make the gateway unready.
      store: deps.store.status(),
      // Per service; a group in panic (every upstream, or too many, ejected) degrades, it does not unready.
      upstreams: cluster?.upstreams ?? (snapshot ? upstreamStatus(snapshot) : {}),
      ...(cluster && { workers: cluster.workers }),
    };
  });
  const metrics = deps.metrics;
  if (metrics) {
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', metrics.contentType);
      return metrics.render();
    });
  }
  // Operator-only (the admin port): upstream URLs are shown here, never to clients.
  app.get('/upstreams', async (_req, reply) => {
    const snapshot = deps.runtime.snapshot;
    if (!snapshot) return reply.code(503).send({ services: {} });
    // With workers: N the primary forwards nothing: the workers' groups are the ones in use.
    const services = deps.workers ? (await deps.workers()).groups : upstreamGroups(snapshot);
    return { version: snapshot.version, zone: deps.zone ?? null, services };
  });
  // Cache purges (the `cache` policy's stores): POST {"url": "/path?query"} or {"prefix": "/path/"}.
  app.post('/cache/purge', async (req, reply) => purgeCache(req, reply, deps.store));
  app.get('/routes', async (_req, reply) => {
    const snapshot = deps.runtime.snapshot;
    if (!snapshot) return reply.code(503).send({ routes: [] });
    // Each route with its policies in phase order, as `portcullis routes --json` prints them.
    return { version: snapshot.version, routes: describeSnapshot(snapshot) };
  });
  return app;
}

/** Each forwarding service's upstream group, as GET /upstreams shows it. */
export function upstreamGroups(snapshot: NonNullable<Runtime['snapshot']>): Record<string, GroupView> {
  const out: Record<string, GroupView> = {};
  for (const e of snapshot.entries.values())
    if (e.target) out[e.target.service] ??= e.target.group.describe();
  for (const t of snapshot.passThrough.values()) out[t.service] ??= t.group.describe();
  return out;
}

/** Each forwarding service's upstream group: upstreams, ejected, unhealthy (active checks), panic. */
export function upstreamStatus(snapshot: NonNullable<Runtime['snapshot']>): Record<string, GroupStatus> {
  const out: Record<string, GroupStatus> = {};
  for (const e of snapshot.entries.values()) if (e.target) out[e.target.service] ??= e.target.group.status();
  for (const t of snapshot.passThrough.values()) out[t.service] ??= t.group.status();
  return out;
}
