// Smoke test: a few requests through the gateway; every check must pass.
// Against `npm start` (the example services; the default):  k6 run k6/smoke.js
// Against the compose stack (docker-compose.yml; its k6 service sets TARGET=compose):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/smoke.js
// Or with a local k6:  k6 run -e TARGET=compose -e BASE_URL=http://localhost:8080 k6/smoke.js
import { check, sleep } from 'k6';
import http from 'k6/http';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const TARGET = __ENV.TARGET || 'local';
/** Paths and limits of the target (k6/targets.json): `local` is `npm start`, `compose` the compose stack. */
const T = JSON.parse(open('./targets.json'))[TARGET];
if (!T) throw new Error(`TARGET must be local or compose, not ${TARGET}`);

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
  const res = http.get(`${BASE_URL}${T.smoke.path}`);
  check(res, {
    'status is 200': (r) => r.status === 200,
    'has a request id': (r) => typeof r.headers['X-Request-Id'] === 'string',
    'answered by the mock or an upstream': (r) =>
      T.smoke.answeredBy === 'mock'
        ? r.headers['X-Portcullis-Mock'] !== undefined
        : /upstream-[ab]/.test(String(r.body)),
  });
  const missing = http.get(`${BASE_URL}${T.smoke.missing}`, {
    responseCallback: http.expectedStatuses(404),
  });
  check(missing, {
    'unknown path is 404 problem+json': (r) =>
      r.status === 404 && String(r.headers['Content-Type']).startsWith('application/problem+json'),
  });
  sleep(0.1);
}
