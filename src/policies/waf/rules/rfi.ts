import { type Rule, SCORE } from '../types.ts';

/** Stream wrappers that read local files or run code. */
const WRAPPER =
  /(?:^|[^\w])(?:file|php|phar|expect|glob|data|gopher|dict|jar|zip|zlib|compress\.\w+|ogg|ssh2(?:\.\w+)?|rar|netdoc):\/\/?|\bdata:(?:text|application)\/[\w+-]+;base64,/;

/** A URL whose host is an IP address, or that ends with `?` (the classic include-and-truncate trick). */
const REMOTE_URL =
  /^\s*(?:https?|ftps?):\/\/(?:[^/?#]*@)?(?:\d{1,3}\.){3}\d{1,3}\b|^\s*(?:https?|ftps?):\/\/[^?#\s]{1,300}\?+$/;

/** Remote file inclusion rules. */
export const RFI_RULES: Rule[] = [
  {
    id: 'rfi-wrapper',
    view: 'lower',
    operator: 'pattern',
    examples: ['php://filter/resource=index.php', 'expect://id', 'data:text/html;base64,PHNjcmlwdD4='],
    family: 'rfi',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'query-name', 'body', 'body-name', 'cookie', 'header'],
    description: 'File or code stream wrapper (file://, php://, phar://, expect://, data:…;base64)',
    test: (v) => v.lower.includes(':') && WRAPPER.test(v.lower),
  },
  {
    id: 'rfi-remote-url',
    view: 'lower',
    operator: 'pattern',
    examples: ['http://10.0.0.1/shell.txt', 'http://evil.example/x.txt?'],
    family: 'rfi',
    paranoia: 1,
    score: SCORE.critical,
    kinds: ['query', 'body', 'cookie'],
    description: 'URL parameter pointing at a bare IP address or ending in ? (remote include)',
    test: (v) => v.lower.includes('://') && REMOTE_URL.test(v.lower),
  },
  {
    id: 'rfi-any-url',
    view: 'lower',
    operator: 'pattern',
    examples: ['https://other.example/'],
    family: 'rfi',
    paranoia: 2,
    score: SCORE.warning,
    kinds: ['query', 'body'],
    description: 'Parameter holding an absolute URL to another host',
    test: (v) => /^\s*(?:https?|ftps?):\/\//.test(v.lower),
  },
];
