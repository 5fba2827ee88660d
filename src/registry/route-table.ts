/**
 * The immutable RouteTable: every service's routes in one find-my-way router of its own, built
 * once per configuration and swapped whole on reload (never Fastify's router, which cannot be
 * replaced atomically while requests are in flight).
 */
import FindMyWay from 'find-my-way';
import { escapePointer } from '../config/yaml.ts';
import { ConfigError, type ConfigIssue } from '../errors.ts';
import { contentHash, publicTemplate, toRouterPath } from './load-service.ts';
import type { Route, Service } from './types.ts';

/** What a request resolved to. */
export interface RouteMatch {
  route: Route;
  service: Service;
  /** Path parameters by their spec names, percent-decoded (as Fastify decodes them). */
  params: Record<string, string | undefined>;
}

export interface RouteTable {
  readonly services: ReadonlyMap<string, Service>;
  readonly routes: readonly Route[];
  /** Content hash of all specs: changes iff the config changed. */
  readonly version: string;
  /** path WITHOUT query string. null if nothing matches. */
  find(method: string, path: string): RouteMatch | null;
  /** Methods routed for this path (for 405 + Allow), empty if the path is unknown. */
  allowedMethods(path: string): string[];
  /** Whether the spec declares `path` at all (any method): allowedMethods(path) is not empty. */
  declares(path: string): boolean;
  /** The pass-through service whose basePath prefixes this path, if any (positive model otherwise). */
  passThrough(path: string): Service | null;
}

/** One row of `portcullis routes` / `validate` and of the admin `/routes` JSON. */
export interface RouteDescription {
  service: string;
  method: string;
  /** Public path in spec template form, e.g. `/petstore/pets/{petId}`. */
  path: string;
  operationId: string;
  /** Upstream URLs (empty when none are configured). */
  upstreams: string[];
  mock: boolean;
}

/** Order in which `allowedMethods` lists methods (the Allow header). */
const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'];

interface Entry {
  route: Route;
  service: Service;
  /** Spec names of the router's parameters, when some had to be renamed for the router. */
  names: string[] | null;
}

/**
 * Build the table. Throws ConfigError, naming the files involved, when two services share a
 * name or a basePath, or the same method + public path is defined twice.
 */
