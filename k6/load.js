// Load test: a ramping arrival rate (open model: requests keep coming even when the gateway
// slows down), with thresholds on p95/p99 latency and the error rate.
// Against `npm start` (the example services; the default):  k6 run k6/load.js
// Against the compose stack (docker-compose.yml; its k6 service sets TARGET=compose):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/load.js
// Or with a local k6:  k6 run -e TARGET=compose -e BASE_URL=http://localhost:8080 k6/load.js
import { check } from 'k6';
import http from 'k6/http';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const TARGET = __ENV.TARGET || 'local';
/** Paths and limits of the target (k6/targets.json): `local` is `npm start`, `compose` the compose stack. */
const T = JSON.parse(open('./targets.json'))[TARGET];
if (!T) throw new Error(`TARGET must be local or compose, not ${TARGET}`);
const PEAK_RPS = Number(__ENV.PEAK_RPS || 500);

/** @type {import('k6/options').Options} */
export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate',
      startRate: 10,
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: 500,
      stages: [
        { target: PEAK_RPS, duration: '30s' },
        { target: PEAK_RPS, duration: '1m' },
        { target: 0, duration: '15s' },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<50', 'p(99)<150'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const res = http.get(`${BASE_URL}${T.load.path}`);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
