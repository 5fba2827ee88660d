import { Type as T } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { ProblemError } from '../errors.ts';
import type { Route, Service } from '../registry/types.ts';
import { notableDecisions } from '../telemetry/access-log.ts';
import { buildChain, type RouteChain, runChain } from './chain.ts';
import type { Hook, PolicyDeps, PolicyKind, RequestContext } from './types.ts';

/** A chain of named hooks, one phase each, and the order they ran in. */
function chainOf(hooks: Array<[phase: string, hook: Hook]>): RouteChain {
  return {
    hooks: hooks.map(([, hook]) => hook),
    applied: hooks.map(([phase], i) => ({
      kind: `k${i}`,
      phase,
      mode: 'enforce',
      file: 'p.yaml',
      rule: i,
      label: `p.yaml#${i}`,
    })),
  };
}

const newCtx = () => ({ decisions: [] }) as unknown as RequestContext;
const mark =
  (ran: string[], name: string): Hook =>
  () => {
    ran.push(name);
  };
const later =
  (ran: string[], name: string): Hook =>
  async () => {
    await new Promise((resolve) => setImmediate(resolve));
    ran.push(name);
  };

describe('runChain', () => {
  it('runs an all-synchronous chain without a promise', () => {
    const ran: string[] = [];
    const chain = chainOf([
      ['ipFilter', mark(ran, 'a')],
      ['auth', mark(ran, 'b')],
    ]);
    expect(runChain(chain, newCtx())).toBeUndefined();
    expect(ran).toEqual(['a', 'b']);
  });

  it('throws a synchronous rejection and runs nothing after it', () => {
    const ran: string[] = [];
    const chain = chainOf([
      [
        'ipFilter',
        () => {
          throw new ProblemError('PC_IP_DENIED');
        },
      ],
      ['auth', mark(ran, 'b')],
    ]);
    expect(() => runChain(chain, newCtx())).toThrow(ProblemError);
    expect(ran).toEqual([]);
  });

  it('continues after an asynchronous hook, in phase order, and rejects with its error', async () => {
    const ran: string[] = [];
    const ok = chainOf([
      ['ipFilter', mark(ran, 'a')],
      ['rateLimit', later(ran, 'b')],
      ['validate', mark(ran, 'c')],
      ['headers', later(ran, 'd')],
    ]);
    const pending = runChain(ok, newCtx());
    expect(pending).toBeInstanceOf(Promise);
    expect(ran).toEqual(['a']);
    await pending;
    expect(ran).toEqual(['a', 'b', 'c', 'd']);

    const failing = chainOf([
      ['rateLimit', () => Promise.reject(new ProblemError('PC_RATE_LIMITED'))],
      ['validate', mark(ran, 'never')],
    ]);
    await expect(runChain(failing, newCtx())).rejects.toBeInstanceOf(ProblemError);
    expect(ran).not.toContain('never');
  });

  it('stops once a hook answered the request, synchronously or not', async () => {
    const ran: string[] = [];
    const answer: Hook = (ctx) => {
      ctx.answered = true;
    };
    expect(
      runChain(
        chainOf([
          ['cors', answer],
          ['auth', mark(ran, 'sync')],
        ]),
        newCtx(),
      ),
    ).toBeUndefined();
    const answerLater: Hook = async (ctx) => {
      ctx.answered = true;
    };
    await runChain(
      chainOf([
        ['cors', answerLater],
        ['auth', mark(ran, 'async')],
      ]),
      newCtx(),
    );
    expect(ran).toEqual([]);
  });

  it('runs only the hooks of the given phases (CORS preflight)', () => {
    const ran: string[] = [];
    const chain = chainOf([
      ['ipFilter', mark(ran, 'ip')],
      ['cors', mark(ran, 'cors')],
      ['auth', mark(ran, 'auth')],
    ]);
    runChain(chain, newCtx(), new Set(['ipFilter', 'cors']));
    expect(ran).toEqual(['ip', 'cors']);
  });
});

