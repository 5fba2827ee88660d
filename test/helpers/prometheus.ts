/** A strict reader of the Prometheus text exposition format (0.0.4) for tests that scrape /metrics. */
import { expect } from 'vitest';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ((?:[0-9.eE+-]+|[Nn][Aa][Nn]|[+-]?Inf))(?: -?\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/gy;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/**
 * Parse the exposition strictly: every line is a HELP, a TYPE or a sample of a declared family;
 * anything else throws, and so does a duplicate series (the same name and label set twice), which
 * Prometheus rejects and which would split one counter's value between lines.
 */
export function parsePrometheus(text: string): Sample[] {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const series = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) {
      const name = line.slice(7).split(' ')[0] ?? '';
      if (!METRIC_NAME.test(name)) throw new Error(`bad HELP line: ${line}`);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const [name = '', type = ''] = line.slice(7).split(' ');
      if (!METRIC_NAME.test(name) || !TYPES.has(type)) throw new Error(`bad TYPE line: ${line}`);
      types.set(name, type);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const name = m[1] as string;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count|total)$/, '');
    if (!types.has(family) && !types.has(name)) throw new Error(`sample of an undeclared family: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    LABEL.lastIndex = 0;
    let consumed = 0;
    for (let l = LABEL.exec(body); l; l = LABEL.exec(body)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      consumed = LABEL.lastIndex;
    }
    if (consumed !== body.length) throw new Error(`bad labels: ${line}`);
    const key = seriesKey(name, labels);
    if (series.has(key)) throw new Error(`duplicate series: ${line}`);
    series.add(key);
    const raw = m[3] as string;
    // Prometheus parses values with Go's ParseFloat: NaN and Inf in any case.
    const value = /nan/i.test(raw)
      ? Number.NaN
      : raw.endsWith('Inf')
        ? (raw.startsWith('-') ? -1 : 1) * Infinity
        : Number(raw);
    samples.push({ name, labels, value });
  }
  return samples;
}

/** The identity of a series: its name and label set, label order ignored. */
function seriesKey(name: string, labels: Record<string, string>): string {
  return JSON.stringify([name, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

/** Sum of the samples named `name` whose labels include `match`. */
export function total(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** The one sample named `name` with exactly the labels `labels`; throws when there is none. */
export function value(samples: Sample[], name: string, labels: Record<string, string>): number {
  const want = seriesKey(name, labels);
  const hit = samples.find((s) => seriesKey(s.name, s.labels) === want);
  if (!hit) throw new Error(`no series ${name}${JSON.stringify(labels)}`);
  return hit.value;
}

/**
 * Scrape until `check` holds (at most 5 s): a response's accounting runs when its socket write
 * completes, so a scrape right after a request may not count it yet.
 */
export async function scrapeUntil(
  scrape: () => Promise<Sample[]>,
  check: (s: Sample[]) => boolean,
): Promise<Sample[]> {
  let last: Sample[] = [];
  await expect
    .poll(
      async () => {
        last = await scrape();
        return check(last);
      },
      { timeout: 5_000, interval: 20 },
    )
    .toBe(true);
  return last;
}
