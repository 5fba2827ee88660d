/**
 * A bounded memo for per-request look-ups keyed by a short string (client address, client key):
 * two generations, the current one filled until `size`, then it becomes the old one (hits there
 * move back). Recent keys stay cached; a flood of distinct keys costs at most 2 × `size` entries.
 * `compute` must be pure: a value may be computed again after it was dropped.
 */
export function createMemo<V>(size: number, compute: (key: string) => V): (key: string) => V {
  let current = new Map<string, V>();
  let old = new Map<string, V>();
  return function memo(key) {
    let value = current.get(key);
    if (value !== undefined || current.has(key)) return value as V;
    value = old.has(key) ? (old.get(key) as V) : compute(key);
    if (current.size >= size) {
      old = current;
      current = new Map();
    }
    current.set(key, value);
    return value;
  };
}
