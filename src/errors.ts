/**
 * The error catalogue: every error a client or operator can see, with its stable code.
 * Clients receive these as RFC 9457 problem+json (see problem.ts); tests assert `code` and
 * `status`, never the prose. docs/errors.md lists the same table (a test keeps them in step).
 */

/** Base URI of every problem `type` the gateway emits. */
export const PROBLEM_BASE = 'https://portcullis.dev/problems/';

export interface ErrorSpec {
  /** HTTP status sent to the client. */
  status: number;
  /** Last segment of the problem `type` URI. */
  type: string;
  /** Short, human-readable summary (the problem `title`). */
  title: string;
}

/** Every client-facing error code, with its status and problem type. */
export const ERRORS = {
  PC_ROUTE_NOT_FOUND: { status: 404, type: 'route-not-found', title: 'No route matches this request' },
  PC_METHOD_NOT_ALLOWED: {
    status: 405,
    type: 'method-not-allowed',
    title: 'Method not allowed on this path',
  },
  PC_BODY_TOO_LARGE: { status: 413, type: 'body-too-large', title: 'Request body too large' },
  PC_BAD_REQUEST: { status: 400, type: 'bad-request', title: 'Malformed request' },
  PC_BAD_TARGET: {
    status: 400,
    type: 'bad-request-target',
    title: 'Ambiguous or malformed request target',
  },
  PC_UNSUPPORTED_ENCODING: {
    status: 415,
    type: 'unsupported-content-encoding',
    title: 'Request body encoding not accepted',
  },
  PC_MISDIRECTED: { status: 421, type: 'misdirected-request', title: 'Host not served here' },
  PC_UNAUTHORIZED: { status: 401, type: 'unauthorized', title: 'Authentication required or failed' },
  PC_FORBIDDEN: { status: 403, type: 'forbidden', title: 'Not allowed for this caller' },
  PC_IP_DENIED: { status: 403, type: 'ip-denied', title: 'Client address not allowed' },
  PC_WAF_BLOCKED: { status: 403, type: 'waf-blocked', title: 'Request blocked by the WAF' },
  PC_WAF_LIMIT: {
    status: 403,
    type: 'waf-limit-exceeded',
    title: 'Request exceeds what the WAF is configured to inspect',
  },
  PC_WAF_BODY_LIMIT: {
    status: 413,
    type: 'waf-body-limit-exceeded',
    title: 'Request body longer than the WAF is configured to inspect',
  },
  PC_RATE_LIMITED: { status: 429, type: 'rate-limited', title: 'Too many requests' },
  PC_VALIDATION_FAILED: {
    status: 400,
    type: 'validation-failed',
    title: 'Request does not match the API contract',
  },
  PC_STORE_UNAVAILABLE: { status: 503, type: 'store-unavailable', title: 'State store unavailable' },
  PC_UPSTREAM_UNAVAILABLE: { status: 503, type: 'no-healthy-upstream', title: 'No healthy upstream' },
  PC_UPSTREAM_OVERLOADED: {
    status: 503,
    type: 'upstream-overloaded',
    title: 'Upstream at its concurrency limit',
  },
  PC_UPSTREAM_ERROR: { status: 502, type: 'upstream-error', title: 'Upstream connection failed' },
  PC_UPSTREAM_TIMEOUT: { status: 504, type: 'upstream-timeout', title: 'Upstream timed out' },
  PC_SERVICE_WITHHELD: {
    status: 503,
    type: 'service-withheld',
    title: 'Service not available: its configuration was rejected',
  },
  PC_SHUTTING_DOWN: { status: 503, type: 'shutting-down', title: 'Gateway is shutting down' },
  PC_REQUEST_TIMEOUT: { status: 408, type: 'request-timeout', title: 'Request timed out' },
  PC_HEADERS_TOO_LARGE: {
    status: 431,
    type: 'headers-too-large',
    title: 'Request header fields too large',
  },
  PC_WEBSOCKET_REFUSED: {
    status: 403,
    type: 'websocket-refused',
    title: 'WebSocket upgrades are not allowed here',
  },
  PC_WEBSOCKET_HANDSHAKE: { status: 400, type: 'websocket-handshake', title: 'Invalid WebSocket handshake' },
  PC_WEBSOCKET_VERSION: {
    status: 426,
    type: 'websocket-version',
    title: 'Unsupported WebSocket version (13 is supported)',
  },
  PC_MOCK_NO_EXAMPLE: { status: 501, type: 'mock-no-example', title: 'No example to mock this operation' },
  PC_INTERNAL: { status: 500, type: 'internal', title: 'Internal gateway error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** A request was rejected. Thrown by any phase; rendered once, in problem.ts. */
export class ProblemError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra headers for the response (e.g. Retry-After, WWW-Authenticate). */
  readonly headers: Record<string, string>;
  /** Extra problem members (RFC 9457 extensions); never upstream addresses or stacks. */
  readonly extensions: Record<string, unknown>;
  /** Leave `instance` (the request path) out of the body, e.g. when the path is the attack. Default false. */
  readonly omitInstance: boolean;

  constructor(
    code: ErrorCode,
    detail?: string,
    options: {
      headers?: Record<string, string>;
      extensions?: Record<string, unknown>;
      omitInstance?: boolean;
      cause?: unknown;
    } = {},
  ) {
    super(detail ?? ERRORS[code].title, { cause: options.cause });
    this.name = 'ProblemError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
    this.omitInstance = options.omitInstance ?? false;
  }
}

/** One problem found while loading configuration: names the file, the field and what was expected. */
export interface ConfigIssue {
  file: string;
  /** 1-based line, where known. */
  line?: number;
  /** JSON pointer-like path of the field, e.g. `/x-portcullis/loadBalancing`. */
  path: string;
  message: string;
}

/** Loading configuration (gateway.yaml, specs, policies) failed; nothing of it was applied. */
export class ConfigError extends Error {
  readonly code = 'PC_CONFIG_INVALID' as const;
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[], options?: { cause?: unknown }) {
    super(issues.map(formatIssue).join('\n'), options);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** `file:line: path: message`, the form editors and CI logs link to. */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line ? `${issue.file}:${issue.line}` : issue.file;
  return `${where}: ${issue.path || '/'}: ${issue.message}`;
}
