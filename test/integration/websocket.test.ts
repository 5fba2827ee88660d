/**
 * Issue 12 part 2 acceptance, through a real gateway to a real WebSocket upstream (`ws`), with
 * `ws` as the client: the policy chain runs on the upgrade request (auth, rate limit, undeclared
 * paths, `websocket: false`) and nothing refused reaches the upstream; frames of every kind and
 * size come back exactly; close codes and reasons pass both ways; a socket outlives a hot reload;
 * the upstream's own refusal reaches the client; metrics, access log and span see the upgrade.
 */
import { once } from 'node:events';
import { type IncomingHttpHeaders, request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { captureLogs, spec, startGateway, type TestGateway } from '../helpers/gateway.ts';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from '../helpers/otlp.ts';
import { parsePrometheus, type Sample, scrapeUntil, value } from '../helpers/prometheus.ts';
import { startWsUpstream, type WsUpstream } from '../helpers/ws-upstream.ts';

const API_KEY = 'k-websocket-0123456789';
const RATE_LIMIT = 3;

const OPERATIONS = {
  'GET /echo': 'echo',
  'GET /close': 'closer',
  'GET /refuse': 'refuse',
  'GET /plain': 'plain',
  'GET /keyed/echo': 'keyedEcho',
  'GET /limited/echo': 'limitedEcho',
  'GET /items': 'listItems',
  'GET /waf/echo': 'wafEcho',
  'GET /cors/echo': 'corsEcho',
  'GET /denied/echo': 'deniedEcho',
  'GET /bad-accept': 'badAccept',
  'GET /bad-protocol': 'badProtocol',
};

/** What a refused or failed upgrade answered: status, headers and body (ws 'unexpected-response'). */
interface Refusal {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** The 101 response headers of each client socket. */
const upgradeHeaders = new WeakMap<WebSocket, IncomingHttpHeaders>();

/** Open a client socket; resolves once open, rejects with the HTTP answer when refused. */
function connect(url: string, opts: { headers?: Record<string, string>; protocols?: string[] } = {}) {
  return new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), opts.protocols ?? [], {
      headers: opts.headers,
      perMessageDeflate: false,
    });
    ws.once('upgrade', (res) => upgradeHeaders.set(ws, res.headers));
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => {
        ws.terminate();
        reject(
          Object.assign(new Error(`refused ${res.statusCode}`), {
            refusal: { status: res.statusCode ?? 0, headers: res.headers, body } satisfies Refusal,
          }),
        );
      });
    });
    ws.once('error', reject);
  });
}

/** The refusal an upgrade gets (fails the test when it opens). */
async function refused(url: string, headers?: Record<string, string>): Promise<Refusal> {
  try {
    const ws = await connect(url, { headers });
    ws.terminate();
  } catch (err) {
    const r = (err as { refusal?: Refusal }).refusal;
    if (r) return r;
    throw err;
  }
  throw new Error(`${url} was upgraded`);
}

/** An upgrade request written by hand (what `ws` would never send): the answer's status, headers and body. */
function rawUpgrade(url: string, headers: Record<string, string>, body?: string): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        ...headers,
      },
    });
    req.once('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('upgraded'));
    });
    req.once('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** Send one message and wait for the echo. */
async function echo(ws: WebSocket, data: string | Buffer): Promise<{ data: Buffer; binary: boolean }> {
  const reply = once(ws, 'message') as Promise<[Buffer, boolean]>;
  ws.send(data, { binary: typeof data !== 'string' });
  const [got, binary] = await reply;
  return { data: got, binary };
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) }));
}

