/**
 * The WAF's default inspection limits, apart from the engine so the `waf` kind's schema can name
 * them without loading the engine and its rules (loaded only when a route uses the WAF).
 */

/** Default `maxValues`: values inspected in one request (names and values of every kind together). */
export const DEFAULT_MAX_VALUES = 4096;
/** Default `maxValueBytes`: the longest single value inspected. */
export const DEFAULT_MAX_VALUE_BYTES = 64 * 1024;
