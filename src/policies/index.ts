/**
 * THE list of policy kinds. Adding a kind = its folder + one line here; the pipeline, the rule
 * schema of policies/*.yaml and `portcullis validate` all derive from this list. Order here does
 * not matter: hooks run in phase order (src/pipeline/types.ts PHASES).
 */
import type { PolicyKind } from '../pipeline/types.ts';
import { authPolicy } from './auth/auth.ts';
import { cachePolicy } from './cache/cache.ts';
import { compressPolicy } from './compress/compress.ts';
import { corsPolicy } from './cors/cors.ts';
import { headersPolicy } from './headers/headers.ts';
import { ipFilterPolicy } from './ip-filter/ip-filter.ts';
import { rateLimitPolicy } from './rate-limit/rate-limit.ts';
import { stickySessionPolicy } from './sticky-session/sticky-session.ts';
import { validatePolicy } from './validate/validate.ts';
import { wafPolicy } from './waf/waf.ts';

// Each kind's own schema type parameter is erased here: the list is consumed generically.
export const POLICY_KINDS: readonly PolicyKind[] = [
  ipFilterPolicy,
  wafPolicy,
  authPolicy,
  rateLimitPolicy,
  validatePolicy,
  stickySessionPolicy,
  headersPolicy,
  corsPolicy,
  compressPolicy,
  cachePolicy,
] as unknown as readonly PolicyKind[];
