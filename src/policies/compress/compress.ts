/**
 * The `compress` policy: compresses response bodies with br, zstd or gzip, negotiated from the
 * request's Accept-Encoding, as a response stage (pipeline/response.ts) after the header policies
 * and before the cache store.
 *
 * What is compressed: answers with a body (not 1xx, 204, 205, 206, 304, not a Content-Range), no
 * Content-Encoding of their own, a Content-Type in `types`, no `Cache-Control: no-transform`, and a
 * Content-Length of at least `minBytes`. A body of unknown length (chunked) is compressed whatever
 * its size, as nginx's gzip_min_length does: waiting to learn its size would hold back the start of
 * a streamed body. Such bodies are flushed after every upstream chunk (Z_SYNC_FLUSH,
 * BROTLI_OPERATION_FLUSH, ZSTD_e_flush), so an event stream's events reach the client as they come.
 *
 * On a compressed answer: Content-Encoding is set; Content-Length, Content-MD5, Digest,
 * Content-Digest, Repr-Digest and Accept-Ranges are dropped (they describe the uncompressed bytes);
 * a strong ETag becomes weak (`W/"..."`, still matching the upstream's tag under the weak
 * comparison If-None-Match uses). Every answer of the route, compressed or not, gets
 * `Vary: Accept-Encoding` merged into its Vary. HEAD answers get the headers the GET would get.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { type Static, Type as T } from '@sinclair/typebox';
import { createMemo } from '../../pipeline/memo.ts';
import {
  addResponseStage,
  RESPONSE_STAGE_ORDER,
  type ResponseHead,
  type ResponseStage,
} from '../../pipeline/response.ts';
import type { Decision, PolicyKind } from '../../pipeline/types.ts';
import { createTypeMatcher, DEFAULT_TYPES, MEDIA_PATTERN } from './media-types.ts';
import { ENCODINGS, type Encoding, negotiate } from './negotiate.ts';

export const DEFAULT_ENCODINGS: readonly Encoding[] = Object.freeze(['br', 'zstd', 'gzip']);
export const DEFAULT_MIN_BYTES = 1024;
export const DEFAULT_GZIP_LEVEL = 6;
export const DEFAULT_BROTLI_QUALITY = 3;
export const DEFAULT_ZSTD_LEVEL = 3;
/** Brotli window: 512 KiB (ngx_brotli's default), which bounds each compressor's memory. */
const BROTLI_WINDOW_BITS = 19;
/** Zstandard window: 512 KiB too (level 3 would take 2 MiB on a large body). */
const ZSTD_WINDOW_LOG = 19;
/** Distinct Accept-Encoding values remembered per route (browsers and clients send few). */
const NEGOTIATION_MEMO = 256;
/** Headers that describe the uncompressed bytes: wrong once the body is compressed. */
const DROP_WHEN_COMPRESSED = [
  'content-length',
  'content-md5',
  'digest',
  'content-digest',
  'repr-digest',
  'accept-ranges',
];
const NO_TRANSFORM = /(?:^|[\s,])no-transform(?:$|[\s,;=])/i;

