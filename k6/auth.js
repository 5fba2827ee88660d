// Auth test: GET /echo/private needs an API key (examples/compose/policies/echo.yaml).
// A valid key is forwarded (200); a missing or wrong key is 401 with a challenge and a
// problem+json body that names no secret.
// Against the compose stack (docker-compose.yml; API_KEY is set on the k6 service):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/auth.js
// Or with a local k6:  k6 run -e BASE_URL=http://localhost:8080 -e API_KEY=demo-key-change-me k6/auth.js
import { check } from 'k6';
import http from 'k6/http';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const API_KEY = __ENV.API_KEY || 'demo-key-change-me';

/** @type {import('k6/options').Options} */
export const options = {
  vus: 2,
  iterations: 20,
  thresholds: {
    checks: ['rate==1'],
    'http_req_duration{expected_response:true}': ['p(95)<200'],
  },
};

export default function () {
  const url = `${BASE_URL}/echo/private`;
  const ok = http.get(url, { headers: { 'x-api-key': API_KEY } });
  check(ok, {
    'valid key: 200 from an upstream': (r) => r.status === 200 && /upstream-[ab]/.test(String(r.body)),
  });

  const unauthorized = { responseCallback: http.expectedStatuses(401) };
  /** @type {Array<[string, Record<string, string>]>} */
  const cases = [
    ['missing key', {}],
    ['wrong key', { 'x-api-key': `${API_KEY}-wrong` }],
  ];
  for (const [name, headers] of cases) {
    const res = http.get(url, { headers, ...unauthorized });
    check(res, {
      [`${name}: 401`]: (r) => r.status === 401,
      [`${name}: challenge`]: (r) => r.headers['Www-Authenticate'] !== undefined,
      [`${name}: problem+json without the key`]: (r) =>
        String(r.headers['Content-Type']).startsWith('application/problem+json') &&
        !String(r.body).includes(API_KEY),
    });
  }
}
