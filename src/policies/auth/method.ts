import { readFile } from 'node:fs/promises';
import { ConfigError } from '../../errors.ts';
import type { Identity, RequestContext } from '../../pipeline/types.ts';

/** What one auth method concluded about a request. */
export type AuthOutcome =
  /** The request carries no credentials for this method. */
  | { kind: 'absent' }
  | {
      kind: 'ok';
      identity: Identity;
      /** Headers to set on the upstream request (forwarded claims). */
      headers?: Record<string, string>;
    }
  | {
      kind: 'fail';
      /** 401: bad or unverifiable credentials; 403: authenticated but not allowed (scope, claim). */
      status: 401 | 403;
      /** Machine-readable reason, e.g. `expired`, `insufficient_scope` (the problem's `reason`). */
      reason: string;
      /** Human-readable detail; never echoes the credential. */
      description: string;
      /** The WWW-Authenticate challenge for this failure. */
      challenge: string;
    };

/** One way to authenticate (JWT, API key, basic), built once per route. */
export interface AuthMethod {
  readonly name: Identity['method'];
  /** WWW-Authenticate challenge sent when the request has no credentials at all. */
  readonly challenge: string;
  /** Upstream headers this method may set: client-sent copies are always stripped. */
  readonly upstreamHeaderNames: readonly string[];
  /** Client headers carrying this method's credentials (stripped upstream when `stripCredentials`). */
  readonly credentialHeaderNames: readonly string[];
  authenticate(ctx: RequestContext): AuthOutcome | Promise<AuthOutcome>;
}

/** Quote a WWW-Authenticate parameter value (RFC 9110 quoted-string). */
export function quote(value: string): string {
  return `"${value.replace(/[\\"]/g, '\\$&').replace(/[^\t\x20-\x7e]/g, '')}"`;
}

/** A configuration problem at `path` (JSON pointer in the auth block); the loader names the file. */
export function configError(path: string, message: string): ConfigError {
  return new ConfigError([{ file: '', path, message }]);
}

/**
 * Read a file a policy names (keys, users). A missing or unreadable file is a ConfigError at
 * `pointer` (e.g. `/apiKey/keysFile`), so the load error names the policy file, the line of that
 * field and the path that was tried, not just an errno message.
 */
export async function readReferencedFile(file: string, pointer: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : (code ?? (err as Error).message);
    throw configError(pointer, `cannot read ${file}: ${why}`);
  }
}
