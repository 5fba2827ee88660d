import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, test, vi } from 'vitest';
import {
  applyLive,
  certificateFiles,
  diffSettings,
  readSettings,
  settleSettings,
  watchSettings,
} from './live.ts';
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

/** A logger whose entries (object fields and msg) land in `lines`. */
function captured() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { logger, lines };
}

describe('re-reading and watching gateway.yaml (one implementation for a process and the cluster primary)', () => {
  test('readSettings: a broken file is logged with file:line and field, and gives nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-live-'));
    try {
      const file = join(dir, 'gateway.yaml');
      await writeFile(file, 'limits:\n  bodyBytes: lots\n');
      const { logger, lines } = captured();
      expect(await readSettings(file, logger)).toBeUndefined();
      expect(lines).toContainEqual(
        expect.objectContaining({
          code: 'PC_CONFIG_INVALID',
          msg: expect.stringMatching(/gateway\.yaml:2: \/limits\/bodyBytes: /),
        }),
      );
      expect(lines.at(-1)?.msg).toBe('gateway.yaml rejected; the running settings are kept');
      await writeFile(file, 'limits:\n  bodyBytes: 4096\n');
      expect((await readSettings(file, logger))?.limits.bodyBytes).toBe(4096);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('settleSettings: applies the live fields, logs the others as needing a restart', () => {
    const { logger, lines } = captured();
    const before = resolve({});
    const { change, settings } = settleSettings(
      before,
      resolve({ logLevel: 'debug', listen: { http: { port: 8181 } } }),
      logger,
    );
    expect(change).toEqual({ live: ['/logLevel'], restart: ['/listen/http/port'] });
    expect(settings.logLevel).toBe('debug');
    expect(settings.listen.http?.port).toBe(before.listen.http?.port);
    expect(lines).toEqual([
      expect.objectContaining({
        fields: ['/listen/http/port'],
        msg: 'gateway.yaml change needs a restart to take effect; not applied',
      }),
    ]);
  });

  test('watchSettings: an edit of gateway.yaml or of any certificate or key file (SNI ones too) reloads', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-live-'));
    const { logger } = captured();
    const names = ['gateway.yaml', 'a.crt', 'a.key', 'b.crt', 'b.key'];
    for (const n of names) await writeFile(join(dir, n), 'x');
    const config = {
      ...resolve({}),
      file: join(dir, 'gateway.yaml'),
      listen: {
        https: {
          port: 0,
          host: '127.0.0.1',
          cert: join(dir, 'a.crt'),
          key: join(dir, 'a.key'),
          sni: { 'b.example': { cert: join(dir, 'b.crt'), key: join(dir, 'b.key') } },
        },
      },
    } as unknown as GatewayConfig;
    expect(certificateFiles(config)).toEqual(names.slice(1).map((n) => join(dir, n)));
    let reloads = 0;
    const watcher = await watchSettings(config, logger, async () => {
      reloads++;
    });
    try {
      for (const [i, n] of names.entries()) {
        await writeFile(join(dir, n), `edit ${i}`);
        await vi.waitFor(() => expect(reloads).toBe(i + 1), { timeout: 10_000, interval: 20 });
      }
    } finally {
      await watcher?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('watchSettings: nothing to watch without a gateway.yaml or an HTTPS listener', async () => {
    expect(await watchSettings(resolve({}), captured().logger, async () => undefined)).toBeUndefined();
  });
});
