/**
 * Keep one of Node's `process.nextTick` queue entries alive for the life of the process: a V8
 * workaround worth about 3.5 µs a request (bench: `nextTick` self time 4.3 -> 0.4 µs/request on
 * the policies route, where Node's own http and stream code calls it ~10 times a request).
 *
 * Node builds each queue entry as `{ [async_id_symbol]: …, [trigger_async_id_symbol]: …,
 * [async_context_frame]: …, callback, args }`. V8 records the object's hidden class after each
 * computed key, and such a literal's feedback goes straight from monomorphic to megamorphic at
 * the first different class (Runtime_DefineKeyedOwnPropertyInLiteral has no polymorphic state).
 * The classes are reachable only from live entries, and entries live for one tick: a full GC at a
 * moment none is queued (at startup in the bench, between ioredis's `ready` and `listen`) frees
 * them, the next entry gets fresh but different classes, the feedback turns megamorphic for good,
 * and TurboFan then defines every property of every entry through the runtime, about 0.3 µs a
 * call instead of 0.03. One entry held here keeps its whole class chain alive (a class holds its
 * parent), so the feedback stays monomorphic.
 */
import { executionAsyncResource } from 'node:async_hooks';

let requested = false;
let pinned: object | undefined;

/** Pin a nextTick queue entry (once per process; call it early, before the first requests). */
export function pinTickObjectShape(): void {
  if (requested) return;
  requested = true;
  // Inside a nextTick callback the execution resource is that callback's queue entry.
  process.nextTick(function pinTickObject() {
    pinned = executionAsyncResource();
  });
}

/** The pinned entry, for tests. */
export function pinnedTickObject(): object | undefined {
  return pinned;
}
