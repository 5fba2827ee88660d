import { describe, expect, it } from 'vitest';
import { ProblemError } from '../errors.ts';
import { createMockResponder, MOCK_HEADER } from './mock.ts';
import type { OperationObject, Route } from './types.ts';

function route(responses: Record<string, unknown>): Route {
  return {
    service: 'svc',
    operationId: 'op',
    method: 'GET',
    specPath: '/things/{id}',
    publicPath: '/svc/things/:id',
    tags: [],
    operation: { operationId: 'op', responses } as OperationObject,
  };
}

const CTX = { params: { id: '1' }, query: {} };
const json = (media: Record<string, unknown>, status = '200') => ({
  [status]: { description: 'ok', content: { 'application/json': media } },
});

describe('createMockResponder bodies', () => {
  it.each([
    ['the media example', { example: { id: 1, name: 'Rex' } }, { id: 1, name: 'Rex' }],
    [
      'the first of the media examples',
      { examples: { first: { summary: 'one', value: { id: 2 } }, second: { value: { id: 3 } } } },
      { id: 2 },
    ],
    [
      'the media example over the schema example',
      { example: { id: 4 }, schema: { type: 'object', example: { id: 5 } } },
      { id: 4 },
    ],
    ['the schema example', { schema: { type: 'object', example: { id: 6 } } }, { id: 6 }],
    ['the first of the schema examples (3.1)', { schema: { type: 'integer', examples: [7, 8] } }, 7],
    ['an explicit null example', { example: null, schema: { type: 'object', example: { id: 9 } } }, null],
    [
      'a sample generated from the schema',
      {
        schema: {
          type: 'object',
          required: ['id', 'name'],
          properties: {
            id: { type: 'integer', minimum: 10 },
            name: { type: 'string', enum: ['Rex', 'Tom'] },
            secret: { type: 'string', writeOnly: true },
          },
        },
      },
      { id: 10, name: 'Rex' },
    ],
  ])('answers with %s', (_why, media, expected) => {
    const res = createMockResponder(route(json(media)))(CTX);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers[MOCK_HEADER]).toBe('true');
    expect(JSON.parse(res.body)).toEqual(expected);
  });

  it('returns the same precomputed response on every call', () => {
    const respond = createMockResponder(route(json({ example: { id: 1 } })));
    expect(respond(CTX)).toBe(respond({ params: { id: '2' }, query: { a: 'b' } }));
  });
});

describe('createMockResponder status and media type', () => {
  it('picks the lowest 2xx response', () => {
    const res = createMockResponder(
      route({
        '202': { description: 'later', content: { 'application/json': { example: 'later' } } },
        '201': { description: 'made', content: { 'application/json': { example: 'made' } } },
        default: { description: 'error', content: { 'application/json': { example: 'err' } } },
      }),
    )(CTX);
    expect(res).toMatchObject({ status: 201, body: '"made"' });
  });

  it('falls back to default, answered as 200', () => {
    const res = createMockResponder(
      route({
        '404': { description: 'nope', content: { 'application/json': { example: 'nope' } } },
        default: { description: 'any', content: { 'application/json': { example: { ok: true } } } },
      }),
    )(CTX);
    expect(res).toMatchObject({ status: 200, body: '{"ok":true}' });
  });

  it('answers a response without content with its status and no body', () => {
    const res = createMockResponder(
      route({ '204': { description: 'gone' }, '404': { description: 'nope' } }),
    )(CTX);
    expect(res).toEqual({ status: 204, headers: { [MOCK_HEADER]: 'true' }, body: '' });
  });

  it('answers a content-less default as 204', () => {
    expect(createMockResponder(route({ default: { description: 'done' } }))(CTX).status).toBe(204);
  });

  it('prefers application/json over other media types', () => {
    const res = createMockResponder(
      route({
        '200': {
          description: 'ok',
          content: {
            'application/xml': { example: '<pet/>' },
            'application/json': { example: { pet: true } },
          },
        },
      }),
    )(CTX);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.body).toBe('{"pet":true}');
  });

  it('sends a string example of a text media type verbatim', () => {
    const res = createMockResponder(
      route({ '200': { description: 'ok', content: { 'text/csv': { example: 'a,b\n1,2\n' } } } }),
    )(CTX);
    expect(res.headers['content-type']).toBe('text/csv');
    expect(res.body).toBe('a,b\n1,2\n');
  });

  it('serialises application/problem+json and other +json types as JSON', () => {
    const res = createMockResponder(
      route({
        '200': { description: 'ok', content: { 'application/vnd.api+json': { example: { data: [] } } } },
      }),
    )(CTX);
    expect(res.headers['content-type']).toBe('application/vnd.api+json');
    expect(res.body).toBe('{"data":[]}');
  });
});

describe('createMockResponder without anything to answer with', () => {
  it.each([
    ['no example and no schema', json({})],
    [
      'only error responses',
      { '404': { description: 'nope', content: { 'application/json': { example: 'x' } } } },
    ],
    [
      'an XML schema without a string example',
      { '200': { description: 'ok', content: { 'application/xml': { schema: { type: 'object' } } } } },
    ],
  ])('is created, then throws PC_MOCK_NO_EXAMPLE (501) per request: %s', (_why, responses) => {
    const respond = createMockResponder(route(responses));
    let thrown: unknown;
    try {
      respond(CTX);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ProblemError);
    expect(thrown).toMatchObject({ code: 'PC_MOCK_NO_EXAMPLE', status: 501 });
    expect((thrown as Error).message).toContain('GET /things/{id} (op)');
  });
});
