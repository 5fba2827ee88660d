import type { RequestRule, Rule } from '../types.ts';
import { JAVA_RULES } from './java.ts';
import { LFI_RULES } from './lfi.ts';
import { PHP_RULES } from './php.ts';
import { PROTOCOL_REQUEST_RULES, PROTOCOL_RULES } from './protocol.ts';
import { RCE_RULES } from './rce.ts';
import { RFI_RULES } from './rfi.ts';
import { SQLI_RULES } from './sqli.ts';
import { XSS_RULES } from './xss.ts';

/** Every value rule, in the order they run. */
export const RULES: readonly Rule[] = [
  ...PROTOCOL_RULES,
  ...LFI_RULES,
  ...RFI_RULES,
  ...RCE_RULES,
  ...PHP_RULES,
  ...JAVA_RULES,
  ...XSS_RULES,
  ...SQLI_RULES,
];

/** Every request-level rule. */
export const REQUEST_RULES: readonly RequestRule[] = [...PROTOCOL_REQUEST_RULES];
