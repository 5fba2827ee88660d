import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killChildren, runCli } from '../helpers/spawn.ts';

const GOOD_SPEC = `openapi: 3.1.0
info: { title: Good, version: 1.0.0 }
x-portcullis: { basePath: /good, mock: true }
paths:
  /ping:
    get:
      operationId: ping
      responses: { "200": { description: ok } }
`;

/** A one-operation mock spec on `basePath`. */
const specOn = (title: string, basePath: string, operationId: string) => `openapi: 3.1.0
info: { title: ${title}, version: 1.0.0 }
x-portcullis: { basePath: ${basePath}, mock: true }
paths:
  /${operationId}:
    get:
      operationId: ${operationId}
      responses: { "200": { description: ok } }
`;

interface BrokenCase {
  description: string;
  files: Record<string, string>;
  /** The line validate must print, as a regex over stderr. */
  expected: RegExp;
}

const BROKEN: BrokenCase[] = [
  {
    description: 'a schema error in x-portcullis',
    files: {
      'bad.yaml': `openapi: 3.1.0
info: { title: Bad, version: 1.0.0 }
x-portcullis:
  basePath: /bad
  mock: true
  loadBalancing: fastest
paths:
  /x:
    get:
      operationId: x
      responses: { "200": { description: ok } }
`,
    },
    expected: /openapi\/bad\.yaml:6: \/x-portcullis\/loadBalancing: must be one of .*round-robin/,
  },
  {
    description: 'a YAML syntax error',
    files: {
      'bad.yaml': `openapi: 3.1.0
info: { title: Bad, version: 1.0.0
x-portcullis:
  basePath: /bad
paths: {}
`,
    },
    expected: /openapi\/bad\.yaml:3: \/: .*\S/,
  },
  {
    description: 'a duplicate operationId',
    files: {
      'bad.yaml': `openapi: 3.1.0
info: { title: Bad, version: 1.0.0 }
x-portcullis: { basePath: /bad, mock: true }
paths:
  /x:
    get:
      operationId: same
      responses: { "200": { description: ok } }
  /y:
    get:
      operationId: same
      responses: { "200": { description: ok } }
`,
    },
    expected: /openapi\/bad\.yaml:11: \/paths\/~1y\/get\/operationId: duplicate operationId "same"/,
  },
  {
    description: 'two services on one basePath',
    files: { 'one.yaml': specOn('One', '/shared', 'one'), 'two.yaml': specOn('Two', '/shared', 'two') },
    expected:
      /openapi\/two\.yaml:3: \/x-portcullis\/basePath: basePath "\/shared" is also used by .*openapi\/one\.yaml/,
  },
];

