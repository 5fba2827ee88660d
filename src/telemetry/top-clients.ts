/**
 * The clients with the most rejected authentication attempts lately, for a Prometheus gauge that
 * names them without unbounded label cardinality: at most `tracked` clients are counted (the least
 * recently seen is dropped when full: O(1), Map order), counts age out in two generations of
 * `windowMs` (a client that stopped guessing disappears after one to two windows), and a scrape
 * exports only the `top` highest counts.
 */

/** Clients counted at once. */
export const TOP_CLIENTS_TRACKED = 1024;
/** Clients exported per scrape. */
export const TOP_CLIENTS_EXPORTED = 10;
/** One generation; counts cover the last one to two of them. */
export const TOP_CLIENTS_WINDOW_MS = 5 * 60_000;

export class TopClients {
  private current = new Map<string, number>();
  private previous = new Map<string, number>();
  private rotatedAt: number;
  private readonly tracked: number;
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(opts: { tracked?: number; windowMs?: number; now?: () => number } = {}) {
    this.tracked = opts.tracked ?? TOP_CLIENTS_TRACKED;
    this.windowMs = opts.windowMs ?? TOP_CLIENTS_WINDOW_MS;
    this.now = opts.now ?? Date.now;
    this.rotatedAt = this.now();
  }

  /** Count one rejected attempt of `client`. */
  add(client: string): void {
    this.rotate();
    const n = this.current.get(client);
    if (n !== undefined)
      this.current.delete(client); // re-inserted last: most recently seen
    else if (this.current.size >= this.tracked) {
      const oldest = this.current.keys().next().value as string;
      this.current.delete(oldest);
    }
    this.current.set(client, (n ?? 0) + 1);
  }

  /** The `n` clients with the most attempts over both generations, highest first. */
  top(n: number = TOP_CLIENTS_EXPORTED): Array<[client: string, attempts: number]> {
    this.rotate();
    const sums = new Map(this.previous);
    for (const [client, count] of this.current) sums.set(client, (sums.get(client) ?? 0) + count);
    return [...sums].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, n);
  }

  private rotate(): void {
    const now = this.now();
    if (now - this.rotatedAt < this.windowMs) return;
    // Two windows without a rotation: both generations are stale.
    this.previous = now - this.rotatedAt >= 2 * this.windowMs ? new Map() : this.current;
    this.current = new Map();
    this.rotatedAt = now;
  }
}
