/**
 * The child process of openapi-parser.ts: runs @readme/openapi-parser's `validate` and
 * `dereference` for the gateway and answers `{ id, value }` or `{ id, error }` over IPC. It exits
 * when the gateway disconnects.
 */
import { dereference, validate } from '@readme/openapi-parser';
import type { ParserJob, ParserReply } from './openapi-parser.ts';

process.on('message', async (job: ParserJob) => {
  let reply: ParserReply;
  try {
    const value =
      job.kind === 'validate'
        ? await validate(job.file, job.options)
        : await dereference(job.file, job.options);
    reply = { id: job.id, value };
  } catch (err) {
    reply = { id: job.id, error: err instanceof Error ? err.message : String(err) };
  }
  try {
    process.send?.(reply);
  } catch (err) {
    // A value the serializer cannot copy: say so rather than leave the call waiting.
    process.send?.({ id: job.id, error: `cannot pass the parsed document back: ${(err as Error).message}` });
  }
});
