import { describe, expect, test } from 'vitest';
import { applyLive, diffSettings } from './live.ts';
import { resolveGatewayConfig } from './load.ts';
import type { GatewayConfig } from './schema.ts';

const resolve = (input: unknown): GatewayConfig => resolveGatewayConfig(input, { baseDir: '/srv', env: {} });

/** One change per live field of gateway.yaml (as written), and where it lands in the resolved config. */
const LIVE_CHANGES: Array<[string, unknown, (c: GatewayConfig) => unknown, unknown]> = [
  ['trustProxy', { trustProxy: ['10.0.0.0/8'] }, (c) => c.trustProxy, ['10.0.0.0/8']],
  ['limits.bodyBytes', { limits: { bodyBytes: 1234 } }, (c) => c.limits.bodyBytes, 1234],
  ['logLevel', { logLevel: 'debug' }, (c) => c.logLevel, 'debug'],
  ['telemetry.sampleRatio', { telemetry: { sampleRatio: 0.25 } }, (c) => c.telemetry.sampleRatio, 0.25],
  ['telemetry.accessLog: false', { telemetry: { accessLog: false } }, (c) => c.telemetry.accessLog, false],
  [
    'telemetry.accessLog.sample',
    { telemetry: { accessLog: { sample: 0.5 } } },
    (c) => c.telemetry.accessLogSample,
    0.5,
  ],
];

describe('live gateway.yaml fields', () => {
  const before = resolve({});

  test.each(LIVE_CHANGES)('%s is applied without a restart', (_name, input, read, value) => {
    const after = resolve(input);
    const change = diffSettings(before, after);
    expect(change.live.length).toBeGreaterThan(0);
    expect(change.restart).toEqual([]);
    expect(read(applyLive(before, after))).toEqual(value);
  });

  test('a port change needs a restart and is not applied', () => {
    const after = resolve({ listen: { http: { port: 8181 } } });
    expect(diffSettings(before, after)).toEqual({ live: [], restart: ['/listen/http/port'] });
    expect(applyLive(before, after).listen.http?.port).toBe(before.listen.http?.port);
  });
});
