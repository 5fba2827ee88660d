// Auth test: the target's route that needs an API key (k6/targets.json; `npm start`: POST
// /petstore/pets, policies/petstore.yaml; compose: GET /echo/private,
// examples/compose/policies/echo.yaml): a valid key is let through, a missing or wrong one gets
// 401 with a challenge, never echoing the key.
// Against `npm start` (the example services; the default):  k6 run -e API_KEY=demo-key-change-me k6/auth.js
// Against the compose stack (docker-compose.yml; its k6 service sets TARGET=compose):
//   docker compose up -d --build
//   docker compose --profile k6 run --rm k6 run /scripts/auth.js
// Or with a local k6:  k6 run -e TARGET=compose -e BASE_URL=http://localhost:8080 k6/auth.js
import { check } from 'k6';
import http from 'k6/http';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const API_KEY = __ENV.API_KEY || 'demo-key-change-me';
const TARGET = __ENV.TARGET || 'local';
/** Paths and limits of the target (k6/targets.json): `local` is `npm start`, `compose` the compose stack. */
const T = JSON.parse(open('./targets.json'))[TARGET];
if (!T) throw new Error(`TARGET must be local or compose, not ${TARGET}`);

/** @type {import('k6/options').Options} */
export const options = {
  vus: 2,
  iterations: 10,
  thresholds: {
    checks: ['rate==1'],
    'http_req_duration{expected_response:true}': ['p(95)<200'],
  },
};

export default function () {
  const url = `${BASE_URL}${T.auth.path}`;
  const body = T.auth.body === undefined ? null : JSON.stringify(T.auth.body);
  /** @param {Record<string, string>} headers @param {import('k6/http').Params} [params] */
  const send = (headers, params = {}) =>
    http.request(T.auth.method, url, body, {
      ...params,
      headers: { ...(body === null ? {} : { 'content-type': 'application/json' }), ...headers },
    });
  const ok = send({ 'x-api-key': API_KEY });
  check(ok, {
    'valid key: let through': (r) =>
      r.status === T.auth.okStatus &&
      (T.auth.answeredBy === 'mock'
        ? r.headers['X-Portcullis-Mock'] !== undefined
        : /upstream-[ab]/.test(String(r.body))),
  });

  const unauthorized = { responseCallback: http.expectedStatuses(401) };
  /** @type {Array<[string, Record<string, string>]>} */
  const cases = [
    ['missing key', {}],
    ['wrong key', { 'x-api-key': `${API_KEY}-wrong` }],
  ];
  for (const [name, headers] of cases) {
    const res = send(headers, unauthorized);
    check(res, {
      [`${name}: 401`]: (r) => r.status === 401,
      [`${name}: challenge`]: (r) => r.headers['Www-Authenticate'] !== undefined,
      [`${name}: problem+json without the key`]: (r) =>
        String(r.headers['Content-Type']).startsWith('application/problem+json') &&
        !String(r.body).includes(API_KEY),
    });
  }
}
