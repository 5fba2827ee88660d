import { type Rule, SCORE, type TargetKind } from '../types.ts';
import { markupAfterBitStrip, XSS } from '../xss.ts';

/** Every target kind but multipart file names: what the event-handler and XML rules inspect. */
const NOT_FILENAMES: readonly TargetKind[] = [
  'path',
  'query',
  'query-name',
  'body',
  'body-name',
  'body-raw',
  'cookie',
  'cookie-name',
  'header',
];

/** A backslash escape: JavaScript octal (`\74` is `<`) or CSS hex (`\3c `, `\006a`). */
const ESCAPE = /\\[0-9a-f]/;
const OCTAL_ESCAPE = /\\([0-3]?[0-7]{1,2})/g;
const CSS_ESCAPE = /\\([0-9a-f]{1,6})\s?/g;

/**
 * Markup or script behind escapes a browser undoes: JavaScript octal escapes in a string
 * (`\74svg o\156load\75…`) and CSS hex escapes in a style (`url(\006a\0061…`). Both
 * readings are tried, since `\74` is `<` to one and `t` to the other.
 */
function markupBehindEscapes(lower: string): boolean {
  if (!ESCAPE.test(lower)) return false;
  const octal = lower.replace(OCTAL_ESCAPE, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  const css = lower.replace(CSS_ESCAPE, (_, h: string) => {
    const c = Number.parseInt(h, 16);
    return c > 0 && c <= 0x10ffff ? String.fromCodePoint(c) : '';
  });
  for (const d of [octal, css]) {
    if (d === lower) continue;
    const l = d.toLowerCase();
    if (
      (l.includes('<') && XSS.DANGEROUS_TAG.test(l)) ||
      XSS.CSS_SCRIPT.test(l) ||
      XSS.scriptScheme(l) ||
      (l.includes('=') && XSS.eventHandler(l))
    )
      return true;
  }
  return false;
}

/**
 * A dialog or eval function called as a tagged template (`alert\`1\``, `[alert\`\`]`), outside a
 * Markdown code span: an even number of backticks before it (`` the `system prompt` is `` closes one).
 */
const TAGGED_DIALOG =
  /(?:^|[^\w.$`])(?:alert|prompt|confirm|eval|print|settimeout|setinterval)\s*`[^`]{0,100}`(?=\s*(?:$|[;)\]},|&+<]))/g;
function taggedDialog(lower: string): boolean {
  TAGGED_DIALOG.lastIndex = 0;
  // Backticks before the match, counted once over the value (matches come in order).
  let n = 0;
  let i = lower.indexOf('`');
  for (let m = TAGGED_DIALOG.exec(lower); m; m = TAGGED_DIALOG.exec(lower)) {
    for (; i !== -1 && i < m.index; i = lower.indexOf('`', i + 1)) n++;
    if (n % 2 === 0) return true;
  }
  return false;
}

/**
 * Internet Explorer's markup-loading extensions: data binding that renders a field as HTML
 * (`datasrc=#x dataformatas=html`), the `<?xml:namespace>` declaration and the HTML+TIME and VML
 * behaviour namespaces (`urn:schemas-microsoft-com:time`), which legacy vectors pair with script.
 */
const IE_MARKUP =
  /\bdataformatas\s*=\s*['"]?html\b|<\?xml:namespace\b|urn:schemas-microsoft-com:(?:time|vml)\b/;

/** Cross-site scripting rules. */
export const XSS_RULES: Rule[] = [
  {
    id: 'xss-tag',
    view: 'lower',
    operator: 'pattern',
    examples: ['<script>alert(1)</script>', '<svg/onload=x>', '<iframe src=x>'],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'HTML tag that runs script or loads a resource (script, svg, iframe, object, meta, base, …)',
    test: (v) => v.lower.includes('<') && XSS.DANGEROUS_TAG.test(v.lower),
  },
  {
    id: 'xss-event-handler',
    view: 'lower',
    operator: 'phrases:html-events+pattern',
    examples: ['" onmouseover="alert(1)', '<x onpointerrawupdate=y>', '/onerror=alert(1)'],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    kinds: NOT_FILENAMES,
    description: 'Event-handler attribute (onload=, onerror=, …) in or injected into a tag',
    test: (v) => v.lower.includes('=') && (XSS.eventHandler(v.lower) || XSS.TAG_WITH_HANDLER.test(v.lower)),
  },
  {
    id: 'xss-script-url',
    view: 'lower',
    operator: 'pattern',
    examples: ['javascript:alert(1)', 'java\tscript:x'],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'javascript:/vbscript:/data:text/html URL, also split by blanks or entities',
    test: (v) => XSS.scriptScheme(v.lower),
  },
  {
    id: 'xss-css',
    view: 'lower',
    operator: 'pattern',
    examples: ['expression(alert(1))', "@import 'x'"],
    prose: true,
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'CSS that runs script (expression(), url(javascript:), -moz-binding, @import)',
    test: (v) => XSS.CSS_SCRIPT.test(v.lower),
  },
  {
    id: 'xss-js-sink',
    view: 'lower',
    operator: 'pattern',
    triggers: { words: ['document', 'window', 'location', 'string'] },
    examples: [
      'document.cookie',
      'alert(1)',
      'window.location',
      'String.fromCharCode(88)',
      'a=alert,a(1)',
      'alert`1`',
    ],
    plain: true,
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description:
      'JavaScript sink or dialog call (document.cookie, window.location, alert(), alert`1`, eval(), …)',
    // Also with comments dropped (`alert/**/(1)`, the SQL view drops `/* */`), and the dialog
    // functions passed or wrapped (`[1].map(alert)`, `(alert)(1)`).
    test: (v) =>
      XSS.jsSink(v.lower) ||
      (v.lower.includes('/*') && XSS.jsSink(v.sql)) ||
      (v.lower.includes('/*') && XSS.DIALOG_REFERENCE.test(v.sql)) ||
      (v.lower.includes('=') && XSS.DIALOG_REFERENCE.test(v.lower)) ||
      (v.lower.includes('`') && taggedDialog(v.lower)),
  },
  {
    id: 'xss-js-obfuscation',
    view: 'sql',
    operator: 'pattern',
    examples: ["top['al'+'ert'](1)", '!![]'],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'JavaScript obfuscation (JSFuck atoms, tagged templates, bracket access on globals)',
    test: (v) => XSS.JS_OBFUSCATION.test(v.sql),
  },
  {
    id: 'xss-xml',
    view: 'lower',
    operator: 'pattern',
    examples: [
      '<!ENTITY x SYSTEM "file:///etc/passwd">',
      '<span datasrc=#i datafld=c dataformatas=html></span>',
      '<?xml:namespace prefix="t" ns="urn:schemas-microsoft-com:time">',
    ],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    kinds: NOT_FILENAMES,
    description:
      'XML namespace, XInclude or external entity declaration, or IE data binding and behaviour namespaces, in a parameter',
    test: (v) =>
      /<|xmlns|entity/.test(v.lower)
        ? XSS.XML_INJECTION.test(v.lower) || IE_MARKUP.test(v.lower)
        : v.lower.includes('urn:') && IE_MARKUP.test(v.lower),
  },
  {
    id: 'xss-ssi',
    view: 'lower',
    operator: 'pattern',
    examples: ['<!--#exec cmd="id"-->'],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Server-side include directive',
    test: (v) => v.lower.includes('<!--') && XSS.SSI.test(v.lower),
  },
  {
    id: 'xss-evasion',
    view: 'decoded',
    operator: 'pattern',
    examples: [
      '+ADw-script+AD4-',
      '\\74svg o\\156load\\75alert\\501\\51\\76',
      '<div style="background:\\0075\\0072\\006c\\0028\'\\006a\\0061\\0076\\0061\\0073\\0063\\0072\\0069\\0070\\0074\\003a x\'\\0029">',
    ],
    family: 'xss',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Markup hidden by spacing, UTF-7, 8-bit stripping, JavaScript octal or CSS hex escapes',
    test: (v) =>
      (v.lower.includes('<') && XSS.SPACED_TAG.test(v.lower)) ||
      (v.lower.includes('+ad') && XSS.UTF7.test(v.lower)) ||
      markupAfterBitStrip(v.decoded) ||
      (v.lower.includes('\\') && markupBehindEscapes(v.lower)),
  },
  {
    id: 'xss-any-tag',
    view: 'lower',
    operator: 'pattern',
    examples: ['<b>x</b>'],
    family: 'xss',
    paranoia: 2,
    score: SCORE.error,
    description: 'Any HTML tag or closing tag',
    test: (v) => /<\/?[a-z][\w:-]{0,30}[\s/>]/.test(v.lower),
  },
];
