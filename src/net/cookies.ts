/**
 * The request's cookies, parsed once per request by one parser (the `cookie` package) and shared
 * by the WAF, `validate` and sticky sessions. Three parsers that split `a=1; a=2` or `x; a=b`
 * differently would let a value reach the application that a policy never read.
 */
import { parseCookie } from 'cookie';

/** A request's cookies as every policy reads them. */
export interface RequestCookies {
  /** Name → value (percent-decoded where it decodes); the first of repeated names wins. */
  readonly values: Readonly<Record<string, string | undefined>>;
  /**
   * What the header holds that `values` does not show: values of repeated names after the first,
   * and segments without `=` (RFC 6265bis reads them as the value of a nameless cookie). An
   * application behind the gateway may read those; the WAF inspects them too. Usually empty.
   */
  readonly hidden: readonly string[];
  /** The Cookie header as received ('' when absent). */
  readonly header: string;
}

const NO_HIDDEN: readonly string[] = Object.freeze([]);
const NONE: RequestCookies = Object.freeze({ values: Object.freeze({}), hidden: NO_HIDDEN, header: '' });

/** Parse a Cookie header (HTTP/2 splits of it are already joined with `; ` by Node). */
export function parseCookies(header: string | string[] | undefined): RequestCookies {
  const text = Array.isArray(header) ? header.join('; ') : header;
  if (!text) return NONE;
  const values = parseCookie(text);
  return {
    values,
    hidden: hasHiddenPairs(text, values) ? hiddenValues(text, values) : NO_HIDDEN,
    header: text,
  };
}

/**
 * The cookies of a request, parsed on first use and kept on `holder` (the RequestContext) so
 * every policy reads the same values.
 */
export function cookiesOf(holder: {
  cookies?: RequestCookies;
  readonly req: { readonly headers: Record<string, string | string[] | undefined> };
}): RequestCookies {
  holder.cookies ??= parseCookies(holder.req.headers.cookie);
  return holder.cookies;
}

/**
 * Whether `header` has pairs the parsed map does not show. Counts `;`-separated segments holding
 * a `=` and non-blank segments without one (a char loop, no allocation); more pairs than names
 * means a name repeats.
 */
function hasHiddenPairs(header: string, values: Record<string, string | undefined>): boolean {
  let pairs = 0;
  let sawEq = false;
  let sawText = false;
  for (let i = 0; i <= header.length; i++) {
    const c = i === header.length ? 59 : header.charCodeAt(i);
    if (c === 59 /* ; */) {
      if (sawEq) pairs++;
      else if (sawText) return true;
      sawEq = false;
      sawText = false;
    } else if (c === 61 /* = */) sawEq = true;
    else if (c !== 32 && c !== 9) sawText = true;
  }
  let names = 0;
  for (const _ in values) names++;
  return pairs !== names;
}

/**
 * The values `parseCookie` leaves out, split the way it splits (at `;`, name and value at the
 * first `=`, trimmed, percent-decoded when that decodes): only run for the rare header that has
 * some, so the common case costs the counting loop above.
 */
function hiddenValues(header: string, values: Record<string, string | undefined>): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const segment of header.split(';')) {
    const eq = segment.indexOf('=');
    if (eq === -1) {
      const bare = segment.trim();
      if (bare) out.push(decode(bare));
      continue;
    }
    const name = segment.slice(0, eq).trim();
    if (values[name] !== undefined && !seen.has(name)) {
      seen.add(name);
      continue;
    }
    out.push(decode(segment.slice(eq + 1).trim()));
  }
  return out;
}

function decode(v: string): string {
  if (!v.includes('%')) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}
