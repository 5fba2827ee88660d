import { describe, expect, it } from 'vitest';
import { ProblemError } from '../errors.ts';
import { type RouteChain, runChain } from './chain.ts';
import type { Hook, RequestContext } from './types.ts';

/** A chain of named hooks, one phase each, and the order they ran in. */
function chainOf(hooks: Array<[phase: string, hook: Hook]>): RouteChain {
  return {
    hooks: hooks.map(([, hook]) => hook),
    applied: hooks.map(([phase], i) => ({ kind: `k${i}`, phase, mode: 'enforce', file: 'p.yaml', rule: i })),
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
