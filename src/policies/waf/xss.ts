/**
 * XSS detection in the two contexts a reflected value lands in: HTML (tags, attributes, event
 * handlers, URL schemes, CSS) and JavaScript (sinks, obfuscation idioms). Patterns run on the
 * decoded, lower-cased value; the scheme check also on a copy without whitespace and control
 * characters, which browsers ignore inside `java&#9;script:`.
 */

import { HTML_EVENTS } from './lists.ts';

/** Tags that run script, load resources or change how the page is parsed. */
const DANGEROUS_TAG =
  /<\s*\/?\s*(?:[a-z]{0,20}:)?(?:script|svg|iframe|frame|frameset|object|embed|applet|meta|link|base|style|form|isindex|math|img|image|video|audio|source|body|html|input|button|details|marquee|template|noscript|xmp|textarea|title|vmlframe|import|animate|set|xss|plaintext|noembed|layer|ilayer|bgsound|keygen|dialog|portal|select|option)(?:[\s/>]|$)/;

/** Any tag carrying an event handler or a script URL. */
const TAG_WITH_HANDLER = /<[a-z][\w:-]{0,30}[\s/][^>]{0,400}?\bon[a-z]{3,40}\s*=/;

/**
 * An attribute as injected into an existing tag: a real event handler (html-events.txt) or a
 * script-loading attribute after any non-letter (`"onload=`, `/onerror=`, `1onfocus=`); any other
 * `on…=` only after a blank, quote or `;` and glued to its `=` (a browser parses it as an
 * attribute, whatever the name; `online = yes` is prose), so base64 (`…/onafe=`) and signatures (`…51onabcd=`) are data.
 */
