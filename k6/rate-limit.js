// Rate-limit test: the target's rate-limited route (k6/targets.json; `npm start`: GET /petstore/pets,
// 100 a minute per client IP, policies/petstore.yaml; compose: GET /echo/limited, 5 a minute,
// examples/compose/policies/echo.yaml). Past the limit the gateway must answer 429 with
// Retry-After and the RateLimit / RateLimit-Policy headers; below it, 200 with RateLimit.
// Run it when the limit window is fresh (1 minute).
// Against `npm start` (the example services; the default):  k6 run k6/rate-limit.js
// Against the compose stack (docker-compose.yml; its k6 service sets TARGET=compose):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/rate-limit.js
// Or with a local k6:  k6 run -e TARGET=compose -e BASE_URL=http://localhost:8080 k6/rate-limit.js
import { check, fail } from 'k6';
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const TARGET = __ENV.TARGET || 'local';
/** Paths and limits of the target (k6/targets.json): `local` is `npm start`, `compose` the compose stack. */
const T = JSON.parse(open('./targets.json'))[TARGET];
if (!T) throw new Error(`TARGET must be local or compose, not ${TARGET}`);
const LIMIT = Number(__ENV.LIMIT || T.rateLimit.limit);
const limited = new Counter('rate_limited_responses');

/** @type {import('k6/options').Options} */
export const options = {
  vus: 1,
  iterations: 1,
  thresholds: {
    checks: ['rate==1'],
    rate_limited_responses: ['count>=1'],
  },
};

export default function () {
  const admitted = [];
  let rejected = null;
  for (let i = 0; i < LIMIT + 3; i++) {
    const res = http.get(`${BASE_URL}${T.rateLimit.path}`, {
      responseCallback: http.expectedStatuses(200, 429),
    });
    if (res.status === 200) admitted.push(res);
    else if (res.status === 429) {
      rejected = res;
      limited.add(1);
    } else fail(`unexpected status ${res.status}`);
  }
  check(admitted, {
    'at most LIMIT requests admitted': (a) => a.length <= LIMIT,
    'admitted responses carry RateLimit': (a) => a.every((r) => r.headers.Ratelimit !== undefined),
  });
  check(rejected, {
    'a 429 came at the limit': (r) => r !== null && r.status === 429,
    '429 has Retry-After': (r) => r !== null && Number(r.headers['Retry-After']) >= 1,
    '429 has RateLimit and RateLimit-Policy': (r) =>
      r !== null && r.headers.Ratelimit !== undefined && r.headers['Ratelimit-Policy'] !== undefined,
    '429 is problem+json': (r) =>
      r !== null && String(r.headers['Content-Type']).startsWith('application/problem+json'),
  });
}
