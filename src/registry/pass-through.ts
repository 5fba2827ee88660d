import type { Route, Service } from './types.ts';

/** Methods a pass-through request may have (the public listener's). */
export const PASS_THROUGH_METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'TRACE',
] as const;
/**
 * The method of the route that stands for every other method on a pass-through service's
 * undeclared paths: extension methods (PROPFIND, M-SEARCH, PURGE, ...: over HTTP/1.1 those Node's
 * parser knows, `http.METHODS`; over HTTP/2 any token), CONNECT excepted. No rule can name it
 * (`match.methods` takes route methods only), so the rules that apply are those selecting the
 * service without a `methods` restriction.
 */
export const EXTENSION_METHOD = '*';
/** operationId of the route that stands for a service's undeclared paths. */
export const PASS_THROUGH_OPERATION = '(pass-through)';

/**
 * The route that stands for every undeclared path of a pass-through service, for one method: no
 * tags, no path template, no operation of its own (security comes from the document). A rule
 * applies to it when its `match` selects the service as a whole: by `service` and `methods` (and a
 * `paths` glob that takes any path, such as `/**`); rules naming operations, tags or specific paths
 * select declared operations and never it.
 */
export function passThroughRoute(service: Service, method: string): Route {
  return {
    service: service.name,
    operationId: PASS_THROUGH_OPERATION,
    method,
    specPath: '/**',
    publicPath: `${service.settings.basePath === '/' ? '' : service.settings.basePath}/*`,
    tags: [],
    operation: { responses: {} },
    passThrough: true,
  };
}
