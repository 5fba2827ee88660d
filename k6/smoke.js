// Smoke test: a few requests through the gateway; every check must pass.
// Against the compose stack (docker-compose.yml):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/smoke.js
// Or with a local k6:  k6 run -e BASE_URL=http://localhost:8080 k6/smoke.js
import { check, sleep } from 'k6';
import http from 'k6/http';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';

/** @type {import('k6/options').Options} */
export const options = {
  vus: 1,
  iterations: 10,
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    http_req_duration: ['p(95)<500'],
  },
};

export default function () {
  const res = http.get(`${BASE_URL}/echo/hello`);
  check(res, {
    'status is 200': (r) => r.status === 200,
    'has a request id': (r) => typeof r.headers['X-Request-Id'] === 'string',
    'answered by an upstream': (r) => /upstream-[ab]/.test(String(r.body)),
  });
  const missing = http.get(`${BASE_URL}/echo/not-in-the-spec`, {
    responseCallback: http.expectedStatuses(404),
  });
  check(missing, {
    'unknown path is 404 problem+json': (r) =>
      r.status === 404 && String(r.headers['Content-Type']).startsWith('application/problem+json'),
  });
  sleep(0.1);
}