/** `compress` config: response compression. */
export const CompressSchema = T.Object(
  {
    mode: T.Optional(
      T.Union([T.Literal('enforce'), T.Literal('dry-run')], {
        description:
          'enforce compresses; dry-run compresses nothing and records which encoding each request would get. Default enforce.',
      }),
    ),
    encodings: T.Optional(
      T.Array(T.Union(ENCODINGS.map((e) => T.Literal(e))), {
        minItems: 1,
        uniqueItems: true,
        default: [...DEFAULT_ENCODINGS],
        description:
          'Encodings offered, most preferred first: among those the client weighs equally (Accept-Encoding q-values), the first listed wins. One or more of br, zstd, gzip. Default [br, zstd, gzip].',
      }),
    ),
    minBytes: T.Optional(
      T.Integer({
        minimum: 0,
        default: DEFAULT_MIN_BYTES,
        description:
          'Bodies whose Content-Length is below this are sent as they are (compression would save little or grow them). Bodies of unknown length (chunked, event streams) are always compressed. Default 1024.',
      }),
    ),
    types: T.Optional(
      T.Array(T.String({ pattern: MEDIA_PATTERN }), {
        minItems: 1,
        default: [...DEFAULT_TYPES],
        description:
          'Media types compressed (by Content-Type, parameters ignored): `type/subtype`, `type/*`, `type/*+suffix`, with `*` allowed as type (`*/*+json`). Default: text/*, JSON (incl. +json and NDJSON), JavaScript, XML (incl. +xml, SVG), YAML, form data, GraphQL, WebAssembly, uncompressed fonts (TTF, OTF, EOT), BMP and ICO images.',
      }),
    ),
    levels: T.Optional(
      T.Object(
        {
          br: T.Optional(
            T.Integer({
              minimum: 0,
              maximum: 11,
              default: DEFAULT_BROTLI_QUALITY,
              description: 'Brotli quality (0-11). Default 3.',
            }),
          ),
          zstd: T.Optional(
            T.Integer({
              minimum: 1,
              maximum: 19,
              default: DEFAULT_ZSTD_LEVEL,
              description: 'Zstandard level (1-19). Default 3.',
            }),
          ),
          gzip: T.Optional(
            T.Integer({
              minimum: 1,
              maximum: 9,
              default: DEFAULT_GZIP_LEVEL,
              description: 'gzip level (1-9). Default 6.',
            }),
          ),
        },
        {
          additionalProperties: false,
          description:
            'Compression level per encoding: higher is smaller and costs more CPU per request. Defaults: br 3, zstd 3, gzip 6 (fast levels for dynamic answers: on a 10 KB JSON body brotli 4 saves 3% more bytes for twice the CPU of 3).',
        },
      ),
    ),
  },
  {
    additionalProperties: false,
    description: 'Compress response bodies (br, zstd, gzip) negotiated from Accept-Encoding.',
  },
);

export type CompressConfig = Static<typeof CompressSchema>;

/** The `compress` kind; runs with the header policies and adds its response stage. */
export const compressPolicy: PolicyKind<typeof CompressSchema> = {
  name: 'compress',
  phase: 'headers',
  schema: CompressSchema,
  create(config) {
    const encodings = config.encodings ?? DEFAULT_ENCODINGS;
    const choose = createMemo(NEGOTIATION_MEMO, (header) => negotiate(header, encodings) ?? null);
    const chosen = (value: string | string[] | undefined): Encoding | undefined => {
      if (value === undefined) return undefined;
      return choose(typeof value === 'string' ? value : value.join(',')) ?? undefined;
    };

    if (config.mode === 'dry-run') {
      const decisions = new Map<string, Decision>();
      for (const enc of [...encodings, 'identity']) {
        decisions.set(enc, {
          policy: 'compress',
          outcome: 'allow',
          reason: 'dry-run',
          detail: { encoding: enc },
        });
      }
      return function compressDryRun(ctx) {
        const enc = chosen(ctx.req.headers['accept-encoding']) ?? 'identity';
        ctx.decisions.push(decisions.get(enc) as Decision);
      };
    }

    const stage = createCompressStage(config, chosen);
    return function compress(ctx) {
      addResponseStage(ctx, stage);
    };
  },
};

