import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSource } from '../config/yaml.ts';
import { ConfigError } from '../errors.ts';
import { resolveSettings, slugify } from './x-portcullis.ts';

const dir = mkdtempSync(join(tmpdir(), 'pc-xportcullis-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolve the settings of a spec given as YAML text, as if it were `<dir>/svc.yaml`. */
function settingsOf(yaml: string) {
  const file = join(dir, 'svc.yaml');
  const source = parseSource(yaml, file);
  const doc = source.value as Record<string, unknown>;
  return resolveSettings(doc['x-portcullis'], doc, file, source);
}

function issuesOf(yaml: string) {
  try {
    settingsOf(yaml);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

describe('resolveSettings defaults', () => {
  it('derives basePath from info.title and upstreams from absolute servers, with every default applied', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Pet Store API, version: '1' }
servers:
  - url: http://127.0.0.1:4001/
  - url: /relative-is-not-an-upstream
  - url: https://{host}:{port}/v2
    variables: { host: { default: api.internal }, port: { default: '8443' } }
`);
    expect(s).toEqual({
      basePath: '/pet-store-api',
      upstreams: [
        { url: 'http://127.0.0.1:4001', weight: 1 },
        { url: 'https://api.internal:8443/v2', weight: 1 },
      ],
      loadBalancing: 'round-robin',
      passiveHealth: {
        failures: 3,
        ejectMs: 10000,
        panicThreshold: 0,
        statuses: [502, 503, 504],
        maxEjectMs: 300000,
      },
      circuitBreaker: { maxRequests: 1024, maxPending: 1024 },
      preferZone: false,
      timeoutMs: 10000,
      connectTimeoutMs: 3000,
      retries: 1,
      retryOn: ['connect-failure', 'reset', 'timeout'],
      retryBudget: { percent: 20, burst: 10 },
      mock: false,
      passThrough: false,
      tls: { rejectUnauthorized: true },
      websocket: { idleTimeoutMs: 300_000, maxLifetimeMs: 86_400_000 },
    });
  });

  it('uses x-portcullis.upstreams over servers and fills health check defaults', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Petstore, version: '1' }
servers: [{ url: http://ignored:1 }]
x-portcullis:
  basePath: /pets/
  upstreams: [{ url: http://127.0.0.1:4001/v1, weight: 3 }, { url: http://127.0.0.1:4002 }]
  loadBalancing: weighted
  healthCheck: { path: /health, intervalMs: 1000 }
  passiveHealth: { failures: 5 }
  retries: 0
`);
    expect(s.basePath).toBe('/pets');
    expect(s.upstreams).toEqual([
      { url: 'http://127.0.0.1:4001/v1', weight: 3 },
      { url: 'http://127.0.0.1:4002', weight: 1 },
    ]);
    expect(s.loadBalancing).toBe('weighted');
    expect(s.healthCheck).toEqual({
      path: '/health',
      intervalMs: 1000,
      timeoutMs: 2000,
      unhealthyAfter: 3,
      healthyAfter: 2,
    });
    expect(s.passiveHealth).toEqual({
      failures: 5,
      ejectMs: 10000,
      panicThreshold: 0,
      statuses: [502, 503, 504],
      maxEjectMs: 300000,
    });
    expect(s.retries).toBe(0);
  });

  it('accepts retries up to 5, retryOn statuses, a retry budget and a panic threshold', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Retrying, version: '1' }
x-portcullis:
  upstreams: [{ url: http://127.0.0.1:4001 }, { url: http://127.0.0.1:4002 }, { url: http://127.0.0.1:4003 }]
  retries: 5
  retryOn: [connect-failure, 502, 503, 504]
  retryBudget: { percent: 50 }
  passiveHealth: { panicThreshold: 50 }
`);
    expect(s.retries).toBe(5);
    expect(s.retryOn).toEqual(['connect-failure', 502, 503, 504]);
    expect(s.retryBudget).toEqual({ percent: 50, burst: 10 });
    expect(s.passiveHealth).toEqual({
      failures: 3,
      ejectMs: 10000,
      panicThreshold: 50,
      statuses: [502, 503, 504],
      maxEjectMs: 300000,
    });
  });

  it('accepts passive statuses, a ceiling of the ejection time, a circuit breaker and zones', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Zoned, version: '1' }
x-portcullis:
  upstreams: [{ url: http://127.0.0.1:4001, zone: eu-west-1a }, { url: http://127.0.0.1:4002, zone: eu-west-1b }]
  preferZone: true
  passiveHealth: { statuses: [500, 503], ejectMs: 5000, maxEjectMs: 60000 }
  circuitBreaker: { maxRequests: 100 }
`);
    expect(s.upstreams).toEqual([
      { url: 'http://127.0.0.1:4001', weight: 1, zone: 'eu-west-1a' },
      { url: 'http://127.0.0.1:4002', weight: 1, zone: 'eu-west-1b' },
    ]);
    expect(s.preferZone).toBe(true);
    expect(s.passiveHealth).toEqual({
      failures: 3,
      ejectMs: 5000,
      panicThreshold: 0,
      statuses: [500, 503],
      maxEjectMs: 60000,
    });
    expect(s.circuitBreaker).toEqual({ maxRequests: 100, maxPending: 1024 });
  });

  it('an ejectMs above the default ceiling raises the ceiling with it', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Long, version: '1' }
x-portcullis: { upstreams: [{ url: http://127.0.0.1:4001 }], passiveHealth: { ejectMs: 600000 } }
`);
    expect(s.passiveHealth.maxEjectMs).toBe(600000);
  });

  it('allows basePath "/" and a mock service without any upstream', () => {
    const s = settingsOf(`openapi: 3.1.0
info: { title: Root, version: '1' }
x-portcullis: { basePath: /, mock: true }
`);
    expect(s.basePath).toBe('/');
    expect(s.upstreams).toEqual([]);
    expect(s.mock).toBe(true);
  });

  it('resolves tls.ca relative to the spec file', () => {
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n');
    const s = settingsOf(`openapi: 3.1.0
info: { title: Secure, version: '1' }
servers: [{ url: https://127.0.0.1:8443 }]
x-portcullis: { tls: { ca: ./ca.pem, servername: upstream.test } }
`);
    expect(s.tls).toEqual({ ca: join(dir, 'ca.pem'), rejectUnauthorized: true, servername: 'upstream.test' });
  });

  it.each([
    ['Pet Store API', 'pet-store-api'],
    ['  Crème Brûlée v2!  ', 'creme-brulee-v2'],
    ['orders_service', 'orders-service'],
  ])('slugify(%j) = %j', (title, slug) => {
    expect(slugify(title)).toBe(slug);
  });
});

describe('resolveSettings errors name file, line and field', () => {
  const file = join(dir, 'svc.yaml');
  it.each([
    {
      why: 'an unknown loadBalancing value',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
servers: [{ url: http://127.0.0.1:1 }]
x-portcullis:
  loadBalancing: fastest
`,
      path: '/x-portcullis/loadBalancing',
      line: 5,
      message: /round-robin/,
    },
    {
      why: 'an unknown field',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
servers: [{ url: http://127.0.0.1:1 }]
x-portcullis:
  mock: false
  upstreem: []
`,
      path: '/x-portcullis',
      line: 6,
      message: /unknown field "upstreem"/,
    },
    {
      why: 'a weight below 1',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams:
    - url: http://127.0.0.1:1
      weight: 0
`,
      path: '/x-portcullis/upstreams/0/weight',
      line: 6,
      message: />= 1/,
    },
    {
      why: 'a basePath without a leading slash',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { basePath: petstore, mock: true }
`,
      path: '/x-portcullis/basePath',
      line: 3,
      message: /pattern/,
    },
    {
      why: 'retries over 5',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { retries: 6, mock: true }
`,
      path: '/x-portcullis/retries',
      line: 3,
      message: /<= 5/,
    },
    {
      why: 'a retryOn status other than 502, 503 or 504',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  mock: true
  retryOn: [connect-failure, 500]
`,
      path: '/x-portcullis/retryOn/1',
      line: 5,
      message: /./,
    },
    {
      why: 'a panicThreshold over 100',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, passiveHealth: { panicThreshold: 101 } }
`,
      path: '/x-portcullis/passiveHealth/panicThreshold',
      line: 3,
      message: /<= 100/,
    },
    {
      why: 'a misspelt passiveHealth field (status for statuses)',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, passiveHealth: { status: [500] } }
`,
      path: '/x-portcullis/passiveHealth',
      line: 3,
      message: /status/,
    },
    {
      why: 'a passive status outside 500-599',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, passiveHealth: { statuses: [404] } }
`,
      path: '/x-portcullis/passiveHealth/statuses/0',
      line: 3,
      message: />= 500/,
    },
    {
      why: 'a maxEjectMs below ejectMs',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams: [{ url: http://127.0.0.1:1 }]
  passiveHealth: { ejectMs: 20000, maxEjectMs: 10000 }
`,
      path: '/x-portcullis/passiveHealth/maxEjectMs',
      line: 5,
      message: /below ejectMs/,
    },
    {
      why: 'a misspelt circuitBreaker field',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, circuitBreaker: { maxConnections: 10 } }
`,
      path: '/x-portcullis/circuitBreaker',
      line: 3,
      message: /maxConnections/,
    },
    {
      why: 'a circuit breaker admitting no request',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, circuitBreaker: { maxRequests: 0 } }
`,
      path: '/x-portcullis/circuitBreaker/maxRequests',
      line: 3,
      message: />= 1/,
    },
    {
      why: 'preferZone misspelt',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis: { mock: true, preferZones: true }
`,
      path: '/x-portcullis',
      line: 3,
      message: /preferZones/,
    },
    {
      why: 'an empty upstream zone',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams: [{ url: http://127.0.0.1:1, zone: '' }]
`,
      path: '/x-portcullis/upstreams/0/zone',
      line: 4,
      message: /./,
    },
    {
      why: 'the same upstream URL twice',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams:
    - url: http://127.0.0.1:1/
    - url: http://127.0.0.1:1
`,
      path: '/x-portcullis/upstreams/1/url',
      line: 6,
      message: /listed twice/,
    },
    {
      why: 'a non-http upstream URL',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams:
    - url: http://127.0.0.1:1
    - url: ftp://files.example.com
`,
      path: '/x-portcullis/upstreams/1/url',
      line: 6,
      message: /unsupported scheme "ftp:"/,
    },
    {
      why: 'a relative upstream URL',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
x-portcullis:
  upstreams: [{ url: /v1 }]
`,
      path: '/x-portcullis/upstreams/0/url',
      line: 4,
      message: /not an absolute URL/,
    },
    {
      why: 'no upstream at all on a service that is not mocked',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
servers: [{ url: /relative }]
x-portcullis:
  basePath: /a
`,
      path: '/x-portcullis/upstreams',
      line: 4,
      message: /^no upstream: set x-portcullis.upstreams or an absolute servers\[\]\.url, or mock: true$/,
    },
    {
      why: 'an unreadable CA file',
      yaml: `openapi: 3.1.0
info: { title: A, version: '1' }
servers: [{ url: https://127.0.0.1:1 }]
x-portcullis:
  tls:
    ca: ./missing-ca.pem
`,
      path: '/x-portcullis/tls/ca',
      line: 6,
      message: /cannot read CA file .*missing-ca\.pem/,
    },
  ])('rejects $why', ({ yaml, path, line, message }) => {
    const issues = issuesOf(yaml);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file, path, line });
    expect(issues[0]?.message).toMatch(message);
  });
});