describe('read-ahead (Hook.readAhead)', () => {
  /** A hook that reads every body: its read-ahead fills ctx.body, from the "stream", later. */
  function reader(seen: Array<string | undefined>, arrives: 'now' | 'later'): Hook {
    const hook: Hook = (ctx) => {
      seen.push(ctx.body?.toString());
      if (ctx.body === undefined) return Promise.resolve();
    };
    hook.readAhead = (ctx, then) => {
      const fill = () => {
        ctx.body = Buffer.from('{"a":1}');
        then();
      };
      if (arrives === 'now') fill();
      else setImmediate(fill);
    };
    return hook;
  }
  const withBody = () =>
    ({
      decisions: [],
      req: { raw: { headers: { 'content-length': '7' } }, headers: { 'content-length': '7' } },
    }) as unknown as RequestContext;

  it('reads the body before the hook, which then runs synchronously, once; the hooks before it first', async () => {
    const ran: string[] = [];
    const seen: Array<string | undefined> = [];
    const chain = chainOf([
      ['ipFilter', mark(ran, 'ip')],
      ['waf', reader(seen, 'later')],
      ['validate', mark(ran, 'after')],
    ]);
    const pending = runChain(chain, withBody());
    expect(pending).toBeInstanceOf(Promise);
    expect(ran).toEqual(['ip']);
    expect(seen).toEqual([]);
    await pending;
    expect(seen).toEqual(['{"a":1}']);
    expect(ran).toEqual(['ip', 'after']);
  });

  it('a body already there keeps the chain synchronous; a request without one is not read', () => {
    const seen: Array<string | undefined> = [];
    expect(runChain(chainOf([['waf', reader(seen, 'now')]]), withBody())).toBeUndefined();
    const noBody = { decisions: [], req: { raw: { headers: {} }, headers: {} } } as unknown as RequestContext;
    const pending = runChain(chainOf([['waf', reader(seen, 'now')]]), noBody);
    expect(pending).toBeInstanceOf(Promise);
    expect(seen).toEqual(['{"a":1}', undefined]);
  });

  it('a dry-run hook keeps its read-ahead', async () => {
    const seen: Array<string | undefined> = [];
    const kind: PolicyKind = {
      name: 'reader',
      phase: 'waf',
      schema: T.Object({}),
      create: () => reader(seen, 'later'),
    };
    const chain = await buildChain(
      [
        {
          kind,
          config: { mode: 'dry-run' },
          rule: { file: 'p.yaml', index: 0, match: {}, policies: {}, baseDir: '.' },
        },
      ],
      { logger: { info() {}, debug() {} } } as unknown as Omit<PolicyDeps, 'baseDir'>,
    );
    expect(chain.hooks[0]?.readAhead).toBeTypeOf('function');
    await runChain(chain, withBody());
    expect(seen).toEqual(['{"a":1}']);
  });
});

