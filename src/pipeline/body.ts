/**
 * The request body as the policies see it (WAF, validate): read once, bounded, kept on the context
 * so every policy and the forwarder use the same bytes.
 */
import { ProblemError } from '../errors.ts';
import { type BodyReadError, readWhole } from '../net/read-body.ts';
import type { RequestContext } from './types.ts';

/**
 * Read the request body once, up to `maxBytes` (413 past it), and keep it on the context so
 * every policy and the forwarder use the same buffer.
 */
export function readBody(ctx: RequestContext, maxBytes: number): Promise<Buffer> {
  if (ctx.body) return Promise.resolve(ctx.body);
  const declared = ctx.req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes)
    return Promise.reject(new ProblemError('PC_BODY_TOO_LARGE'));
  return readWhole(ctx.req.raw, maxBytes).then(
    (body) => {
      ctx.body = body;
      return body;
    },
    (err: BodyReadError) => {
      throw err.reason === 'too-large'
        ? new ProblemError('PC_BODY_TOO_LARGE')
        : new ProblemError('PC_BAD_REQUEST', 'Request body could not be read', { cause: err });
    },
  );
}
