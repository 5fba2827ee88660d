import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../state/memory.ts';
import { createIpcStore, serveStoreOps } from './ipc-store.ts';
import type { FromWorker } from './protocol.ts';

/** A worker's IPC store wired to a memory store through a fake channel, recording each message sent. */
function wired() {
  const sent: FromWorker[] = [];
  const primary = createMemoryStore();
  const channel = {
    connected: true,
    send(message: FromWorker) {
      sent.push(message);
      if (message.pc === 'store')
        void serveStoreOps(primary, message.ops).then((results) => store.receive({ pc: 'store', results }));
    },
  };
  const store = createIpcStore(channel);
  return { store, sent, channel, primary };
}

describe('the IPC store of a worker', () => {
  it('sends the operations of one event-loop turn as one message and settles each with its own answer', async () => {
    const { store, sent } = wired();
    const spec = { limit: 2, windowMs: 60_000 };
    const [a, b, c, sticky] = await Promise.all([
      store.hit('k', spec),
      store.hit('k', spec),
      store.hit('k', spec),
      store.setSticky('s', 'up-1', 60_000).then(() => store.getSticky('s')),
    ]);
    expect([a?.allowed, b?.allowed, c?.allowed]).toEqual([true, true, false]);
    expect(a).toMatchObject({ limit: 2, remaining: 1 });
    expect(c?.retryAfterMs).toBeGreaterThan(0);
    expect(sticky).toBe('up-1');
    // Three hits and the sticky write in one message; the read, chained after the write, in a second.
    expect(sent.map((m) => (m.pc === 'store' ? m.ops.map((op) => op[0]) : m.pc))).toEqual([
      ['hit', 'hit', 'hit', 'set'],
      ['get'],
    ]);
  });

  it('fails pending and later operations once the primary is gone, and says so in its status', async () => {
    const { store, channel } = wired();
    channel.send = () => undefined; // the primary never answers
    const pending = store.hit('k', { limit: 1, windowMs: 1000 });
    await new Promise((r) => setImmediate(r));
    channel.connected = false;
    store.disconnected();
    await expect(pending).rejects.toThrow(/primary process is gone/);
    await expect(store.getSticky('s')).rejects.toThrow(/primary process is gone/);
    expect(store.status()).toMatchObject({ kind: 'memory', ok: false });
  });

  it('passes a store error back to the operation that caused it', async () => {
    const failing = { ...createMemoryStore(), hit: () => Promise.reject(new Error('boom')) };
    const results = await serveStoreOps(failing, [
      ['hit', 1, 'k', 1, 1000, 1],
      ['get', 2, 's'],
    ]);
    expect(results).toEqual([
      [1, null, 'boom'],
      [2, null],
    ]);
  });
});