export function buildRouteTable(services: Service[]): RouteTable {
  const sorted = [...services].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const issues: ConfigIssue[] = [];
  const byName = new Map<string, Service>();
  const byBasePath = new Map<string, Service>();
  for (const s of sorted) {
    const sameName = byName.get(s.name);
    if (sameName) {
      issues.push(conflict(s, `service name "${s.name}" is also used by ${sameName.file}`, ''));
      continue;
    }
    byName.set(s.name, s);
    const sameBase = byBasePath.get(s.settings.basePath);
    if (sameBase) {
      issues.push(
        conflict(
          s,
          `basePath "${s.settings.basePath}" is also used by ${sameBase.file}`,
          '/x-portcullis/basePath',
        ),
      );
      continue;
    }
    byBasePath.set(s.settings.basePath, s);
  }

  const router = FindMyWay({ ignoreTrailingSlash: true, caseSensitive: true });
  const owners = new Map<string, Entry>();
  const methods = new Set<string>();
  const routes: Route[] = [];
  const register = (method: string, entry: Entry, path: string): boolean => {
    try {
      router.on(method as FindMyWay.HTTPMethod, path, noop, entry);
    } catch (err) {
      const where = `/paths/${escapePointer(entry.route.specPath)}`;
      issues.push(
        conflict(entry.service, `cannot route ${method} ${path}: ${(err as Error).message}`, where),
      );
      return false;
    }
    methods.add(method);
    return true;
  };

  const included = sorted.filter(
    (s) => byName.get(s.name) === s && byBasePath.get(s.settings.basePath) === s,
  );
  for (const service of included) {
    for (const route of service.routes) {
      const { path, names } = toRouterPath(service.settings.basePath, route.specPath);
      const key = `${route.method} ${shapeOf(path)}`;
      const owner = owners.get(key);
      if (owner) {
        issues.push(
          conflict(
            service,
            `${route.method} ${publicTemplate(service.settings.basePath, route.specPath)} is also routed by ` +
              `${owner.service.file} (${owner.route.method} ${owner.route.specPath}, operation ${owner.route.operationId})`,
            `/paths/${escapePointer(route.specPath)}/${route.method.toLowerCase()}`,
          ),
        );
        continue;
      }
      const entry: Entry = { route, service, names };
      if (!register(route.method, entry, path)) continue;
      owners.set(key, entry);
      routes.push(route);
    }
  }
  // HEAD is answered by GET unless the spec (of any service) defines it for that path.
  for (const [key, entry] of owners) {
    if (!key.startsWith('GET ')) continue;
    const headKey = `HEAD ${key.slice(4)}`;
    if (owners.has(headKey)) continue;
    const { path } = toRouterPath(entry.service.settings.basePath, entry.route.specPath);
    register('HEAD', entry, path);
  }
  if (issues.length > 0) throw new ConfigError(issues);

  const passThroughServices = included
    .filter((s) => s.settings.passThrough)
    .sort((a, b) => b.settings.basePath.length - a.settings.basePath.length);
  const allMethods = METHOD_ORDER.filter((m) => methods.has(m));
  const version = contentHash(
    included.map((s) => ({
      name: s.name,
      file: s.file,
      settings: s.settings,
      upstreamKey: s.upstreamKey,
      doc: docHash(s),
    })),
  );

  const lookup = (method: string, path: string) => {
    const found = router.find(method as FindMyWay.HTTPMethod, path);
    if (!found) return null;
    // Path parameters are always required in OpenAPI: `/files/.json` is not `/files/{name}.json`.
    for (const key in found.params) if (found.params[key] === '') return null;
    return found;
  };

  const table: RouteTable = {
    services: byName,
    routes: Object.freeze(routes),
    version,
    find(method, path) {
      const found = lookup(method, path);
      if (!found) return null;
      const { route, service, names } = found.store as Entry;
      return { route, service, params: names ? renameParams(found.params, names) : found.params };
    },
    allowedMethods(path) {
      return allMethods.filter((m) => lookup(m, path) !== null);
    },
    declares(path) {
      return allMethods.some((m) => lookup(m, path) !== null);
    },
    passThrough(path) {
      for (const s of passThroughServices) {
        const base = s.settings.basePath;
        if (base === '/' || path === base || (path.startsWith(base) && path.charCodeAt(base.length) === 47))
          return s;
      }
      return null;
    },
  };
  return Object.freeze(table);
}

/** Every route of the table, sorted by path then method. */
export function describeRoutes(table: RouteTable): RouteDescription[] {
  return table.routes
    .map((r) => {
      const s = table.services.get(r.service) as Service;
      return {
        service: s.name,
        method: r.method,
        path: publicTemplate(s.settings.basePath, r.specPath),
        operationId: r.operationId,
        upstreams: s.settings.upstreams.map((u) => u.url),
        mock: s.settings.mock,
      };
    })
    .sort((a, b) =>
      a.path === b.path
        ? METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method)
        : a.path < b.path
          ? -1
          : 1,
    );
}

function noop(): void {}

/** Router paths that differ only in parameter names route the same requests. */
function shapeOf(routerPath: string): string {
  return routerPath.replace(/(^|[^:]):(?!:)[A-Za-z0-9_$]+/g, '$1:');
}

function renameParams(
  params: Record<string, string | undefined>,
  names: string[],
): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  names.forEach((name, i) => {
    out[name] = params[`$p${i}`] ?? params[name];
  });
  return out;
}

function conflict(service: Service, message: string, path: string): ConfigIssue {
  return { file: service.file, path, message };
}

const docHashes = new WeakMap<object, string>();

/** A service's document hash, computed once per loaded document (unchanged services are reused across reloads). */
function docHash(s: Service): string {
  let hash = docHashes.get(s.document);
  if (!hash) {
    hash = contentHash(s.document);
    docHashes.set(s.document, hash);
  }
  return hash;
}
