/**
 * @readme/openapi-parser's `validate` and `dereference`, run in a child process that exits once
 * loading is done, so that the parser (its OpenAPI JSON Schemas, the Ajv validators compiled from
 * them, its error formatter, and Node's own undici, which its option handling loads by touching
 * the global `Headers`) never stays in the gateway's memory: 5.4 MB of heap and about 17 MB
 * resident (Node 24, after a compacting GC). A worker thread would not do: the memory a finished
 * thread used stays with the process (measured: the gateway idled 15 MB higher with one). The
 * dereferenced document comes back through V8's serializer (`serialization: 'advanced'`), which
 * keeps shared and circular references as the parser made them.
 *
 * One child serves every call of a load (start, a reload, `validate`); it is told to exit IDLE_MS
 * after its last answer and started again by the next load.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ParserOptions, ValidationResult } from '@readme/openapi-parser';

/** How long the child outlives its last answer (the calls of one load come in quick succession). */
const IDLE_MS = 200;
const WORKER_URL = new URL('./openapi-parser-worker.ts', import.meta.url);

/** A call to the child. */
export interface ParserJob {
  id: number;
  kind: 'validate' | 'dereference';
  file: string;
  options: ParserOptions;
}

/** Its answer: the parser's result, or its error's message. */
export type ParserReply = { id: number; value: unknown; error?: undefined } | { id: number; error: string };

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** A running child and the calls it has not answered yet. */
interface Parser {
  process: ChildProcess;
  pending: Map<number, Pending>;
  idle?: NodeJS.Timeout;
}

let current: Parser | undefined;
let nextId = 0;

/** `validate` of @readme/openapi-parser, in the child. */
export function validate(file: string, options: ParserOptions): Promise<ValidationResult> {
  return call('validate', file, options) as Promise<ValidationResult>;
}

/** `dereference` of @readme/openapi-parser, in the child. */
export function dereference(file: string, options: ParserOptions): Promise<unknown> {
  return call('dereference', file, options);
}

function call(kind: ParserJob['kind'], file: string, options: ParserOptions): Promise<unknown> {
  current ??= startParser();
  const parser = current;
  clearTimeout(parser.idle);
  // Referenced while a call waits (a `validate` run has nothing else keeping it alive).
  parser.process.ref();
  parser.process.channel?.ref();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    parser.pending.set(id, { resolve, reject });
    parser.process.send({ id, kind, file, options } satisfies ParserJob);
  });
}

function startParser(): Parser {
  const child = fork(fileURLToPath(WORKER_URL), [], {
    serialization: 'advanced',
    // Not the gateway's own Node flags (profilers, heap snapshot signals, preloads).
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const parser: Parser = { process: child, pending: new Map() };
  child.on('message', (reply: ParserReply) => {
    const p = parser.pending.get(reply.id);
    parser.pending.delete(reply.id);
    if (reply.error === undefined) p?.resolve(reply.value);
    else p?.reject(new Error(reply.error));
    if (parser.pending.size > 0) return;
    child.unref();
    child.channel?.unref();
    parser.idle = setTimeout(() => stop(parser), IDLE_MS);
    parser.idle.unref();
  });
  const lost = (err: Error) => {
    if (current === parser) current = undefined;
    for (const p of parser.pending.values()) p.reject(err);
    parser.pending.clear();
  };
  child.on('error', lost);
  child.on('exit', (code, signal) =>
    lost(new Error(`the OpenAPI parser's process exited (${signal ?? `code ${code}`})`)),
  );
  return parser;
}

/** Tell an idle child to exit (its event loop empties once disconnected). */
function stop(parser: Parser): void {
  if (current !== parser || parser.pending.size > 0) return;
  current = undefined;
  parser.process.disconnect();
}
