/**
 * Mock mode: a service with `x-portcullis.mock: true` answers each operation from its spec.
 * Everything (which response, which media type, the serialised body) is decided once per
 * route at load; a request gets the same precomputed, frozen response.
 */

import { ProblemError } from '../errors.ts';
import { lazyModule } from '../lazy.ts';
import type { Route } from './types.ts';

/** openapi-sampler, loaded when the first mock route needs a generated example. */
const sampler = lazyModule<typeof import('openapi-sampler')>('openapi-sampler');

/** Header marking a response the gateway made up instead of an upstream. */
export const MOCK_HEADER = 'x-portcullis-mock';

/** What the gateway knows about the request when mocking. */
export interface MockContext {
  params: Record<string, string | undefined>;
  query: Record<string, unknown>;
}

/** A ready-to-send response. */
export interface MockResponse {
  status: number;
  headers: Readonly<Record<string, string>>;
  body: string;
}

/** Answers one route; throws ProblemError('PC_MOCK_NO_EXAMPLE') when the spec gives nothing to answer with. */
export type MockResponder = (ctx: MockContext) => MockResponse;

interface MediaLike {
  example?: unknown;
  examples?: Record<string, { value?: unknown } | undefined>;
  schema?: Record<string, unknown>;
}

interface ResponseLike {
  content?: Record<string, MediaLike | undefined>;
}

const JSON_MEDIA = /^application\/(?:[\w.+-]*\+)?json\b|\/json\b/i;

/**
 * Build the responder of one route. Picks the lowest 2xx response (`2XX` counts as 200, else
 * `default` as 200), prefers application/json, and takes the body from the media `example`,
 * the first of its `examples`, the schema's `example`/`examples`, else a sample generated from
 * the schema. A response without content answers with its status (204 for `2XX`/`default`)
 * and no body. Every response carries `x-portcullis-mock: true`.
 */
export function createMockResponder(route: Route): MockResponder {
  const outcome = precompute(route);
  if ('error' in outcome) {
    const detail = outcome.error;
    return function mockNoExample() {
      throw new ProblemError('PC_MOCK_NO_EXAMPLE', detail);
    };
  }
  const response = Object.freeze({ ...outcome, headers: Object.freeze(outcome.headers) });
  return function mockResponse() {
    return response;
  };
}

function precompute(route: Route): MockResponse | { error: string } {
  const where = `${route.method} ${route.specPath} (${route.operationId})`;
  const responses = (route.operation.responses ?? {}) as Record<string, ResponseLike | undefined>;
  const chosen = chooseResponse(responses);
  if (!chosen) return { error: `${where} declares no 2xx or default response` };
  const headers: Record<string, string> = { [MOCK_HEADER]: 'true' };
  const content = chosen.response.content ?? {};
  const mediaType = chooseMediaType(Object.keys(content));
  if (mediaType === undefined) {
    return { status: chosen.declared ? chosen.status : 204, headers, body: '' };
  }
  const media = content[mediaType] ?? {};
  let value: unknown;
  const found = exampleOf(media);
  if (found.ok) {
    value = found.value;
  } else if (media.schema) {
    try {
      value = sampler().sample(media.schema as Parameters<ReturnType<typeof sampler>['sample']>[0], {
        skipWriteOnly: true,
        quiet: true,
      });
    } catch (err) {
      return {
        error: `${where}: cannot generate a sample from the ${mediaType} schema: ${(err as Error).message}`,
      };
    }
  } else {
    return { error: `${where}: the ${chosen.key} response has no example and no schema for ${mediaType}` };
  }
  const json = JSON_MEDIA.test(mediaType);
  if (!json && typeof value !== 'string' && !mediaType.includes('*')) {
    return { error: `${where}: cannot mock ${mediaType} without a string example` };
  }
  const body = typeof value === 'string' && !json ? value : JSON.stringify(value ?? null);
  headers['content-type'] = mediaType.includes('*')
    ? typeof value === 'string'
      ? 'text/plain; charset=utf-8'
      : 'application/json'
    : mediaType;
  return { status: chosen.status, headers, body };
}

/** The lowest numeric 2xx, then `2XX`, then `default`. */
function chooseResponse(
  responses: Record<string, ResponseLike | undefined>,
): { key: string; status: number; declared: boolean; response: ResponseLike } | null {
  const numeric = Object.keys(responses)
    .filter((k) => /^2\d\d$/.test(k))
    .sort();
  const key =
    numeric[0] ??
    (responses['2XX'] ? '2XX' : responses['2xx'] ? '2xx' : responses.default ? 'default' : undefined);
  if (key === undefined) return null;
  const declared = numeric.length > 0;
  return { key, status: declared ? Number(key) : 200, declared, response: responses[key] ?? {} };
}

/** application/json first, then any JSON type, then the first one listed. */
function chooseMediaType(types: string[]): string | undefined {
  return (
    types.find((t) => t.toLowerCase().split(';')[0]?.trim() === 'application/json') ??
    types.find((t) => JSON_MEDIA.test(t)) ??
    types[0]
  );
}

function exampleOf(media: MediaLike): { ok: true; value: unknown } | { ok: false } {
  if (Object.hasOwn(media, 'example')) return { ok: true, value: media.example };
  for (const ex of Object.values(media.examples ?? {})) {
    if (ex && Object.hasOwn(ex, 'value')) return { ok: true, value: ex.value };
  }
  const schema = media.schema;
  if (schema && Object.hasOwn(schema, 'example')) return { ok: true, value: schema.example };
  if (schema && Array.isArray(schema.examples) && schema.examples.length > 0) {
    return { ok: true, value: schema.examples[0] };
  }
  return { ok: false };
}
