/** Durations in config files: `250ms`, `30s`, `15m`, `1h`, `7d`, or a number of milliseconds. */

/** The accepted text form; schemas use `DURATION_PATTERN.source` as their `pattern`. */
export const DURATION_PATTERN = /^([0-9]+)(ms|s|m|h|d)$/;

/** Milliseconds per unit. */
export const DURATION_UNITS_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `1h` → 3600000; a number is already milliseconds. Throws on any other form. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') return value;
  const m = DURATION_PATTERN.exec(value);
  if (!m) throw new Error(`invalid duration ${JSON.stringify(value)}`);
  return Number(m[1]) * DURATION_UNITS_MS[m[2] as keyof typeof DURATION_UNITS_MS];
}