/** The response stage of one route: shared by its requests, it keeps no per-request state. */
function createCompressStage(
  config: CompressConfig,
  chosen: (acceptEncoding: string | string[] | undefined) => Encoding | undefined,
): ResponseStage {
  const minBytes = config.minBytes ?? DEFAULT_MIN_BYTES;
  const listed = createTypeMatcher(config.types ?? DEFAULT_TYPES);
  const gzipLevel = config.levels?.gzip ?? DEFAULT_GZIP_LEVEL;
  const brQuality = config.levels?.br ?? DEFAULT_BROTLI_QUALITY;
  const zstdLevel = config.levels?.zstd ?? DEFAULT_ZSTD_LEVEL;

  /** A compressor; `streaming` bodies (unknown length) are flushed after every chunk written. */
  function encoder(enc: Encoding, length: number | undefined): Duplex {
    const streaming = length === undefined;
    const c = zlib.constants;
    if (enc === 'gzip') {
      return zlib.createGzip({ level: gzipLevel, flush: streaming ? c.Z_SYNC_FLUSH : c.Z_NO_FLUSH });
    }
    if (enc === 'br') {
      const params: Record<number, number> = {
        [c.BROTLI_PARAM_QUALITY]: brQuality,
        [c.BROTLI_PARAM_MODE]: c.BROTLI_MODE_TEXT,
        [c.BROTLI_PARAM_LGWIN]: BROTLI_WINDOW_BITS,
      };
      if (length !== undefined) params[c.BROTLI_PARAM_SIZE_HINT] = length;
      return zlib.createBrotliCompress({
        flush: streaming ? c.BROTLI_OPERATION_FLUSH : c.BROTLI_OPERATION_PROCESS,
        params,
      });
    }
    return zlib.createZstdCompress({
      flush: streaming ? c.ZSTD_e_flush : c.ZSTD_e_continue,
      // A known size lets zstd size its tables to the body: half the CPU on a 10 KB body.
      ...(length === undefined ? {} : { pledgedSrcSize: length }),
      params: { [c.ZSTD_c_compressionLevel]: zstdLevel, [c.ZSTD_c_windowLog]: ZSTD_WINDOW_LOG },
    });
  }

  return {
    name: 'compress',
    order: RESPONSE_STAGE_ORDER.compress,
    onHead(head: ResponseHead): Duplex | undefined {
      const h = head.headers;
      addVary(h);
      const status = head.status;
      if (status === 304) {
        if (holdsCompressed(head, chosen)) weakenEtag(h);
        return undefined;
      }
      if (status < 200 || status === 204 || status === 205 || status === 206) return undefined;
      if (h['content-range'] !== undefined) return undefined;
      const ce = h['content-encoding'];
      if (ce !== undefined && !isIdentity(ce)) return undefined;
      const ct = h['content-type'];
      if (ct === undefined || !listed(Array.isArray(ct) ? String(ct[0]) : String(ct))) return undefined;
      const cc = h['cache-control'];
      if (cc !== undefined && NO_TRANSFORM.test(Array.isArray(cc) ? cc.join(',') : String(cc)))
        return undefined;
      const cl = h['content-length'];
      const length = cl === undefined ? undefined : Number(cl);
      if (length !== undefined && length < minBytes) return undefined;
      const enc = chosen(head.requestHeaders['accept-encoding']);
      if (!enc) return undefined;
      for (const name of DROP_WHEN_COMPRESSED) delete h[name];
      h['content-encoding'] = enc;
      weakenEtag(h);
      // HEAD: the headers of the GET, no body to compress.
      if (head.method === 'HEAD') return undefined;
      return encoder(enc, length);
    },
  };
}

/** Merge `Accept-Encoding` into Vary (unless it is there already, or Vary is `*`). */
function addVary(h: OutgoingHttpHeaders): void {
  const vary = h.vary;
  if (vary === undefined || vary === '') {
    h.vary = 'Accept-Encoding';
    return;
  }
  const value = Array.isArray(vary) ? vary.join(', ') : String(vary);
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t === '*' || t === 'accept-encoding') return;
  }
  h.vary = `${value}, Accept-Encoding`;
}

/**
 * Whether a 304 refreshes a compressed copy, so that its tag must be the weak one that copy has:
 * when the client validates with If-None-Match, whether it sent the weak form of the upstream's
 * tag; otherwise whether its Accept-Encoding would get it a compressed answer.
 */
function holdsCompressed(
  head: ResponseHead,
  chosen: (acceptEncoding: string | string[] | undefined) => Encoding | undefined,
): boolean {
  const etag = head.headers.etag;
  if (typeof etag !== 'string' || !etag.startsWith('"')) return false;
  const inm = head.requestHeaders['if-none-match'];
  if (inm !== undefined) return (Array.isArray(inm) ? inm.join(',') : inm).includes(`W/${etag}`);
  return chosen(head.requestHeaders['accept-encoding']) !== undefined;
}

/** A strong ETag becomes weak: the compressed bytes are not the upstream's bytes. */
function weakenEtag(h: OutgoingHttpHeaders): void {
  const etag = h.etag;
  if (typeof etag === 'string' && etag.startsWith('"')) h.etag = `W/${etag}`;
}

function isIdentity(ce: string | number | string[]): boolean {
  const v = Array.isArray(ce) ? ce.join(',') : String(ce);
  return v.trim().toLowerCase() === 'identity' || v.trim() === '';
}
