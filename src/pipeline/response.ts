/**
 * Response stages: how a policy transforms the answer on its way to the client (compression) or
 * looks at what the client gets. A policy registers a stage on the request's context from its hook
 * (`addResponseStage`); the one module that writes answers (lifecycle/answer.ts, and the forwarder
 * it hands over to) runs them when the response head is known: on forwarded answers, mock answers
 * and every answer of the cache (from the store or forwarded through it: the cache keeps the
 * upstream's bytes, and each answer is compressed for its own client).
 *
 * The contract:
 * - Order (DESIGN, "response: header policies, compression, cache store"): the upstream's (or the
 *   stored) headers minus hop-by-hop ones, then the context's `responseHeaders` and
 *   `responseEdits` (header policies, CORS), then the stages by `order` (RESPONSE_STAGE_ORDER;
 *   a stage that must see the final bytes takes a higher order than compression). Each stage sees
 *   the head as the stages before it left it. The request id header is added after the stages.
 * - `onHead` runs once, before the head is written; it may change `head.status` and edit
 *   `head.headers` in place, and returns either a Duplex (usually a Transform) that the body flows
 *   through, or undefined to leave the body alone.
 * - Bodies flow upstream → first stage's stream → ... → last stage's stream → client, joined with
 *   `stream.pipeline`: backpressure holds end to end (a full stream pauses the upstream), a client
 *   that goes away destroys every stage's stream (a compressor's memory is freed at once), and a
 *   stage's stream failing cuts the client response (its head is already out).
 * - A stream that holds data back must not hold it indefinitely: long-lived bodies (event streams)
 *   must come out as they come in (flush per chunk) or be left alone.
 * - HEAD, 204 and 304 answers have no body: `onHead` still runs (HEAD headers must match GET's)
 *   but a returned stream gets an empty body.
 * - Answers a policy makes itself (`ctx.answer`: a CORS preflight) and problems do not go through
 *   the stages: they are complete as the policy built them.
 *
 * Zero cost where unused: a context has no stage list until a policy adds one, and routes without
 * policies have no context at all; the forwarder checks one property.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import { type Duplex, pipeline, Transform } from 'node:stream';
import type { RequestContext } from './types.ts';

/** Where each kind of stage runs among the response stages: lower runs first (nearer the upstream). */
export const RESPONSE_STAGE_ORDER = Object.freeze({ compress: 10 });

/** The response head as the stages see and edit it. */
export interface ResponseHead {
  /** The status to send; a stage may change it. */
  status: number;
  /** The headers to send (lower-case names), after header policies and earlier stages; edit in place. */
  readonly headers: OutgoingHttpHeaders;
  /** The request's method: a HEAD answer has no body, but its headers must be those of the GET. */
  readonly method: string;
  /** The request's headers (content negotiation, conditional requests). */
  readonly requestHeaders: Readonly<Record<string, string | string[] | undefined>>;
}

/** One policy's part in writing a response; see the module comment for the contract. */
export interface ResponseStage {
  /** The policy's name, for logs. */
  readonly name: string;
  /** Place among the stages (RESPONSE_STAGE_ORDER). */
  readonly order: number;
  /** Edit the head; return the stream the body passes through, or undefined to leave it alone. */
  onHead(head: ResponseHead): Duplex | undefined;
}

/** Register a stage for this request's response, kept sorted by `order` (stable for equal orders). */
export function addResponseStage(ctx: RequestContext, stage: ResponseStage): void {
  const stages = ctx.responseStages;
  if (!stages) {
    ctx.responseStages = [stage];
    return;
  }
  let i = stages.length;
  while (i > 0 && (stages[i - 1] as ResponseStage).order > stage.order) i--;
  stages.splice(i, 0, stage);
}

/**
 * Run the stages' `onHead` in order on `head`; returns the body streams they returned, in order,
 * or undefined when none wants the body.
 */
export function runResponseStages(
  stages: readonly ResponseStage[],
  head: ResponseHead,
): Duplex[] | undefined {
  let streams: Duplex[] | undefined;
  for (const stage of stages) {
    const s = stage.onHead(head);
    if (!s) continue;
    if (streams) streams.push(s);
    else streams = [s];
  }
  return streams;
}

/** Where a stage's failure mid-response is reported (a pino logger fits). */
export interface StageFailureLog {
  warn(obj: object, msg: string): void;
}

/** The request's record as the stages' join sees it: its id, and the body bytes the client got. */
export interface StagedRecord {
  readonly id: string;
  bytes: number;
}

/**
 * Join the stages' body streams in order, and on to `client` (the raw response) when given, with
 * `stream.pipeline` (backpressure end to end; a client going away destroys every stage). Returns
 * the first stream: where the body is written. The bytes leaving the last stage (what the client
 * gets, compressed) are added to `rec.bytes`. Without `client`, a counting stream is appended to
 * `streams` and the caller hands `streams`' last to whatever writes the response (Fastify's
 * `reply.send`). A stage failing (not a client going away) is logged on `log` with the request id.
 */
export function throughStages(
  streams: Duplex[],
  client: NodeJS.WritableStream | undefined,
  log: StageFailureLog,
  rec: StagedRecord | undefined,
): Duplex {
  const first = streams[0] as Duplex;
  const done = (err: NodeJS.ErrnoException | null) => {
    if (err && err.code !== 'ERR_STREAM_PREMATURE_CLOSE')
      log.warn({ err, reqId: rec?.id }, 'response stage failed mid-response');
  };
  if (!client) {
    if (rec) streams.push(countingStream(rec));
    if (streams.length > 1) pipeline(streams, done);
    return first;
  }
  const last = streams[streams.length - 1] as Duplex;
  pipeline([...streams, client], done);
  // After pipeline(): its pipe is already reading, so this listener takes nothing from the client.
  if (rec)
    last.on('data', (chunk: Buffer) => {
      rec.bytes += chunk.length;
    });
  return first;
}

/** A pass-through stream adding what passes to `rec.bytes`. */
function countingStream(rec: StagedRecord): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      rec.bytes += chunk.length;
      cb(null, chunk);
    },
  });
}