describe('WebSocket proxying', () => {
  let up: WsUpstream;
  let gw: TestGateway;
  const logs = captureLogs();

  beforeAll(async () => {
    up = await startWsUpstream({ protocols: ['chat.v2'] });
    const doc = spec({ basePath: '/svc', upstreams: [up.url], operations: OPERATIONS });
    // An operation that refuses upgrades (its own x-portcullis).
    const paths = doc.paths as Record<string, Record<string, Record<string, unknown>>>;
    paths['/items'] = { get: { ...paths['/items']?.get, 'x-portcullis': { websocket: false } } };
    const timeouts = spec({
      title: 'Timeouts',
      basePath: '/timeouts',
      upstreams: [up.url],
      operations: { 'GET /idle/echo': 'idleEcho', 'GET /short/echo': 'shortEcho' },
      extra: { websocket: { idleTimeoutMs: 200 } },
    });
    // The operation's own timeouts over the service's: a lifetime far below its idle timeout.
    const short = (timeouts.paths as Record<string, Record<string, Record<string, unknown>>>)['/short/echo'];
    if (short?.get) short.get['x-portcullis'] = { websocket: { idleTimeoutMs: 60_000, maxLifetimeMs: 300 } };
    gw = await startGateway(
      {
        timeouts,
        svc: doc,
        off: spec({
          title: 'Off',
          basePath: '/off',
          upstreams: [up.url],
          operations: { 'GET /echo': 'offEcho' },
          extra: { websocket: false },
        }),
      },
      { watch: true },
      {
        logger: logs.logger,
        files: { 'policies/secrets/keys.yaml': `robot: ${API_KEY}\n` },
        policies: {
          ws: [
            {
              match: { service: 'svc', operations: ['keyedEcho'] },
              auth: { apiKey: { keysFile: 'secrets/keys.yaml' }, forwardSubject: 'x-caller' },
            },
            {
              match: { service: 'svc', operations: ['limitedEcho'] },
              rateLimit: { limit: RATE_LIMIT, window: '1m', key: 'ip' },
            },
            { match: { service: 'svc', operations: ['wafEcho'] }, waf: {} },
            {
              match: { service: 'svc', operations: ['corsEcho'] },
              cors: { origins: ['https://app.example'] },
            },
            { match: { service: 'svc', operations: ['deniedEcho'] }, ipFilter: { deny: ['127.0.0.1/32'] } },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up?.close();
  });

  it('echoes text, binary and a 1 MiB message exactly', async () => {
    const ws = await connect(`${gw.url}/svc/echo`);
    // The 101's own hop-by-hop field (named in its Connection) is dropped; end-to-end ones pass.
    expect(upgradeHeaders.get(ws)?.['x-hop']).toBeUndefined();
    expect(upgradeHeaders.get(ws)?.['x-upstream-note']).toBe('kept');
    const text = await echo(ws, 'héllo wörld');
    expect(text.binary).toBe(false);
    expect(text.data.toString('utf8')).toBe('héllo wörld');
    const bytes = Buffer.from([0, 1, 2, 255, 254, 0x88, 0x81]);
    const binary = await echo(ws, bytes);
    expect(binary.binary).toBe(true);
    expect(Buffer.compare(binary.data, bytes)).toBe(0);
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 8)) & 0xff;
    const large = await echo(ws, big);
    expect(large.data.length).toBe(big.length);
    expect(Buffer.compare(large.data, big)).toBe(0);
    ws.close(1000, 'done');
    await closed(ws);
  });

  it('holds the upstream back while the client does not read (backpressure), then delivers every byte', async () => {
    const opened = up.nextConnection();
    const ws = await connect(`${gw.url}/svc/echo`);
    const upstreamSide = await opened;
    const MESSAGES = 64;
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    ws.pause();
    for (let i = 0; i < MESSAGES; i++) upstreamSide.send(chunk);
    // Wait until the upstream stops getting rid of its queue: with backpressure it stalls once the
    // kernel buffers on the way are full (a few MiB each), without it the gateway would take it all.
    const samples: number[] = [];
    await expect
      .poll(
        () => {
          samples.push(upstreamSide.bufferedAmount);
          const last = samples.slice(-5);
          // Stalled, after some bytes went out (so the flow had started).
          return (
            last.length === 5 &&
            last.every((v) => v === last[0]) &&
            (last[0] as number) < MESSAGES * chunk.length
          );
        },
        { timeout: 20_000, interval: 50 },
      )
      .toBe(true);
    expect(samples.at(-1)).toBeGreaterThan(32 * 1024 * 1024);
    let received = 0;
    const all = new Promise<void>((resolve) => {
      ws.on('message', (data: Buffer) => {
        received += data.length;
        if (received === MESSAGES * chunk.length) resolve();
      });
    });
    ws.resume();
    await all;
    expect(upstreamSide.bufferedAmount).toBe(0);
    ws.close();
    await closed(ws);
  });

  it('forwards the handshake as for any request and answers with the upstream 101 headers', async () => {
    const before = up.seen.length;
    const ws = await connect(`${gw.url}/svc/echo?room=7`, { protocols: ['chat.v1', 'chat.v2'] });
    expect(ws.protocol).toBe('chat.v2');
    const seen = up.seen[before];
    expect(seen?.url).toBe('/echo?room=7');
    expect(seen?.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen?.headers['x-forwarded-host']).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(seen?.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen?.headers['sec-websocket-protocol']).toBe('chat.v1,chat.v2');
    ws.close();
    await closed(ws);
  });

  it('passes close codes and reasons both ways', async () => {
    // Upstream → client.
    const ws = await connect(`${gw.url}/svc/close?code=4001&reason=bye%20now`);
    expect(await closed(ws)).toEqual({ code: 4001, reason: 'bye now' });
    // Client → upstream, and the upstream's answering close back.
    const ws2 = await connect(`${gw.url}/svc/echo`);
    await echo(ws2, 'x');
    const before = up.closes.length;
    ws2.close(4002, 'client says bye');
    expect(await closed(ws2)).toEqual({ code: 4002, reason: 'client says bye' });
    await expect.poll(() => up.closes.slice(before)).toEqual([{ code: 4002, reason: 'client says bye' }]);
  });

  it('refuses an upgrade without credentials with 401 and nothing reaches the upstream', async () => {
    const before = up.seen.length;
    const r = await refused(`${gw.url}/svc/keyed/echo`);
    expect(r.status).toBe(401);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(r.body).code).toBe('PC_UNAUTHORIZED');
    expect(up.seen.length).toBe(before);
    // With the key it opens, and the upstream sees the verified identity, never the key check bypassed.
    const ws = await connect(`${gw.url}/svc/keyed/echo`, {
      headers: { 'x-api-key': API_KEY, 'x-caller': 'root' },
    });
    expect(up.seen.at(-1)?.headers['x-caller']).toBe('robot');
    expect((await echo(ws, 'in')).data.toString()).toBe('in');
    ws.close();
    await closed(ws);
  });

  it('refuses an undeclared path like any undeclared route (404), nothing upstream', async () => {
    const before = up.seen.length;
    const r = await refused(`${gw.url}/svc/not-declared`);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).code).toBe('PC_ROUTE_NOT_FOUND');
    // An ambiguous target (an encoded slash) is refused by the canonical target, before routing.
    const ambiguous = await refused(`${gw.url}/svc/keyed%2Fecho`);
    expect(ambiguous.status).toBe(400);
    expect(JSON.parse(ambiguous.body).code).toBe('PC_BAD_TARGET');
    expect(up.seen.length).toBe(before);
  });

  it('refuses upgrades where websocket is false (service or operation) with 403', async () => {
    const before = up.seen.length;
    for (const path of ['/off/echo', '/svc/items']) {
      const r = await refused(`${gw.url}${path}`);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body).code).toBe('PC_WEBSOCKET_REFUSED');
    }
    expect(up.seen.length).toBe(before);
    // The operation still serves plain GETs.
    expect((await fetch(`${gw.url}/off/echo`)).status).toBe(200);
  });

  it('refuses a handshake no upstream could accept: 426 for another version, 400 without a key', async () => {
    const before = up.seen.length;
    const version = await rawUpgrade(`${gw.url}/svc/echo`, { 'sec-websocket-version': '8' });
    expect(version.status).toBe(426);
    expect(version.headers['sec-websocket-version']).toBe('13');
    expect(JSON.parse(version.body).code).toBe('PC_WEBSOCKET_VERSION');
    const keyless = await rawUpgrade(`${gw.url}/svc/echo`, { 'sec-websocket-key': 'short' });
    expect(keyless.status).toBe(400);
    expect(JSON.parse(keyless.body).code).toBe('PC_WEBSOCKET_HANDSHAKE');
    const withBody = await rawUpgrade(`${gw.url}/svc/echo`, { 'content-length': '4' }, 'abcd');
    expect(withBody.status).toBe(400);
    expect(up.seen.length).toBe(before);
  });

  it("answers 502 when the upstream's 101 does not match the client's handshake", async () => {
    for (const path of ['/svc/bad-accept', '/svc/bad-protocol']) {
      const r = await refused(`${gw.url}${path}`);
      expect(r.status).toBe(502);
      expect(JSON.parse(r.body).code).toBe('PC_UPSTREAM_ERROR');
    }
  });

  it('closes an idle socket with 1001 both ways after idleTimeoutMs', async () => {
    const opened = up.nextConnection();
    const ws = await connect(`${gw.url}/timeouts/idle/echo`);
    const upstreamSide = await opened;
    const upstreamClosed = once(upstreamSide, 'close');
    expect(await closed(ws)).toEqual({ code: 1001, reason: 'idle timeout' });
    const [code, reason] = (await upstreamClosed) as [number, Buffer];
    expect({ code, reason: reason.toString() }).toEqual({ code: 1001, reason: 'idle timeout' });
  });

  it('closes a socket past maxLifetimeMs with 1001 both ways, busy or not', async () => {
    const opened = up.nextConnection();
    const ws = await connect(`${gw.url}/timeouts/short/echo`);
    const upstreamSide = await opened;
    const upstreamClosed = once(upstreamSide, 'close');
    const ended = closed(ws);
    // Keep it busy: echoes go on until the lifetime ends the socket.
    const busy = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('tick'), 20);
    try {
      expect(await ended).toEqual({ code: 1001, reason: 'lifetime exceeded' });
    } finally {
      clearInterval(busy);
    }
    const [code] = (await upstreamClosed) as [number, Buffer];
    expect(code).toBe(1001);
  });

  it('runs ipFilter and the WAF (target and headers) on the upgrade, nothing upstream', async () => {
    const before = up.seen.length;
    const denied = await refused(`${gw.url}/svc/denied/echo`);
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body).code).toBe('PC_IP_DENIED');
    const inQuery = await refused(`${gw.url}/svc/waf/echo?room=${encodeURIComponent("1' OR '1'='1")}`);
    expect(inQuery.status).toBe(403);
    expect(JSON.parse(inQuery.body).code).toBe('PC_WAF_BLOCKED');
    const inHeader = await refused(`${gw.url}/svc/waf/echo`, {
      'x-room': '<script>alert(document.cookie)</script>',
    });
    expect(inHeader.status).toBe(403);
    expect(JSON.parse(inHeader.body).code).toBe('PC_WAF_BLOCKED');
    expect(up.seen.length).toBe(before);
    // A clean upgrade on the same operation opens, and its frames are never judged as a body.
    const ws = await connect(`${gw.url}/svc/waf/echo?room=7`);
    expect((await echo(ws, "1' OR '1'='1")).data.toString()).toBe("1' OR '1'='1");
    ws.close();
    await closed(ws);
  });

  it("refuses an upgrade from an origin the route's cors policy does not allow (cross-site WebSocket hijacking)", async () => {
    const before = up.seen.length;
    const r = await refused(`${gw.url}/svc/cors/echo`, { origin: 'https://evil.example' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).code).toBe('PC_FORBIDDEN');
    expect(up.seen.length).toBe(before);
    // The allowed origin, and a client that sends none (not a browser), open.
    for (const headers of [{ origin: 'https://app.example' }, {}] as Array<Record<string, string>>) {
      const ws = await connect(`${gw.url}/svc/cors/echo`, { headers });
      expect((await echo(ws, 'ok')).data.toString()).toBe('ok');
      ws.close();
      await closed(ws);
    }
  });

  it('applies the rate limit to upgrades', async () => {
    const statuses: number[] = [];
    const open: WebSocket[] = [];
    for (let i = 0; i < RATE_LIMIT + 2; i++) {
      try {
        open.push(await connect(`${gw.url}/svc/limited/echo`));
        statuses.push(101);
      } catch (err) {
        const r = (err as { refusal?: Refusal }).refusal;
        if (!r) throw err;
        statuses.push(r.status);
        expect(JSON.parse(r.body).code).toBe('PC_RATE_LIMITED');
        expect(r.headers['retry-after']).toBeDefined();
      }
    }
    expect(statuses).toEqual([101, 101, 101, 429, 429]);
    for (const ws of open) ws.close();
    await Promise.all(open.map(closed));
  });

  it("passes the upstream's refusal (403, 200) to the client as an HTTP answer", async () => {
    const r = await refused(`${gw.url}/svc/refuse`);
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toEqual({ refused: true });
    const p = await refused(`${gw.url}/svc/plain`);
    expect(p.status).toBe(200);
    expect(p.body).toBe('plain');
  });

  it('keeps an open socket through a hot reload', async () => {
    const ws = await connect(`${gw.url}/svc/echo`);
    expect((await echo(ws, 'before')).data.toString()).toBe('before');
    const version = gw.gateway.runtime.snapshot?.version;
    await gw.writePolicy('extra', [
      {
        match: { service: 'svc', operations: ['echo'] },
        headers: { response: { set: { 'x-reloaded': 'yes' } } },
      },
    ]);
    // The watcher reloads (watch: true): a policy file written while the socket is open.
    await expect
      .poll(() => gw.gateway.runtime.snapshot?.version, { timeout: 10_000, interval: 50 })
      .not.toBe(version);
    expect((await echo(ws, 'after')).data.toString()).toBe('after');

    // A new upgrade gets the new configuration (the policy's header on its 101).
    const ws2 = await connect(`${gw.url}/svc/echo`);
    expect(upgradeHeaders.get(ws2)?.['x-reloaded']).toBe('yes');
    expect(upgradeHeaders.get(ws)?.['x-reloaded']).toBeUndefined();
    ws.close();
    ws2.close();
    await Promise.all([closed(ws), closed(ws2)]);
    const reloaded = gw.gateway.runtime.snapshot?.version;
    await gw.removePolicy('extra');
    await expect
      .poll(() => gw.gateway.runtime.snapshot?.version, { timeout: 10_000, interval: 50 })
      .not.toBe(reloaded);
  });

  it('counts upgrades and open sockets, and logs the upgrade', async () => {
    const scrape = async () => parsePrometheus(await (await fetch(`${gw.addresses.admin}/metrics`)).text());
    const openNow = (s: Sample[]) => value(s, 'portcullis_websocket_open_connections', { service: 'svc' });
    const upgrades = (s: Sample[], outcome: string) =>
      value(s, 'portcullis_websocket_upgrades_total', { service: 'svc', outcome });
    const before = await scrape();
    const ws = await connect(`${gw.url}/svc/echo`);
    await scrapeUntil(scrape, (s) => openNow(s) === 1);
    ws.close();
    await closed(ws);
    const after = await scrapeUntil(scrape, (s) => openNow(s) === 0);
    expect(upgrades(after, 'upgraded') - upgrades(before, 'upgraded')).toBe(1);
    // Earlier tests: 401, 404-less refusals of svc (403 websocket: false on /svc/items, 429s), the upstream's 403 and 200.
    expect(upgrades(after, 'refused')).toBeGreaterThanOrEqual(4);
    expect(upgrades(after, 'upstream-refused')).toBe(2);
    const line = logs.lines.find((l) => l.msg === 'request' && l.status === 101);
    expect(line).toMatchObject({ method: 'GET', route: '/svc/echo', service: 'svc', websocket: true });
    await expect
      .poll(() => logs.lines.some((l) => l.msg === 'websocket closed' && l.end === 'client'))
      .toBe(true);
  });
});

