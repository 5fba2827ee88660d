import type { OpenAPIV3 } from 'openapi-types';
import type { PolicyDeps } from '../../pipeline/types.ts';
import { type ApiKeyConfig, createApiKeyMethod, loadApiKeys } from './api-key.ts';
import type { AuthConfig } from './auth.ts';
import { createBasicMethod, loadHtpasswd } from './basic.ts';
import { createJwtMethod, type JwtConfig } from './jwt.ts';
import { type AuthMethod, configError } from './method.ts';

const DISCOVERY_SUFFIX = '/.well-known/openid-configuration';

/** Alternatives from the spec: any one must pass; all methods inside one must pass. */
export interface SpecAuth {
  alternatives: AuthMethod[][];
  /** The spec allows anonymous calls (`security: []` or a `{}` requirement). */
  anonymous: boolean;
}

/**
 * Turn the operation's `security` (or the document's) and `components.securitySchemes` into auth
 * methods. The spec says which scheme and scopes; the policy's jwt/apiKey/basic blocks say how to
 * verify (issuer and audience, key file, users file):
 * - http bearer, oauth2 → jwt (policy `jwt` required, with its audience), the requirement's
 *   scopes added;
 * - openIdConnect → jwt with discovery from openIdConnectUrl (issuer derived from it unless
 *   `jwt.issuer` is set), the policy `jwt` required for its audience (`any` to opt out) and giving
 *   the rest;
 * - apiKey in header or query → apiKey with the scheme's location and name (policy `apiKey` keys);
 * - http basic → basic (policy `basic` users file).
 * Anything else (mutualTLS, cookie API keys, other http schemes) is a configuration error.
 */
export async function authFromSpec(config: AuthConfig, deps: PolicyDeps): Promise<SpecAuth> {
  const doc = deps.service.document as OpenAPIV3.Document;
  const requirements = (deps.route.operation.security ??
    doc.security ??
    []) as OpenAPIV3.SecurityRequirementObject[];
  const schemes = (doc.components?.securitySchemes ?? {}) as Record<string, OpenAPIV3.SecuritySchemeObject>;
  const result: SpecAuth = { alternatives: [], anonymous: requirements.length === 0 };
  const keyTables = new Map<string, Map<string, string>>();
  let users: Map<string, string> | undefined;

  for (const requirement of requirements) {
    const entries = Object.entries(requirement);
    if (entries.length === 0) {
      result.anonymous = true;
      continue;
    }
    const methods: AuthMethod[] = [];
    for (const [name, scopes] of entries) {
      const scheme = schemes[name];
      const where = `/fromSpec (securitySchemes.${name})`;
      if (!scheme) throw configError(where, `the spec names security scheme ${name} but does not define it`);
      if ((scheme.type === 'http' && scheme.scheme.toLowerCase() === 'bearer') || scheme.type === 'oauth2') {
        if (!config.jwt)
          throw configError(where, `scheme ${name} is ${scheme.type}: set auth.jwt (issuer, audience)`);
        methods.push(createJwtMethod(withScopes(config.jwt, scopes)));
      } else if (scheme.type === 'openIdConnect') {
        // The IdP mints tokens for every client it serves: without an audience any of them would pass.
        if (!config.jwt)
          throw configError(
            where,
            `scheme ${name} is openIdConnect: set auth.jwt.audience (the \`aud\` of this API's tokens, or any)`,
          );
        const url = scheme.openIdConnectUrl;
        const issuer =
          config.jwt?.issuer ??
          (url.endsWith(DISCOVERY_SUFFIX) ? url.slice(0, -DISCOVERY_SUFFIX.length) : undefined);
        const { jwksUri: _jwksUri, secret: _secret, secretEnv: _secretEnv, ...rest } = config.jwt;
        methods.push(createJwtMethod(withScopes({ ...rest, issuer, discoveryUrl: url }, scopes)));
      } else if (scheme.type === 'apiKey') {
        if (scheme.in !== 'header' && scheme.in !== 'query') {
          throw configError(where, `API keys in ${scheme.in} are not supported (use header or query)`);
        }
        if (!config.apiKey)
          throw configError(where, `scheme ${name} is apiKey: set auth.apiKey (keysFile or keysEnv)`);
        const keyConfig: ApiKeyConfig = { ...config.apiKey, in: scheme.in, name: scheme.name };
        const tableKey = JSON.stringify([config.apiKey.keysFile, config.apiKey.keysEnv]);
        let table = keyTables.get(tableKey);
        if (!table) {
          table = await loadApiKeys(keyConfig, deps.baseDir);
          keyTables.set(tableKey, table);
        }
        methods.push(createApiKeyMethod(keyConfig, table));
      } else if (scheme.type === 'http' && scheme.scheme.toLowerCase() === 'basic') {
        if (!config.basic)
          throw configError(where, `scheme ${name} is http basic: set auth.basic (usersFile)`);
        users ??= await loadHtpasswd(config.basic.usersFile, deps.baseDir);
        methods.push(createBasicMethod(config.basic, users));
      } else {
        throw configError(where, `security scheme type ${describe(scheme)} is not supported`);
      }
    }
    result.alternatives.push(methods);
  }
  return result;
}

function withScopes(config: JwtConfig, scopes: string[]): JwtConfig {
  if (scopes.length === 0) return config;
  return { ...config, scopes: [...new Set([...(config.scopes ?? []), ...scopes])] };
}

function describe(scheme: OpenAPIV3.SecuritySchemeObject): string {
  return scheme.type === 'http' ? `http ${scheme.scheme}` : scheme.type;
}
