import type { RequestCookies } from '../../net/cookies.ts';
import type { MultipartRejection } from './multipart.ts';

/** Attack families a rule belongs to; exclusions and reports name these. */
export type Family = 'sqli' | 'xss' | 'rce' | 'lfi' | 'rfi' | 'php' | 'java' | 'protocol';

/** Where a value came from; rules may limit themselves to some kinds. */
export type TargetKind =
  | 'path'
  | 'query'
  | 'query-name'
  | 'header'
  | 'cookie'
  | 'cookie-name'
  | 'body'
  | 'body-name'
  | 'body-raw'
  /** A file name in a multipart upload. */
  | 'filename';

/** One inspected value. `key` is what exclusions name (`query:q`, `header:user-agent`, `body:a.b`, `path`). */
export interface Target {
  kind: TargetKind;
  key: string;
  value: string;
}

/** Anomaly score of a rule; 5 = critical (blocks alone at the default threshold). */
export const SCORE = { critical: 5, error: 4, warning: 3, notice: 2 } as const;

/**
 * The normalised forms of one value, computed lazily and at most once: rules ask for the form
 * they need and the cost of the others is never paid.
 */
export interface View {
  readonly target: Target;
  /** Fully decoded: percent (repeated, %u, overlong UTF-8), HTML entities, JS escapes, full-width forms. */
  readonly decoded: string;
  /** `decoded`, lower-cased. */
  readonly lower: string;
  /** `lower` with SQL comments removed (MySQL `/*!` bodies kept) and whitespace collapsed. */
  readonly sql: string;
  /** `lower` with shell evasions undone (quotes inside words, `\x`, `$IFS`, empty expansions, `^`). */
  readonly shell: string;
  /** `decoded` with backslashes as slashes, `./` segments and repeated slashes removed, lower-cased. */
  readonly path: string;
}

/** An attack a rule must catch: a query value, or a value of another kind. */
export type Example = string | { kind: TargetKind; key: string; value: string };

/** The normalised form of a value a rule reads (see View). */
export type ViewName = 'decoded' | 'lower' | 'sql' | 'shell' | 'path';

/**
 * What makes a plain value (letters, digits, blanks, `_ - . , @`; see PLAIN in engine.ts) worth
 * running a rule: the prefilter (plain.ts) is built from the enabled rules' triggers, so a word
 * added to a rule's list always reaches it. Words are cut at blanks, `,` and `@`, and also
 * between `.` and `-` (as `\b` cuts them in a pattern).
 */
export interface Triggers {
  /** Words (lower-case) anywhere in the value. */
  readonly words?: Iterable<string>;
  /** Words that count only as the value's first word (command names). */
  readonly firstWords?: Iterable<string>;
  /**
   * A pattern over one word, for what a list cannot hold (prefixes, extensions, hex); it must need
   * a character other than a letter (it is only tried on words holding one).
   */
  readonly word?: RegExp;
  /** A pattern over the whole lower-cased value (digit runs, `..`, `union` glued to a word). */
  readonly value?: RegExp;
}

/**
 * A detection rule as data: who it is (id, family, paranoia, score), where it looks (kinds),
 * what it reads (view), how it decides (operator: a pattern, a phrase list from ./data, or a
 * tokenizer's verdict) and which words make it worth running (triggers). `test` is the compiled
 * operator.
 */
export interface Rule {
  /** Stable id, shown to clients and in logs (`sqli-tautology`). */
  readonly id: string;
  readonly family: Family;
  /** Lowest paranoia level that enables the rule (1..4). */
  readonly paranoia: 1 | 2 | 3 | 4;
  readonly score: number;
  /** Kinds of target the rule looks at; all kinds when absent. */
  readonly kinds?: readonly TargetKind[];
  /** Short description (docs and logs). */
  readonly description: string;
  /** The view the operator reads. */
  readonly view: ViewName;
  /**
   * How the rule decides, for docs and `portcullis waf-test`: `pattern`, `phrases:<list>` (a
   * data file in ./data), `paths:<list>` (segment-wise path list), `tokenizer:sql`,
   * `grammar:shell`, `decoder`.
   */
  readonly operator: string;
  /** Words that make a plain value worth running the rule; required when `plain` is set. */
  readonly triggers?: Triggers;
  /** Attack values the rule must catch (as a query value), checked by the rule tests. */
  readonly examples: readonly Example[];
  /**
   * True when the rule can match a value made only of letters, digits, blanks, `_`, `-`, `.`,
   * `,` and `@` (a command line, SQL keywords). Other rules are skipped for such values, the
   * common case in API traffic.
   */
  readonly plain?: boolean;
  /**
   * True for a rule that is not `plain` but can still match a plain value with apostrophes
   * (`'--`, `@import 'x'`, `alias -p`). Other rules are skipped for such prose values (`it's fine`).
   */
  readonly prose?: boolean;
  test(view: View): boolean;
}

/** Request-level rule (method, URI form, header anomalies): sees the parts, not single values. */
export interface RequestRule {
  readonly id: string;
  readonly family: Family;
  readonly paranoia: 1 | 2 | 3 | 4;
  readonly score: number;
  readonly description: string;
  test(parts: RequestParts): boolean;
  /**
   * For a rule that judges every header value on its own: the rule also matches when this is true
   * of a non-empty header value (any header, skipped ones included; a repeated header's values
   * joined with `, `). A pure function of the value, so the engine keeps its answer with the last
   * value of each header name and a client repeating its headers is not scanned again. Default:
   * none (`test` alone decides).
   */
  readonly headerValue?: (value: string) => boolean;
}

/** The request as the engine sees it. Header names lower-case. */
export interface RequestParts {
  method: string;
  /** Request target: the canonical path and query (net/target.ts), still percent-encoded. */
  url: string;
  /** Path parameters of the matched route, decoded (judged like query values, key `path`). */
  params?: Readonly<Record<string, string | undefined>> | undefined;
  headers: Record<string, string | string[] | undefined>;
  /** The request's cookies as parsed for every policy; parsed from `headers.cookie` when absent. */
  cookies?: RequestCookies | undefined;
  body?: Buffer | string | undefined;
  /** True when the body was cut at the size cap (only its prefix is inspected). */
  bodyTruncated?: boolean;
}

/** One rule that fired. `target` is the exclusion key of the value, never the value itself. */
export interface Match {
  id: string;
  family: Family;
  score: number;
  target: string;
}

/** Outcome of inspecting one request. */
export interface InspectResult {
  score: number;
  matches: Match[];
  /**
   * The first inspection limit the request went past: more values than `maxValues`, or a value
   * longer than `maxValueBytes`. With onLimit `block` no value rule ran.
   */
  limit?: 'values' | 'valueBytes';
  /** Why a multipart body was rejected (the policy answers 400), when it was. */
  bodyError?: MultipartRejection;
}
