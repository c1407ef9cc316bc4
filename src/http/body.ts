import type { Request, Response } from 'express';
import { OciError } from '../core/errors.js';

/** Bytes of request bodies this process holds in memory at once, bounded. */
export class MemoryBudget {
  private held = 0;
  constructor(readonly limit: number) {}
  get used(): number {
    return this.held;
  }
  /** Takes `n` bytes, or nothing and false when that would pass the bound. */
  take(n: number): boolean {
    if (this.held + n > this.limit) return false;
    this.held += n;
    return true;
  }
  release(n: number): void {
    this.held -= n;
  }
}

/**
 * Reads a small request body (a manifest) into memory, refusing more than `limit` bytes. Past the limit the rest
 * is read and discarded rather than buffered, so the error response can be sent on the same connection. The
 * bytes are held against `budget` until the response is done; a body that does not fit is refused with 429
 * (whole, up front, when it declares its length), so many slow manifest PUTs cannot pile up in memory.
 */
export function readLimited(req: Request, res: Response, limit: number, budget: MemoryBudget): Promise<Buffer> {
  const declared = contentLength(req);
  const tooLarge = () =>
    new OciError('MANIFEST_TOO_LARGE', `manifest exceeds the limit of ${limit} bytes`, { limit, received: declared });
  const busy = () => new OciError('TOOMANYREQUESTS', 'too many manifests are being received at once; retry shortly');
  let held = 0;
  res.once('close', () => budget.release(held));
  if (declared !== undefined && declared <= limit) {
    if (!budget.take(declared)) return Promise.reject(busy());
    held = declared;
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let refusal = declared !== undefined && declared > limit ? tooLarge() : undefined;
    const refuse = (e: OciError) => {
      refusal = e;
      chunks.length = 0;
      budget.release(held);
      held = 0;
    };
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (refusal) return;
      if (total > limit) return refuse(tooLarge());
      // A body without Content-Length takes its bytes as they arrive.
      if (total > held) {
        if (!budget.take(total - held)) return refuse(busy());
        held = total;
      }
      chunks.push(chunk);
    });
    req.on('end', () => (refusal ? reject(refusal) : resolve(Buffer.concat(chunks, total))));
    req.on('error', reject);
  });
}

/** Content-Length as a number, undefined when absent (chunked); the server's framing check let only a plain
 *  decimal byte count through (src/http/framing.ts). */
export function contentLength(req: Request): number | undefined {
  const v = req.headers['content-length'];
  return v === undefined ? undefined : Number(v);
}

/** True when the request carries a body (Content-Length > 0 or chunked transfer-encoding). */
export function hasBody(req: Request): boolean {
  const n = contentLength(req);
  return n !== undefined ? n > 0 : req.headers['transfer-encoding'] !== undefined;
}

/**
 * Reads and drops a body the handler does not use, resolving once all of it arrived intact. Handlers that write
 * wait for this before acting: Node's parser hands a request over once its headers are in and finds a malformed
 * chunked body only later, and a request refused for its body must not have been carried out.
 */
export function drain(req: Request): Promise<void> {
  if (req.complete) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cut = () => reject(new OciError('SIZE_INVALID', 'the request body was malformed or cut short; nothing was done'));
    req.once('end', () => resolve());
    req.once('error', cut);
    req.once('close', () => (req.complete ? resolve() : cut()));
    req.resume();
  });
}