describe('WebSocket upgrades and the balancer, sticky sessions and the cache', () => {
  let a: WsUpstream;
  let b: WsUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    [a, b] = await Promise.all([startWsUpstream(), startWsUpstream()]);
    gw = await startGateway(
      {
        pair: spec({
          title: 'Pair',
          basePath: '/pair',
          upstreams: [a.url, b.url],
          operations: {
            'GET /echo': 'echo',
            'GET /sticky/echo': 'stickyEcho',
            'GET /cached/echo': 'cachedEcho',
          },
        }),
      },
      {},
      {
        policies: {
          ws: [
            { match: { service: 'pair', operations: ['stickyEcho'] }, stickySession: {} },
            { match: { service: 'pair', operations: ['cachedEcho'] }, cache: { ttl: '1m' } },
          ],
        },
      },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await Promise.all([a?.close(), b?.close()]);
  });

  /** Open, echo once, close: which upstream took the socket. */
  async function roundTrip(path: string, headers?: Record<string, string>): Promise<'a' | 'b'> {
    const [seenA, seenB] = [a.seen.length, b.seen.length];
    const ws = await connect(`${gw.url}${path}`, { headers });
    expect((await echo(ws, 'ping')).data.toString()).toBe('ping');
    ws.close();
    await closed(ws);
    const took = a.seen.length > seenA ? 'a' : 'b';
    expect(a.seen.length - seenA + (b.seen.length - seenB)).toBe(1);
    return took;
  }

  it('balances upgrades over the upstreams (round-robin)', async () => {
    const took: string[] = [];
    for (let i = 0; i < 4; i++) took.push(await roundTrip('/pair/echo'));
    expect(took.filter((t) => t === 'a')).toHaveLength(2);
    expect(took.filter((t) => t === 'b')).toHaveLength(2);
  });

  it('pins upgrades carrying the sticky cookie (set on the 101) to one upstream', async () => {
    const ws = await connect(`${gw.url}/pair/sticky/echo`);
    const setCookie = upgradeHeaders.get(ws)?.['set-cookie'];
    ws.close();
    await closed(ws);
    expect(setCookie?.[0]).toMatch(/^pc_affinity=/);
    const cookie = String(setCookie?.[0]).split(';')[0] as string;
    const took = new Set<string>();
    for (let i = 0; i < 4; i++) took.add(await roundTrip('/pair/sticky/echo', { cookie }));
    expect(took.size).toBe(1);
  });

  it('never answers an upgrade from the cache', async () => {
    // A plain GET stores the upstream's 200; the upgrade after it still goes upstream and opens.
    const first = await fetch(`${gw.url}/pair/cached/echo`);
    expect(first.status).toBe(200);
    await first.text();
    const again = await fetch(`${gw.url}/pair/cached/echo`);
    await again.text();
    expect(again.headers.get('cache-status')).toMatch(/hit/);
    await roundTrip('/pair/cached/echo');
  });
});

