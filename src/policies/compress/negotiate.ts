/**
 * Content-coding negotiation (RFC 9110 §12.5.3): which of the route's encodings, if any, answers an
 * `Accept-Encoding` request header.
 */

/** The encodings the gateway can produce, by their HTTP names. */
export const ENCODINGS = ['br', 'zstd', 'gzip'] as const;
export type Encoding = (typeof ENCODINGS)[number];

/** A q-value: 0 to 1 with at most three decimals (RFC 9110 §12.4.2). */
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * Pick the encoding for an `Accept-Encoding` value, or undefined for none (identity):
 * - no header at all: identity (a client that says nothing gets the body as the upstream sent it);
 * - each encoding's weight is its own q, else that of `*`, else 0 (not acceptable); `x-gzip` counts
 *   as `gzip`; names are case-insensitive; an entry with a malformed q is ignored;
 * - the highest weight above 0 wins; equal weights go by `preferred` (the route's `encodings` order);
 * - identity is always acceptable as a fallback (RFC 9110: unless excluded), but wins over an
 *   accepted encoding only when the client lists it with a strictly higher weight, e.g.
 *   `gzip;q=0.5, identity`; an unlisted identity has no preference of its own.
 */
export function negotiate(header: string | undefined, preferred: readonly Encoding[]): Encoding | undefined {
  if (header === undefined) return undefined;
  let star: number | undefined;
  let identity: number | undefined;
  const q = new Map<string, number>();
  for (const part of header.split(',')) {
    const semi = part.indexOf(';');
    const name = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    if (semi !== -1) {
      const w = qOf(part.slice(semi + 1));
      if (w === undefined) continue;
      weight = w;
    }
    const key = name === 'x-gzip' ? 'gzip' : name;
    if (key === '*') star = weight;
    else if (key === 'identity') identity = weight;
    // The first occurrence counts when a name repeats.
    else if (!q.has(key)) q.set(key, weight);
  }
  let best: Encoding | undefined;
  let bestWeight = 0;
  for (const enc of preferred) {
    const w = q.get(enc) ?? star ?? 0;
    if (w > bestWeight) {
      best = enc;
      bestWeight = w;
    }
  }
  if (best === undefined) return undefined;
  return identity !== undefined && identity > bestWeight ? undefined : best;
}

/** The q parameter of an Accept-Encoding entry's parameters; undefined when malformed. */
function qOf(params: string): number | undefined {
  let weight = 1;
  for (const p of params.split(';')) {
    const eq = p.indexOf('=');
    if (eq === -1) {
      if (p.trim() === '') continue;
      return undefined;
    }
    if (p.slice(0, eq).trim().toLowerCase() !== 'q') continue;
    const v = p.slice(eq + 1).trim();
    if (!QVALUE.test(v)) return undefined;
    weight = Number(v);
  }
  return weight;
}
