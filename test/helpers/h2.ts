import { connect, type IncomingHttpHeaders } from 'node:http2';

export interface H2Options {
  method?: string;
  headers?: Record<string, string>;
  /**
   * Request body sent as DATA frames, never with a content-length: the body is known only by the
   * stream ending. Sent in two frames a few ms apart. Absent: the stream ends with the headers.
   */
  body?: string;
  /** TLS server name. Default `localhost`. */
  servername?: string;
}

export interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP/2 request over TLS on a fresh session (closed afterwards). */
export function h2Request(origin: string, ca: string, path: string, opts: H2Options = {}): Promise<H2Answer> {
  return new Promise<H2Answer>((resolve, reject) => {
    const session = connect(origin, { ca, servername: opts.servername ?? 'localhost' });
    const fail = (err: Error) => {
      session.close();
      reject(err);
    };
    session.on('error', fail);
    const stream = session.request(
      { ':method': opts.method ?? 'GET', ':path': path, ...opts.headers },
      { endStream: opts.body === undefined },
    );
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let body = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => {
      status = Number(h[':status']);
      headers = h;
    });
    stream.on('data', (c: string) => {
      body += c;
    });
    stream.on('end', () => {
      session.close();
      resolve({ status, headers, body });
    });
    stream.on('error', fail);
    const payload = opts.body;
    if (payload !== undefined) {
      stream.write(payload.slice(0, 3));
      setTimeout(() => stream.end(payload.slice(3)), 10);
    }
  });
}