describe('runChain records who rejected', () => {
  const thrower =
    (code: 'PC_IP_DENIED' | 'PC_UNAUTHORIZED', reason?: string): Hook =>
    () => {
      throw new ProblemError(code, undefined, reason ? { extensions: { reason } } : {});
    };

  it('records a deny for the throwing hook: its kind, its problem reason (or code), the code in detail', async () => {
    const ctx = newCtx();
    expect(() => runChain(chainOf([['ipFilter', thrower('PC_IP_DENIED')]]), ctx)).toThrow(ProblemError);
    expect(ctx.decisions).toEqual([
      { policy: 'k0', outcome: 'deny', reason: 'PC_IP_DENIED', detail: { code: 'PC_IP_DENIED' } },
    ]);
    const later = newCtx();
    const failing: Hook = () =>
      Promise.reject(new ProblemError('PC_UNAUTHORIZED', 'no', { extensions: { reason: 'expired' } }));
    await expect(
      runChain(
        chainOf([
          ['ipFilter', mark([], 'a')],
          ['auth', failing],
        ]),
        later,
      ),
    ).rejects.toThrow(ProblemError);
    expect(later.decisions).toEqual([
      { policy: 'k1', outcome: 'deny', reason: 'expired', detail: { code: 'PC_UNAUTHORIZED' } },
    ]);
  });

  it('keeps the decision a policy recorded itself, and records a non-problem failure as an error', () => {
    const ctx = newCtx();
    const own: Hook = (c) => {
      c.decisions.push({ policy: 'k0', outcome: 'deny', reason: 'sqli', detail: { rules: ['942100'] } });
      throw new ProblemError('PC_WAF_BLOCKED');
    };
    expect(() => runChain(chainOf([['waf', own]]), ctx)).toThrow(ProblemError);
    expect(ctx.decisions).toEqual([
      { policy: 'k0', outcome: 'deny', reason: 'sqli', detail: { rules: ['942100'] } },
    ]);
    const broken = newCtx();
    expect(() =>
      runChain(
        chainOf([
          [
            'validate',
            () => {
              throw new TypeError('bug');
            },
          ],
        ]),
        broken,
      ),
    ).toThrow(TypeError);
    expect(broken.decisions).toEqual([{ policy: 'k0', outcome: 'error', reason: 'internal' }]);
  });
});

describe('runChain counts failed authentication against the rate limits', () => {
  const unauthorized: Hook = () => {
    throw new ProblemError('PC_UNAUTHORIZED', undefined, { extensions: { reason: 'invalid_credentials' } });
  };
  /** A rate-limit hook admitting `allowed` requests, then refusing with 429. */
  const limit = (allowed: number, ran: string[]): Hook => {
    let n = 0;
    return async () => {
      ran.push('limit');
      if (++n > allowed) throw new ProblemError('PC_RATE_LIMITED');
    };
  };

  it('runs the rateLimit hooks after a 401, skips every other later phase, and sends the 401 while under the limit', async () => {
    const ran: string[] = [];
    const chain = chainOf([
      ['ipFilter', mark(ran, 'ip')],
      ['auth', unauthorized],
      ['rateLimit', limit(1, ran)],
      ['validate', mark(ran, 'validate')],
    ]);
    const ctx = newCtx();
    const first = runChain(chain, ctx);
    expect(first).toBeInstanceOf(Promise);
    await expect(first).rejects.toMatchObject({ code: 'PC_UNAUTHORIZED' });
    expect(ran).toEqual(['ip', 'limit']);
    await expect(runChain(chain, newCtx())).rejects.toMatchObject({ code: 'PC_RATE_LIMITED' });
    expect(ran).toEqual(['ip', 'limit', 'ip', 'limit']);
  });

  it('a 429 from any of several limits wins; a store failure leaves the 401', async () => {
    const ran: string[] = [];
    const storeDown: Hook = () => Promise.reject(new ProblemError('PC_STORE_UNAVAILABLE'));
    await expect(
      runChain(
        chainOf([
          ['auth', unauthorized],
          ['rateLimit', storeDown],
        ]),
        newCtx(),
      ),
    ).rejects.toMatchObject({ code: 'PC_UNAUTHORIZED' });
    await expect(
      runChain(
        chainOf([
          ['auth', unauthorized],
          ['rateLimit', limit(5, ran)],
          ['rateLimit', limit(0, ran)],
        ]),
        newCtx(),
      ),
    ).rejects.toMatchObject({ code: 'PC_RATE_LIMITED' });
    expect(ran).toEqual(['limit', 'limit']);
  });

  it('a 401 on a route without a rate limit, or any other rejection, is thrown synchronously and ends the chain', () => {
    const ran: string[] = [];
    expect(() =>
      runChain(
        chainOf([
          ['auth', unauthorized],
          ['validate', mark(ran, 'v')],
        ]),
        newCtx(),
      ),
    ).toThrow(ProblemError);
    const ipDenied: Hook = () => {
      throw new ProblemError('PC_IP_DENIED');
    };
    expect(() =>
      runChain(
        chainOf([
          ['ipFilter', ipDenied],
          ['rateLimit', mark(ran, 'limit')],
        ]),
        newCtx(),
      ),
    ).toThrow(ProblemError);
    const forbiddenByWaf: Hook = () => {
      throw new ProblemError('PC_WAF_BLOCKED');
    };
    expect(() =>
      runChain(
        chainOf([
          ['waf', forbiddenByWaf],
          ['rateLimit', mark(ran, 'limit')],
        ]),
        newCtx(),
      ),
    ).toThrow(ProblemError);
    expect(ran).toEqual([]);
  });

  it('a 401 after an asynchronous hook counts too', async () => {
    const ran: string[] = [];
    const laterUnauthorized: Hook = () => Promise.reject(new ProblemError('PC_FORBIDDEN'));
    await expect(
      runChain(
        chainOf([
          ['auth', laterUnauthorized],
          ['rateLimit', limit(0, ran)],
        ]),
        newCtx(),
      ),
    ).rejects.toMatchObject({ code: 'PC_RATE_LIMITED' });
    expect(ran).toEqual(['limit']);
  });
});