describe.concurrent('portcullis CLI', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'portcullis-cli-'));
  });
  afterAll(async () => {
    killChildren();
    await rm(root, { recursive: true, force: true });
  });

  /** A fresh folder holding openapi/<name> for each entry (and optionally a gateway.yaml). */
  async function project(name: string, specs: Record<string, string>, gatewayYaml?: string): Promise<string> {
    const dir = join(root, name);
    await mkdir(join(dir, 'openapi'), { recursive: true });
    for (const [file, text] of Object.entries(specs)) await writeFile(join(dir, 'openapi', file), text);
    if (gatewayYaml !== undefined) await writeFile(join(dir, 'gateway.yaml'), gatewayYaml);
    return dir;
  }

  describe('help and usage', () => {
    it('--help lists every command and exits 0', async () => {
      const { code, stdout } = await runCli(['--help']);
      expect(code).toBe(0);
      for (const command of ['start', 'validate', 'routes'])
        expect(stdout).toMatch(new RegExp(`^\\s+${command}\\s`, 'm'));
    });

    it.each(['start', 'validate', 'routes'])('%s --help names the command and exits 0', async (command) => {
      const { code, stdout } = await runCli([command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain(`Usage: portcullis ${command}`);
      // Help must not run the command: nothing is listening, no route table.
      expect(stdout).not.toContain('METHOD');
    });

    it('help <command> is the same as <command> --help', async () => {
      const viaHelp = await runCli(['help', 'routes']);
      const viaFlag = await runCli(['routes', '--help']);
      expect(viaHelp.code).toBe(0);
      expect(viaHelp.stdout).toBe(viaFlag.stdout);
    });

    it('--version prints the package version', async () => {
      const { code, stdout } = await runCli(['--version']);
      const pkg = await import('../../package.json', { with: { type: 'json' } });
      expect(code).toBe(0);
      expect(stdout.trim()).toBe(pkg.default.version);
    });

    it.each([
      { description: 'an unknown command', args: ['frobnicate'], says: /unknown command "frobnicate"/ },
      {
        description: 'an unknown option',
        args: ['validate', '--frobnicate'],
        says: /Unknown option '--frobnicate'/,
      },
      { description: 'an extra argument', args: ['validate', 'extra'], says: /unexpected argument "extra"/ },
    ])(
      '$description exits 2 with a message and the usage on stderr, no stack trace',
      async ({ args, says }) => {
        const { code, stderr } = await runCli(args);
        expect(code).toBe(2);
        expect(stderr).toMatch(says);
        expect(stderr).toContain('Usage: portcullis');
        expect(stderr).not.toMatch(/\n\s+at /);
      },
    );
  });

  describe('validate', () => {
    it("prints the route table of the repo's openapi/ examples and exits 0", async () => {
      const { code, stdout, stderr } = await runCli(['validate']);
      expect(stderr).toBe('');
      expect(code).toBe(0);
      expect(stdout).toMatch(/^METHOD\s+PATH\s+OPERATION\s+SERVICE\s+UPSTREAMS\s+POLICIES/m);
      // The example policies, in phase order, each naming the rule that supplied it.
      expect(stdout).toMatch(
        /^GET\s+\/petstore\/pets\s+listPets\s+petstore\s+\(mock\)\s+cors@petstore\.yaml#0 waf@petstore\.yaml#0 rateLimit@petstore\.yaml#0 headers@petstore\.yaml#0 compress@petstore\.yaml#2$/m,
      );
      expect(stdout).toMatch(
        /^POST\s+\/petstore\/pets\s+createPet\s+petstore\s+\(mock\)\s+cors@petstore\.yaml#0 waf@petstore\.yaml#0 auth@petstore\.yaml#1 rateLimit@petstore\.yaml#1 validate@petstore\.yaml#1 headers@petstore\.yaml#0$/m,
      );
      expect(stdout).toMatch(/^GET\s+\/store\/orders\s+listOrders\s+orders\s+\(mock\)\s+-$/m);
      expect(stdout).toMatch(/^DELETE\s+\/petstore\/pets\/\{petId\}\s+deletePet\s+petstore/m);
      expect(stdout).toMatch(/^POST\s+\/store\/orders\s+placeOrder\s+orders/m);
      expect(stdout).toMatch(/OK: 2 service\(s\), 8 route\(s\)\./);
    });

    it.each(BROKEN)('exits 1 and prints file:line: /field: message for $description', async (c) => {
      const dir = await project(`broken-${BROKEN.indexOf(c)}`, { 'good.yaml': GOOD_SPEC, ...c.files });
      const { code, stdout, stderr } = await runCli(['validate'], { cwd: dir });
      expect(code).toBe(1);
      expect(stderr).toMatch(c.expected);
      expect(stderr).toMatch(/\n1 error\(s\)\.\n$/);
      // The valid spec is never blamed.
      expect(stderr).not.toContain('good.yaml');
      expect(stdout).not.toContain('OK:');
    });

    it('reports every broken file of a folder in one run', async () => {
      const files = Object.assign({}, ...BROKEN.map((c, i) => renameFiles(c.files, `${i}-`)));
      const dir = await project('all-broken', { 'good.yaml': GOOD_SPEC, ...files });
      const { code, stderr } = await runCli(['validate'], { cwd: dir });
      expect(code).toBe(1);
      expect(stderr).toMatch(/\n4 error\(s\)\.\n$/);
      for (const name of ['0-bad.yaml:6:', '1-bad.yaml:3:', '2-bad.yaml:11:', '3-two.yaml:3:']) {
        expect(stderr).toContain(name);
      }
    });

    it.each([
      {
        description: 'a wrongly typed field',
        yaml: 'listen:\n  http:\n    port: eighty\n',
        expected: /^gateway\.yaml:3: \/listen\/http\/port: must be integer/m,
      },
      {
        description: 'an unknown field',
        yaml: 'admin:\n  port: 9091\n  prot: 9\n',
        expected: /^gateway\.yaml:3: \/admin: unknown field "prot"/m,
      },
      {
        description: 'a YAML syntax error',
        yaml: 'listen:\n  http: [\n',
        expected: /^gateway\.yaml:3: \/: .*\S/m,
      },
      {
        description: 'a certificate file that does not exist',
        yaml: 'listen:\n  https:\n    port: 8443\n    cert: missing.crt\n    key: missing.key\n',
        expected: /^gateway\.yaml:4: \/listen\/https\/cert: file not found: .*missing\.crt/m,
      },
    ])(
      'exits 1 naming gateway.yaml:line and the field for $description',
      async ({ description, yaml, expected }) => {
        const dir = await project(
          `bad-gateway-${description.replaceAll(' ', '-')}`,
          { 'good.yaml': GOOD_SPEC },
          yaml,
        );
        const { code, stdout, stderr } = await runCli(['validate'], { cwd: dir });
        expect(code).toBe(1);
        expect(stderr).toMatch(expected);
        expect(stderr).toContain('nothing started');
        expect(stdout).not.toContain('OK:');
      },
    );

    it('exits 1 when a certificate does not match its key, as start would', async () => {
      const { createCa, writeCerts } = await import('../helpers/certs.ts');
      const ca = await createCa();
      const dir = await project('mismatched-key', { 'good.yaml': GOOD_SPEC });
      const a = await writeCerts(dir, 'a', await ca.issue({ names: ['a.example.test'] }));
      const b = await writeCerts(dir, 'b', await ca.issue({ names: ['b.example.test'] }));
      await writeFile(
        join(dir, 'gateway.yaml'),
        `listen:\n  https:\n    port: 8443\n    cert: ${a.cert}\n    key: ${b.key}\n`,
      );
      const { code, stderr } = await runCli(['validate'], { cwd: dir });
      expect(code).toBe(1);
      expect(stderr).toMatch(/gateway\.yaml:5: \/listen\/https\/key: .*does not belong to the certificate/);
    });

    it('--config names the file to load, relative to the working directory', async () => {
      const dir = await project('named-config', { 'good.yaml': GOOD_SPEC });
      await writeFile(join(dir, 'other.yaml'), 'logLevel: loud\n');
      const { code, stderr } = await runCli(['validate', '--config', 'other.yaml'], { cwd: dir });
      expect(code).toBe(1);
      expect(stderr).toMatch(/^other\.yaml:1: \/logLevel: /m);
    });
  });

  describe('start', () => {
    it('exits 1 with a "cannot listen" log line naming EADDRINUSE when the port is taken', async () => {
      const taken = createServer();
      await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
      try {
        const port = String((taken.address() as AddressInfo).port);
        const { code, stdout } = await runCli(['start'], {
          env: { PORTCULLIS_HTTP_PORT: port, PORTCULLIS_HTTP_HOST: '127.0.0.1', PORTCULLIS_ADMIN_PORT: '0' },
        });
        expect(code).toBe(1);
        const lines = stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(lines).toContainEqual(expect.objectContaining({ msg: 'cannot listen', code: 'EADDRINUSE' }));
        expect(lines.some((l) => l.msg === 'portcullis listening')).toBe(false);
      } finally {
        await new Promise((resolve) => taken.close(resolve));
      }
    });
  });

  describe('routes', () => {
    it('--json prints the route table as valid JSON', async () => {
      const { code, stdout } = await runCli(['routes', '--json']);
      expect(code).toBe(0);
      const parsed = JSON.parse(stdout) as { routes: Array<Record<string, unknown>>; errors: unknown[] };
      expect(parsed.errors).toEqual([]);
      expect(parsed.routes).toHaveLength(8);
      expect(parsed.routes).toContainEqual(
        expect.objectContaining({
          service: 'petstore',
          method: 'GET',
          path: '/petstore/pets',
          operationId: 'listPets',
          mock: true,
        }),
      );
    });

    it('--json on a broken folder still prints valid JSON, with the errors, and exits 1', async () => {
      const dir = await project('json-broken', {
        'good.yaml': GOOD_SPEC,
        ...(BROKEN[0] as BrokenCase).files,
      });
      const { code, stdout } = await runCli(['routes', '--json'], { cwd: dir });
      expect(code).toBe(1);
      const parsed = JSON.parse(stdout) as {
        routes: Array<{ operationId: string }>;
        errors: Array<Record<string, unknown>>;
      };
      expect(parsed.routes.map((r) => r.operationId)).toEqual(['ping']);
      expect(parsed.errors).toEqual([
        expect.objectContaining({
          line: 6,
          path: '/x-portcullis/loadBalancing',
          file: expect.stringMatching(/bad\.yaml$/),
        }),
      ]);
    });
  });
});

function renameFiles(files: Record<string, string>, prefix: string): Record<string, string> {
  return Object.fromEntries(Object.entries(files).map(([name, text]) => [`${prefix}${name}`, text]));
}
