import { describe, expect, test } from 'vitest';
import { parseSource } from '../config/yaml.ts';
import { formatIssue } from '../errors.ts';
import { POLICY_KINDS } from '../policies/index.ts';
import type { Route, Service } from '../registry/types.ts';
import { checkRuleTargets, compileRules, parsePolicyFile, resolvePolicies } from './rules.ts';

/** A service with routes given as `METHOD /path operationId [tag,tag]`. */
function service(name: string, ...routes: string[]): Service {
  return {
    name,
    settings: { basePath: `/${name}`, passThrough: false, mock: false },
    routes: routes.map((line) => {
      const [method = 'GET', specPath = '/', operationId = 'op', tags = ''] = line.split(' ');
      return { service: name, method, specPath, operationId, tags: tags ? tags.split(',') : [] } as Route;
    }),
  } as Service;
}

const SERVICES = [
  service(
    'petstore',
    'GET /pets listPets pets',
    'POST /pets createPet pets,write',
    'GET /pets/{petId} getPet pets',
    'DELETE /pets/{petId} deletePet pets,write',
  ),
  service('orders', 'GET /orders listOrders orders', 'POST /orders createOrder orders'),
];

/** Parse a policy file text as the loader does (real lines). */
function rulesOf(text: string) {
  return parsePolicyFile(parseSource(text, 'policies/p.yaml'), POLICY_KINDS, '.');
}

function problems(text: string, services: readonly Service[] = SERVICES) {
  return checkRuleTargets(rulesOf(text), services).map((p) => ({
    line: formatIssue(p.issue),
    unknownService: p.unknownService,
  }));
}

const HEADERS = 'headers: { securityHeaders: true }';

describe('checkRuleTargets: every name in match must exist, every rule must select a route', () => {
  const cases: Array<{ name: string; text: string; expected: string[] }> = [
    {
      name: 'operationId typo, with a did-you-mean',
      text: `- match: { service: petstore }\n  ${HEADERS}\n- match: { service: petstore, operations: [createPets] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:3: /1/match/operations/0: no operation "createPets" in service petstore (did you mean createPet?)',
      ],
    },
    {
      name: 'unknown service (string form)',
      text: `- match: { service: petstor }\n  ${HEADERS}\n`,
      expected: ['policies/p.yaml:1: /0/match/service: no service "petstor" (did you mean petstore?)'],
    },
    {
      name: 'unknown service in a list: the entry is named',
      text: `- match:\n    service: [petstore, billing]\n  ${HEADERS}\n`,
      expected: ['policies/p.yaml:2: /0/match/service/1: no service "billing"'],
    },
    {
      name: 'an operation of another service than the one selected',
      text: `- match: { service: orders, operations: [createPet] }\n  ${HEADERS}\n`,
      expected: ['policies/p.yaml:1: /0/match/operations/0: no operation "createPet" in service orders'],
    },
    {
      name: 'operation without service: looked up in every service',
      text: `- match:\n    operations: [listOrders, listPet]\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:2: /0/match/operations/1: no operation "listPet" in any service (did you mean listPets?)',
      ],
    },
    {
      name: 'unknown tag',
      text: `- match: { service: petstore, tags: [writes] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:1: /0/match/tags/0: no operation tagged "writes" in service petstore (did you mean write?)',
      ],
    },
    {
      name: 'method that is not an HTTP method',
      text: `- match: { service: petstore, methods: [POST, DELET] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:1: /0/match/methods/1: "DELET" is not an HTTP method (GET, PUT, POST, DELETE, OPTIONS, HEAD, PATCH, TRACE) (did you mean DELETE?)',
      ],
    },
    {
      name: 'method with two letters swapped',
      text: `- match: { service: petstore, methods: [PSOT] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:1: /0/match/methods/0: "PSOT" is not an HTTP method (GET, PUT, POST, DELETE, OPTIONS, HEAD, PATCH, TRACE) (did you mean POST?)',
      ],
    },
    {
      name: 'path pattern matching no route of the selected service',
      text: `- match:\n    service: petstore\n    paths:\n      - /pets/**\n      - /pet/*\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:5: /0/match/paths/1: path pattern "/pet/*" matches no path in service petstore (did you mean /pets?)',
      ],
    },
    {
      name: 'every name exists but together they select nothing',
      text: `- match: { service: orders, methods: [DELETE] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:1: /0/match: match selects no route (no route in service orders meets every criterion); a rule that applies nowhere is an error',
      ],
    },
    {
      name: 'tag and method that exist apart but not together',
      text: `- match: { tags: [orders], methods: [DELETE] }\n  ${HEADERS}\n`,
      expected: [
        'policies/p.yaml:1: /0/match: match selects no route (no route in any service meets every criterion); a rule that applies nowhere is an error',
      ],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      expect(problems(c.text).map((p) => p.line)).toEqual(c.expected);
    });
  }

  test('valid rules have no problems (methods any case, globs, several services)', () => {
    const text = [
      '- match: {}',
      `  ${HEADERS}`,
      '- match: { service: [petstore, orders], methods: [post, Delete] }',
      `  ${HEADERS}`,
      '- match: { service: petstore, paths: ["/pets/*"], tags: [write] }',
      `  ${HEADERS}`,
      '- match: { operations: [createOrder, getPet] }',
      `  ${HEADERS}`,
    ].join('\n');
    expect(problems(text)).toEqual([]);
  });

  test('a rule naming only a missing service is flagged unknownService; other problems are not', () => {
    const text = `- match: { service: [petstore, gone], operations: [createPet] }\n  ${HEADERS}\n- match: { service: petstore, operations: [nope] }\n  ${HEADERS}\n`;
    expect(problems(text).map((p) => p.unknownService)).toEqual([true, false]);
  });

  test('with no service loaded, a match-all rule selects nothing', () => {
    expect(problems(`- match: {}\n  ${HEADERS}\n`, [])).toEqual([
      {
        line: 'policies/p.yaml:1: /0/match: match selects no route (no service is loaded); a rule that applies nowhere is an error',
        unknownService: false,
      },
    ]);
  });

  // What broke: a typo'd operations entry was accepted and the route silently kept no auth.
  test('regression: the typo that dropped auth from createPet is now an error, not a silent no-op', () => {
    const rules = rulesOf(
      '- match: { service: petstore, operations: [createPets] }\n  auth: { apiKey: { keysFile: keys.yaml } }\n',
    );
    const createPet = SERVICES[0]?.routes[1] as Route;
    expect(resolvePolicies(createPet, compileRules(rules), POLICY_KINDS)).toEqual([]);
    expect(checkRuleTargets(rules, SERVICES)).toHaveLength(1);
  });
});

describe('checkRuleTargets on a pass-through service', () => {
  const legacy = service('legacy', 'GET /status status');
  (legacy.settings as { passThrough: boolean }).passThrough = true;
  test('a service-wide rule selecting no declared route still protects its undeclared paths', () => {
    const text = '- match: { service: legacy, methods: [DELETE] }\n  ipFilter: { deny: [10.0.0.0/8] }\n';
    expect(problems(text, [legacy])).toEqual([]);
  });
  test('a rule naming a path that no declared route has is still an error', () => {
    const text = '- match: { service: legacy, paths: [/admin/**] }\n  ipFilter: { deny: [10.0.0.0/8] }\n';
    expect(problems(text, [legacy])).toHaveLength(1);
  });
});
