import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { ProblemError } from '../../src/errors.ts';
import { compileCidrs } from '../../src/net/cidr.ts';
import { buildChain, createContext, runChain } from '../../src/pipeline/chain.ts';
import type { PolicyDeps, PolicyKind } from '../../src/pipeline/types.ts';
import { sendProblem } from '../../src/problem.ts';
import type { Route, Service, ServiceSettings } from '../../src/registry/types.ts';
import type { Store } from '../../src/state/store.ts';
import { createForwarder } from '../../src/upstream/forward.ts';
import { UpstreamGroup } from '../../src/upstream/group.ts';

/** Response header carrying the request's policy decisions, when `exposeDecisions` is set. */
export const DECISIONS_HEADER = 'x-test-decisions';

export interface PolicySliceOptions {
  kind: PolicyKind;
  config: unknown;
  /** Upstream URLs the slice forwards to (round-robin unless `settings` says otherwise). */
  upstreams: string[];
  settings?: Partial<ServiceSettings>;
  /** Default: GET /x of service `svc`, operation `op`. */
  route?: Route;
  store?: Store;
  /** Peers trusted for X-Forwarded-* (by Fastify for req.ip, and by the forwarder). Default none. */
  trustProxy?: string[];
  /** Put the decisions recorded by the end of the request in the DECISIONS_HEADER response header. */
  exposeDecisions?: boolean;
}

export interface PolicySlice {
  app: FastifyInstance;
  group: UpstreamGroup;
  close(): Promise<void>;
}

/**
 * A real slice of the gateway for one policy kind: Fastify → the kind's chain (built by the real
 * buildChain, dry-run wrapper included) → the real forwarder → real upstreams. Rejections are
 * rendered as the gateway renders them (problem+json with the context's response headers).
 */
export async function policySlice(opts: PolicySliceOptions): Promise<PolicySlice> {
  const logger = pino({ level: 'silent' });
  const settings: ServiceSettings = {
    basePath: '',
    upstreams: opts.upstreams.map((url) => ({ url, weight: 1 })),
    loadBalancing: 'round-robin',
    passiveHealth: {
      failures: 3,
      ejectMs: 10_000,
      panicThreshold: 0,
      statuses: [502, 503, 504],
      maxEjectMs: 300_000,
    },
    circuitBreaker: { maxRequests: 1024, maxPending: 1024 },
    preferZone: false,
    timeoutMs: 5_000,
    connectTimeoutMs: 1_000,
    retries: 0,
    retryOn: ['connect-failure', 'reset', 'timeout'],
    retryBudget: { percent: 20, burst: 10 },
    mock: false,
    passThrough: false,
    tls: { rejectUnauthorized: true },
    websocket: false,
    ...opts.settings,
  };
  const route = opts.route ?? ({ service: 'svc', operationId: 'op', method: 'GET', specPath: '/x' } as Route);
  const service = { name: route.service, settings } as Service;
  const deps = { route, service, logger, store: opts.store } as unknown as PolicyDeps;
  const chain = await buildChain(
    [
      {
        kind: opts.kind,
        config: opts.config as Record<string, unknown>,
        rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' },
      },
    ],
    deps,
  );
  const group = new UpstreamGroup(service.name, settings, { logger });
  const trusted = opts.trustProxy ?? [];
  const forward = createForwarder({
    trustProxy: compileCidrs(trusted),
    hideUpstreamIdentity: true,
    bodyBytes: 1 << 20,
    logger,
  });
  const target = {
    service: service.name,
    group,
    settings,
    basePath: settings.basePath === '/' ? '' : settings.basePath,
  };
  const app = Fastify(trusted.length > 0 ? { trustProxy: trusted } : {});
  app.all('/*', async (req, reply) => {
    const ctx = createContext(req, reply, route, service);
    try {
      await runChain(chain, ctx);
    } catch (err) {
      if (!(err instanceof ProblemError)) throw err;
      reply.headers(ctx.responseHeaders);
      return sendProblem(req, reply, err);
    }
    if (ctx.answer) return reply.code(ctx.answer.status).headers(ctx.answer.headers).send();
    if (ctx.answered) return reply;
    if (opts.exposeDecisions) {
      // At response time, so decisions recorded once the upstream is chosen are included too.
      ctx.responseEdits.push((_status, headers) => {
        if (ctx.decisions.length > 0) headers[DECISIONS_HEADER] = JSON.stringify(ctx.decisions);
      });
    }
    reply.hijack();
    forward({ req, res: reply.raw, target: ctx.target, ctx, rec: undefined }, target);
  });
  await app.ready();
  return {
    app,
    group,
    async close() {
      await app.close();
      await group.close();
    },
  };
}
