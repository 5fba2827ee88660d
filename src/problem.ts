import { ERRORS, PROBLEM_BASE, ProblemError } from './errors.ts';

/** Media type of every rejection body (RFC 9457). */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** The RFC 9457 body for an error; `instance` is the canonical request path ('' leaves it out). */
export function problemBody(err: ProblemError, instance: string): string {
  const spec = ERRORS[err.code];
  return JSON.stringify({
    type: PROBLEM_BASE + spec.type,
    title: spec.title,
    status: err.status,
    detail: err.message,
    instance: err.omitInstance || instance === '' ? undefined : instance,
    code: err.code,
    ...err.extensions,
  });
}

/** What sendProblem writes to: the gateway's reply (lifecycle/wire.ts) or a FastifyReply (admin). */
export interface ProblemReply {
  code(status: number): unknown;
  header(name: string, value: string): unknown;
  send(payload: string): unknown;
}

/**
 * Send `err` as problem+json. The one place a rejection becomes a reply. `instance` is
 * the request path; it defaults to `req.url` without its query (the lifecycle passes the
 * canonical path, or '' for a target it refused).
 */
export function sendProblem<R extends ProblemReply>(
  req: { url: string },
  reply: R,
  err: ProblemError,
  instance: string = pathOf(req.url),
): R {
  reply.code(err.status);
  reply.header('content-type', PROBLEM_CONTENT_TYPE);
  for (const name in err.headers) reply.header(name, err.headers[name] as string);
  reply.header('cache-control', 'no-store');
  reply.send(problemBody(err, instance));
  return reply;
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/**
 * Turn any thrown value into a ProblemError: known problems pass through, Fastify's own
 * client errors (bad JSON, body limit) keep their status, everything else is a 500 whose
 * detail never carries the original message (it may name an upstream or a file).
 */
export function toProblem(err: unknown): ProblemError {
  if (err instanceof ProblemError) return err;
  const e = err as { statusCode?: number; code?: string } | undefined;
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || e?.statusCode === 413)
    return new ProblemError('PC_BODY_TOO_LARGE', undefined, { cause: err });
  if (e?.statusCode === 408) return new ProblemError('PC_REQUEST_TIMEOUT', undefined, { cause: err });
  if (e?.statusCode && e.statusCode >= 400 && e.statusCode < 500)
    return new ProblemError('PC_BAD_REQUEST', undefined, { cause: err });
  return new ProblemError('PC_INTERNAL', undefined, { cause: err });
}