describe('WebSocket upgrades in traces', () => {
  let receiver: OtlpReceiver;
  let up: WsUpstream;
  let gw: TestGateway;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    up = await startWsUpstream();
    gw = await startGateway(
      { svc: spec({ basePath: '/svc', upstreams: [up.url], operations: { 'GET /echo': 'echo' } }) },
      { telemetry: { otlp: receiver.url, serviceName: 'gw-ws', sampleRatio: 1 } },
    );
  });
  afterAll(async () => {
    await gw?.close();
    await up?.close();
    await receiver?.close();
  });

  it('covers the upgrade with a SERVER span (101) and the upstream handshake with its CLIENT span', async () => {
    const ws = await connect(`${gw.url}/svc/echo`);
    const requestId = upgradeHeaders.get(ws)?.['x-request-id'];
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(up.seen.at(-1)?.headers.traceparent));
    expect(m).not.toBeNull();
    const traceId = m?.[1] as string;
    let spans: ReceivedSpan[] = [];
    await expect
      .poll(
        async () => {
          await gw.gateway.tracing?.forceFlush();
          spans = receiver.spans.filter((s) => s.traceId === traceId);
          return spans.length;
        },
        { timeout: 10_000, interval: 50 },
      )
      .toBe(2);
    const server = spans.find((s) => s.kind === 2);
    const client = spans.find((s) => s.kind === 3);
    expect(server).toMatchObject({
      name: 'GET /svc/echo',
      attributes: { 'http.response.status_code': 101, 'portcullis.request_id': requestId },
    });
    expect(client).toMatchObject({
      parentSpanId: server?.spanId,
      spanId: m?.[2],
      attributes: { 'http.response.status_code': 101 },
    });
    ws.close();
    await closed(ws);
  });
});
