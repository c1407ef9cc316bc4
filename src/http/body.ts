import type { Request } from 'express';
import { OciError } from '../core/errors.js';

/**
 * Reads a small request body (a manifest) into memory, refusing more than `limit` bytes. Past the limit the rest
 * is read and discarded rather than buffered, so the error response can be sent on the same connection.
 */
export function readLimited(req: Request, limit: number): Promise<Buffer> {
  const declared = contentLength(req);
  const tooLarge = () =>
    new OciError('MANIFEST_TOO_LARGE', `manifest exceeds the limit of ${limit} bytes`, { limit, received: declared });
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let over = declared !== undefined && declared > limit;
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) over = true;
      if (!over) chunks.push(chunk);
    });
    req.on('end', () => (over ? reject(tooLarge()) : resolve(Buffer.concat(chunks, total))));
    req.on('error', reject);
  });
}

/** Content-Length as a number, undefined when absent (chunked); invalid values are rejected. */
export function contentLength(req: Request): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new OciError('SIZE_INVALID', `invalid Content-Length "${String(v).slice(0, 30)}"`);
  return n;
}

/** True when the request carries a body (Content-Length > 0 or chunked transfer-encoding). */
export function hasBody(req: Request): boolean {
  const n = contentLength(req);
  return n !== undefined ? n > 0 : req.headers['transfer-encoding'] !== undefined;
}
