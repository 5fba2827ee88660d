import { describe, expect, it } from 'vitest';
import { TopClients } from './top-clients.ts';

describe('TopClients', () => {
  it('ranks clients by attempts, highest first, at most n', () => {
    const t = new TopClients();
    for (let i = 0; i < 5; i++) t.add('10.0.0.1');
    for (let i = 0; i < 3; i++) t.add('10.0.0.2');
    t.add('10.0.0.3');
    expect(t.top(2)).toEqual([
      ['10.0.0.1', 5],
      ['10.0.0.2', 3],
    ]);
  });

  it('tracks a bounded number of clients, dropping the least recently seen', () => {
    const t = new TopClients({ tracked: 2 });
    t.add('a');
    t.add('b');
    t.add('a'); // a is now the most recent
    t.add('c'); // drops b
    expect(t.top().map(([c]) => c)).toEqual(['a', 'c']);
  });

  it('ages counts out over two windows', () => {
    let now = 0;
    const t = new TopClients({ windowMs: 1000, now: () => now });
    t.add('a');
    t.add('a');
    now = 1500;
    t.add('b');
    expect(t.top()).toEqual([
      ['a', 2],
      ['b', 1],
    ]);
    now = 2600; // a's window is now two generations old
    expect(t.top()).toEqual([['b', 1]]);
    now = 10_000;
    expect(t.top()).toEqual([]);
  });
});
