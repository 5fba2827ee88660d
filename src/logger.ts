import { pino } from 'pino';

/** The logger type every module takes (pino's). */
export type Logger = pino.Logger;

/**
 * Credential-bearing fields blanked wherever they appear in a log entry: request and response
 * headers (Authorization, Cookie, Set-Cookie, API-key headers) of any logged request, error or
 * upstream call. The access log never logs headers; this guards every other line.
 */
export const REDACT_PATHS = [
  'authorization',
  'cookie',
  'password',
  'token',
  'apiKey',
  'api_key',
  '["x-api-key"]',
  '["set-cookie"]',
  '["proxy-authorization"]',
  '*.authorization',
  '*.cookie',
  '*["set-cookie"]',
  '*["proxy-authorization"]',
  '*["x-api-key"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  '*.headers["proxy-authorization"]',
  '*.headers["x-api-key"]',
];

/**
 * Create the process logger: JSON lines on stdout at `level` (default info), credentials
 * redacted (REDACT_PATHS), request objects logged as method and path only (a query string may
 * carry an API key). `destination` defaults to stdout (tests pass a capture stream).
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { name: 'portcullis' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: { req: serializeRequest, err: pino.stdSerializers.err },
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A request as logged (Fastify's error logs): no headers, no query. */
function serializeRequest(req: { method?: string; url?: string; ip?: string; id?: unknown }): object {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return { method: req.method, path: q === -1 ? url : url.slice(0, q), clientIp: req.ip };
}
