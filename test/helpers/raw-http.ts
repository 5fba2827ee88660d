import { connect } from 'node:net';

/**
 * Send a raw HTTP/1.1 request (exactly the bytes given; use `Connection: close`) and return the
 * raw response text. For what ordinary clients refuse to send: dot segments, hop-by-hop headers,
 * malformed framing.
 */
export function rawRequest(url: string, text: string, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('raw request timed out')));
    socket.on('connect', () => socket.write(text));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

/** Status code of a raw response. */
export function rawStatus(response: string): number {
  return Number(response.slice(9, 12));
}
