import fastify, { type FastifyInstance } from 'fastify';
import { describeRoutes } from '../registry/index.ts';
import type { Runtime } from '../runtime.ts';
import type { Store } from '../state/store.ts';
import type { Metrics } from '../telemetry/metrics.ts';

export interface AdminDeps {
  runtime: Runtime;
  store: Store;
  /** Served at /metrics (Prometheus text format). Default: no /metrics route. */
  metrics?: Metrics;
  /** True once shutdown began: readiness turns false so load balancers stop sending. */
  isClosing: () => boolean;
}

/**
 * The admin app, on its own port (never the public one): liveness, readiness, Prometheus
 * metrics and the current route table.
 */
export function createAdmin(deps: AdminDeps): FastifyInstance {
  const app = fastify({ logger: false });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const snapshot = deps.runtime.snapshot;
    const ready = snapshot !== null && !deps.isClosing();
    reply.code(ready ? 200 : 503);
    return {
      ready,
      version: snapshot?.version ?? null,
      loadedAt: snapshot?.loadedAt.toISOString() ?? null,
      services: snapshot ? snapshot.table.services.size : 0,
      // A down store degrades (policies apply their onStoreError) but does not make the gateway unready.
      store: deps.store.status(),
    };
  });
  const metrics = deps.metrics;
  if (metrics) {
    app.get('/metrics', async (_req, reply) => {
      reply.header('content-type', metrics.contentType);
      return metrics.render();
    });
  }
  app.get('/routes', async (_req, reply) => {
    const snapshot = deps.runtime.snapshot;
    if (!snapshot) return reply.code(503).send({ routes: [] });
    return { version: snapshot.version, routes: describeRoutes(snapshot.table) };
  });
  return app;
}