const INJECTED_ATTRIBUTE = /(^|[^a-z])(on[a-z]{3,40}|formaction|srcdoc|dynsrc|lowsrc|xlink:href)\s*=/g;
const BEFORE_ATTRIBUTE = /[\s"'`;]/;

function eventHandler(lower: string): boolean {
  INJECTED_ATTRIBUTE.lastIndex = 0;
  for (let m = INJECTED_ATTRIBUTE.exec(lower); m; m = INJECTED_ATTRIBUTE.exec(lower)) {
    const before = m[1] as string;
    const name = m[2] as string;
    if (HTML_EVENTS.has(name)) return true;
    // Another name needs a blank, quote or `;` before it and its `=` glued to it (`onabcdefgh=`).
    const glued = lower.charCodeAt(m.index + m[0].length - 2) > 32;
    if ((before === '' || BEFORE_ATTRIBUTE.test(before)) && name.length >= 5 && glued) return true;
  }
  return false;
}

/** Script-capable URL schemes (checked with whitespace/control characters removed). */
/**
 * A script URL: javascript:, vbscript:, or a data: URL a browser runs as a document or script
 * (HTML, XHTML, XML, SVG, JavaScript; or no type at all, base64) or one holding markup. A data:
 * URL of an image, audio, video, font or PDF (an avatar sent as `data:image/png;base64,…`) runs
 * nothing.
 */
const SCRIPT_SCHEME =
  /(?:java|vb|live|ecma)script:|data:\s*(?:(?:text\/html|application\/xhtml\+xml|image\/svg\+xml|(?:text|application)\/(?:xml|javascript|x-javascript|ecmascript|vbscript))[^,]{0,60};base64|;?base64|text\/html|[^,]{0,60},\s*<)/;

/** CSS that runs script or loads remote behaviour. */
const CSS_SCRIPT =
  /url\s*\(\s*['"]?\s*(?:java|vb)script|expression\s*\(|-moz-binding|behavior\s*:|@import\s*['"(u]/;

/** JavaScript sinks and calls that only an injected script makes. */
const JS_SINK =
  /\b(?:document\s*\.\s*(?:cookie|domain|write(?:ln)?|location|body|createelement|queryselector(?:all)?|getelementsby\w+|getelementbyid)|window\s*\.\s*(?:location|open|name)|location\s*\.\s*(?:href|hash|replace)|string\s*\.\s*fromcharcode|new\s+function\s*\()|(?:^|[^\w.$])(?:alert|prompt|confirm|eval|settimeout|setinterval|atob|btoa|execscript|import)\s*\(/;
/**
 * A dialog function wrapped and called (`(alert)(1)`) or passed as a callback (`[1].map(alert)`):
 * run only when a dialog name is followed by `)` or `,`, which both forms need (a literal start
 * V8 scans for quickly; the alternatives above start anywhere and cost about 2 µs on 1 KiB of prose).
 */
const DIALOG_CALL_GATE = /(?:alert|prompt|confirm|eval|print)\s*[),]/;
const DIALOG_WRAPPED =
  /(?:^|[^\w$.])\(\s*(?:alert|prompt|confirm|eval|print)\s*\)\s*[(`]|\.\s*(?:map|call|apply|bind|find|filter|foreach|some|every|then|catch|reduce)\s*\(\s*(?:alert|prompt|confirm|eval)\s*[,)]/;

/** A JavaScript sink or dialog call (JS_SINK), or a dialog function wrapped or passed (DIALOG_WRAPPED). */
function jsSink(s: string): boolean {
  return JS_SINK.test(s) || (DIALOG_CALL_GATE.test(s) && DIALOG_WRAPPED.test(s));
}

/**
 * A dialog or eval function used as a value: wrapped and called, passed as a callback, or given
 * another name that is then called (`a=alert,a(1)`, `x=eval;x(…)`).
 */
const DIALOG_REFERENCE =
  /(?:^|[^\w$.])([a-z_$][\w$]{0,20})\s*=\s*(?:alert|prompt|confirm|eval|settimeout|setinterval)\s*[,;]\s*\1\s*[(`]|(?:^|[^\w$.])\(\s*(?:alert|prompt|confirm|eval|print)\s*\)\s*[(`]|\.\s*(?:map|call|apply|bind|find|filter|foreach|some|every|then|catch|reduce)\s*\(\s*(?:alert|prompt|confirm|eval)\s*[,)]/;

/** Obfuscation idioms: JSFuck atoms, tagged templates, bracket property access on globals. */
const JS_OBFUSCATION =
  /!!?\s*\[\s*\]|\[\s*\]\s*\)\s*\[|(?:self|top|window|parent|frames|globalthis|document)\s*\)?\s*\[\s*['"/`]|[\w\])]\s*`[^`]{0,200}\$\{|\.\s*(?:call|apply|bind)\s*`|\[\s*['"](?:alert|cookie|constructor|eval|document|\$)/;

/** Server-side include directives. */
const SSI = /<!--\s*#\s*(?:exec|include|echo|set|config|fsize|flastmod|printenv)\b/;

/** XML-borne script and remote loads: namespaces, XInclude, external entities. */
const XML_INJECTION = /!entity\s|<!doctype[^>]{0,200}\[|\bxmlns(?::\w+)?\s*=|\bxi:include\b|<\??import/;

/** A tag name spelled with blanks between its letters (`<f o r m`), which some parsers re-join. */
const SPACED_TAG = /<\s?[a-z](?:\s+[a-z]){2,}(?:\s|>|$)/;

/** UTF-7 encoded angle brackets (`+ADw-`). */
const UTF7 = /\+ad[w4]-/;

// biome-ignore lint/suspicious/noControlCharactersInRegex: browsers skip control characters inside a scheme
const SCHEME_GAPS = /[\s\u0000-\u001f\u007f]+/g;
const EIGHTH_BIT = /[\u0080-\u00ff]/;
const PLAIN_TAG = /<[a-z]{1,20}>/;

function compact(lower: string): string {
  return lower.replace(SCHEME_GAPS, '');
}

/** Markup found after stripping the 8th bit (US-ASCII decoders that do this turn `¼script¾` into `<script>`). */
export function markupAfterBitStrip(decoded: string): boolean {
  if (!EIGHTH_BIT.test(decoded)) return false;
  let s = '';
  for (let i = 0; i < decoded.length; i++) {
    const c = decoded.charCodeAt(i);
    s += String.fromCharCode(c >= 0x80 && c <= 0xff ? c & 0x7f : c);
  }
  return PLAIN_TAG.test(s.toLowerCase()) && !PLAIN_TAG.test(decoded.toLowerCase());
}

export const XSS = {
  DANGEROUS_TAG,
  TAG_WITH_HANDLER,
  eventHandler,
  CSS_SCRIPT,
  JS_SINK,
  jsSink,
  DIALOG_REFERENCE,
  JS_OBFUSCATION,
  SSI,
  XML_INJECTION,
  SPACED_TAG,
  UTF7,
  /** Script scheme anywhere in the value, blanks removed. */
  scriptScheme(lower: string): boolean {
    return lower.includes(':') && SCRIPT_SCHEME.test(compact(lower));
  },
};
