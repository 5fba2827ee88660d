import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotCounter, HotHistogram } from './hot-metrics.ts';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVATIONS = [0.0005, 0.001, 0.002, 0.05, 0.5, 3, 0.02];

describe('hot metrics render exactly what prom-client would', () => {
  it('a histogram with two label sets', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const hot = new HotHistogram(ours, 'h_seconds', 'help text', BUCKETS);
    const ref = new Histogram({
      name: 'h_seconds',
      help: 'help text',
      labelNames: ['a', 'b'],
      buckets: BUCKETS,
      registers: [theirs],
    });
    const x = hot.child({ a: 'x', b: '1' });
    const y = hot.child({ a: 'y', b: '2' });
    for (const v of OBSERVATIONS) {
      x.observe(v);
      ref.observe({ a: 'x', b: '1' }, v);
    }
    y.observe(7);
    ref.observe({ a: 'y', b: '2' }, 7);
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('a counter, including a child never incremented', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const hot = new HotCounter(ours, 'c_total', 'count');
    const ref = new Counter({ name: 'c_total', help: 'count', labelNames: ['k'], registers: [theirs] });
    const a = hot.child({ k: 'a' });
    hot.child({ k: 'b' });
    a.inc();
    a.inc(2);
    ref.inc({ k: 'a' }, 3);
    ref.inc({ k: 'b' }, 0);
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('asking twice for a label set (in any order) returns the one child: no duplicate series', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const counter = new HotCounter(ours, 'd_total', 'count');
    const hist = new HotHistogram(ours, 'd_seconds', 'seconds', BUCKETS);
    const refCounter = new Counter({
      name: 'd_total',
      help: 'count',
      labelNames: ['a', 'b'],
      registers: [theirs],
    });
    const refHist = new Histogram({
      name: 'd_seconds',
      help: 'seconds',
      labelNames: ['a', 'b'],
      buckets: BUCKETS,
      registers: [theirs],
    });
    counter.child({ a: 'x', b: '1' }).inc();
    counter.child({ b: '1', a: 'x' }).inc(2);
    hist.child({ a: 'x', b: '1' }).observe(0.5);
    hist.child({ b: '1', a: 'x' }).observe(0.005);
    refCounter.inc({ a: 'x', b: '1' }, 3);
    refHist.observe({ a: 'x', b: '1' }, 0.5);
    refHist.observe({ a: 'x', b: '1' }, 0.005);
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('reset zeroes every child', async () => {
    const reg = new Registry();
    const hot = new HotHistogram(reg, 'r_seconds', 'r', BUCKETS);
    hot.child({ a: 'x' }).observe(0.5);
    reg.resetMetrics();
    expect(await reg.metrics()).toContain('r_seconds_count{a="x"} 0');
  });
});