describe('runChain refuses a client already past a limit before auth (beforeAuth)', () => {
  it('runs the check right before the first auth hook; its 429 skips auth and keeps its own decision', () => {
    const ran: string[] = [];
    let refuse = false;
    const chain: RouteChain = {
      ...chainOf([
        ['ipFilter', mark(ran, 'ip')],
        ['auth', mark(ran, 'auth')],
        ['rateLimit', mark(ran, 'limit')],
      ]),
      beforeAuth: {
        index: 1,
        check: (ctx) => {
          ran.push('check');
          if (!refuse) return;
          ctx.decisions.push({ policy: 'rateLimit', outcome: 'deny', reason: 'limit' });
          throw new ProblemError('PC_RATE_LIMITED');
        },
      },
    };
    expect(runChain(chain, newCtx())).toBeUndefined();
    expect(ran).toEqual(['ip', 'check', 'auth', 'limit']);
    refuse = true;
    const ctx = newCtx();
    expect(() => runChain(chain, ctx)).toThrow(expect.objectContaining({ code: 'PC_RATE_LIMITED' }));
    expect(ran.slice(4)).toEqual(['ip', 'check']);
    expect(ctx.decisions).toEqual([{ policy: 'rateLimit', outcome: 'deny', reason: 'limit' }]);
  });
});

describe('the rule label of an applied policy', () => {
  const kind: PolicyKind = {
    name: 'deny',
    phase: 'auth',
    schema: T.Object({}),
    create: () =>
      function deny() {
        throw new ProblemError('PC_FORBIDDEN');
      },
  };
  const deps = {
    route: { service: 'svc', operationId: 'op' } as Route,
    service: { name: 'svc' } as Service,
    logger: { info() {}, debug() {} },
  } as unknown as Omit<PolicyDeps, 'baseDir'>;

  it('is built once, with the chain: `file#index` of the policy file basename', async () => {
    const chain = await buildChain(
      [
        {
          kind,
          config: {},
          rule: {
            file: '/etc/portcullis/policies/api.yaml',
            index: 2,
            match: {},
            policies: {},
            baseDir: '.',
          },
        },
      ],
      deps,
    );
    expect(chain.applied[0]?.label).toBe('api.yaml#2');
  });

  it('is what a logged denial names (read from the chain, not rebuilt per line)', () => {
    const chain = chainOf([['auth', () => undefined]]);
    (chain.applied[0] as RouteChain['applied'][number]).label = 'stored-label#7';
    const logged = notableDecisions([{ policy: 'k0', outcome: 'deny', reason: 'no' }], chain);
    expect(logged).toEqual([{ policy: 'k0', outcome: 'deny', rule: 'stored-label#7', reason: 'no' }]);
  });
});
