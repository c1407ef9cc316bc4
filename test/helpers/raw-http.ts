/**
 * HTTP/1.1 over a raw node:net socket, for requests no HTTP client would form (invalid framing, bad header names,
 * bare LF, stalled bodies) and an honest reading of what the server sent back: every response on the connection,
 * parsed by status line, headers and body framing, or the fact that it closed or said nothing. Loopback only.
 */
import { connect, type Socket } from 'node:net';

/** What to put on the wire: bytes, a pause, or a half-close (FIN) of our side. */
export type Piece = Buffer | { pauseMs: number } | { end: true };

export interface ParsedResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
}

export type Outcome = ParsedResponse | { none: 'closed' | 'timeout' | 'malformed'; received: string };

export const isResponse = (o: Outcome): o is ParsedResponse => 'status' in o;

/** Bytes as they would read in a log line: printable ASCII kept, everything else escaped. */
export function printable(b: Buffer | string, max = 300): string {
  const s = typeof b === 'string' ? b : b.toString('latin1');
  const cut = s.length > max ? s.slice(0, max) : s;
  const esc = cut.replace(/[^\x20-\x7e]/g, (c) => {
    const code = c.charCodeAt(0);
    if (c === '\r') return '\\r';
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  return s.length > max ? `${esc}…(${s.length} bytes)` : esc;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One client connection with a buffer of what the server sent that no response has consumed yet. */
export class RawConnection {
  private buf = Buffer.alloc(0);
  private closed = false;
  private wake: (() => void) | undefined;
  /** A socket error (ECONNRESET, EPIPE) the server caused; the connection counts as closed after it. */
  error: string | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.poke();
    });
    sock.on('close', () => {
      this.closed = true;
      this.poke();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      this.error = e.code ?? e.message;
    });
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    if (host !== '127.0.0.1') return Promise.reject(new Error(`refusing to send test traffic to ${host}: loopback only`));
    return new Promise((resolve, reject) => {
      const sock = connect(port, host);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new RawConnection(sock));
      });
      sock.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private waitForData(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, Math.max(0, deadline - Date.now()));
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Writes the pieces in order, pausing where asked; stops quietly once the server has closed. */
  async send(pieces: Piece[]): Promise<void> {
    for (const p of pieces) {
      if (this.closed || this.sock.destroyed) return;
      if (Buffer.isBuffer(p)) {
        await new Promise<void>((resolve) => {
          if (this.sock.write(p)) return resolve();
          const done = () => {
            this.sock.off('drain', done);
            this.sock.off('close', done);
            resolve();
          };
          this.sock.once('drain', done);
          this.sock.once('close', done);
        });
      } else if ('pauseMs' in p) {
        await sleep(p.pauseMs);
      } else {
        this.sock.end();
      }
    }
  }

  /**
   * The next response to a request with this method (HEAD responses have no body), skipping interim 1xx ones;
   * or why there is none by `deadline`.
   */
  async next(method: string, deadline: number): Promise<Outcome> {
    for (;;) {
      const parsed = parseResponse(this.buf, method, this.closed);
      if (parsed === 'malformed') return { none: 'malformed', received: printable(this.buf) };
      if (parsed) {
        this.buf = this.buf.subarray(parsed.consumed);
        if (parsed.response.status >= 100 && parsed.response.status < 200 && parsed.response.status !== 101) continue;
        return parsed.response;
      }
      if (this.closed) return { none: 'closed', received: printable(this.buf) };
      if (Date.now() >= deadline) return { none: 'timeout', received: printable(this.buf) };
      await this.waitForData(deadline);
    }
  }

  /** Whether the server closes the connection within `ms` (after a refusal it should not read on). */
  async closesWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) await this.waitForData(deadline);
    return this.closed;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Parses one response from the start of `buf`; undefined = incomplete, 'malformed' = not HTTP/1.x. */
export function parseResponse(
  buf: Buffer,
  method: string,
  closed: boolean,
): { response: ParsedResponse; consumed: number } | undefined | 'malformed' {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) {
    if (buf.length >= 5 && !buf.subarray(0, 5).equals(Buffer.from('HTTP/'))) return 'malformed';
    return closed && buf.length > 0 ? 'malformed' : undefined;
  }
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]!);
  if (!m) return 'malformed';
  const status = Number(m[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) return 'malformed';
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  const start = headEnd + 4;
  const noBody = method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304;
  if (noBody) return { response: { status, headers, body: Buffer.alloc(0) }, consumed: start };
  if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
    const chunks: Buffer[] = [];
    let pos = start;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd < 0) return closed ? 'malformed' : undefined;
      const size = parseInt(buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!, 16);
      if (!Number.isFinite(size)) return 'malformed';
      if (size === 0) {
        // Trailers end with an empty line.
        const end = buf.indexOf('\r\n\r\n', lineEnd);
        if (end < 0) return closed ? 'malformed' : undefined;
        return { response: { status, headers, body: Buffer.concat(chunks) }, consumed: end + 4 };
      }
      if (buf.length < lineEnd + 2 + size + 2) return closed ? 'malformed' : undefined;
      chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      pos = lineEnd + 2 + size + 2;
    }
  }
  if (headers['content-length'] !== undefined) {
    const len = Number(headers['content-length']);
    if (!Number.isSafeInteger(len) || len < 0) return 'malformed';
    if (buf.length < start + len) return closed ? 'malformed' : undefined;
    return { response: { status, headers, body: Buffer.from(buf.subarray(start, start + len)) }, consumed: start + len };
  }
  // Delimited by the close of the connection.
  if (!closed) return undefined;
  return { response: { status, headers, body: Buffer.from(buf.subarray(start)) }, consumed: buf.length };
}
