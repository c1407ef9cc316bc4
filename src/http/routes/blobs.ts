import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import type { HeadCaller, Registry } from '../../registry/registry.js';
import { parseDigest } from '../../core/digest.js';
import { parseName } from '../../registry/names.js';
import { nameParam, pathDigest } from '../params.js';
import { parseRange } from '../ranges.js';
import { drain } from '../body.js';
import type { Exchange } from '../exchange.js';
import { accessOf } from '../access.js';

export const BLOB_PATH = /^\/v2\/(.+)\/blobs\/([^/]+)$/;
const ROUTE = '/v2/<name>/blobs/<digest>';

/** A blob read, answered by the front door ahead of express's router. */
export type BlobRead = (req: IncomingMessage, res: Exchange) => Promise<void>;

function blobHeaders(res: Exchange, digest: string): void {
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('Content-Type', 'application/octet-stream');
  res.setHeader('ETag', `"${digest}"`);
  res.setHeader('Cache-Control', 'max-age=31536000');
}

/** The route's parts, validated, and what the log and the analytics say of the request. */
function target(res: Exchange, m: RegExpExecArray) {
  res.locals.route = ROUTE;
  const name = parseName(m[1]!);
  res.locals.repo = name;
  const d = parseDigest(m[2]!);
  res.locals.ref = d.value;
  return { name, d };
}

/**
 * HEAD and GET of a blob: every BuildKit export HEADs each layer, every import GETs them, so they skip express's
 * router, which cost a HEAD three quarters of its CPU (bench/run.mjs --only head --profile). Undefined for any
 * other request, which goes on to the router.
 */
export function blobReads(registry: Registry): (method: string | undefined, path: string) => BlobRead | undefined {
  // HEAD is answered from the in-memory index: it is on every BuildKit export's critical path.
  const head = async (req: IncomingMessage, res: Exchange, m: RegExpExecArray) => {
    const { name, d } = target(res, m);
    const caller: HeadCaller = { address: req.socket.remoteAddress ?? '', access: accessOf(res) };
    let size: number;
    try {
      size = await registry.headBlob(name, d, caller);
    } finally {
      if (caller.waited) res.locals.coalesced = true;
    }
    blobHeaders(res, d.value);
    res.setHeader('Content-Length', String(size));
    res.statusCode = 200;
    res.end();
  };

  const get = async (req: IncomingMessage, res: Exchange, m: RegExpExecArray) => {
    const { name, d } = target(res, m);
    const reader = await registry.openBlob(name, d);
    let range;
    try {
      range = parseRange(req.headers.range, reader.size);
      await reader.ready?.(range);
    } catch (e) {
      await reader.close();
      throw e;
    }
    blobHeaders(res, d.value);
    if (range) {
      res.statusCode = 206;
      res.setHeader('Content-Range', `bytes ${range.start}-${range.end}/${reader.size}`);
      res.setHeader('Content-Length', String(range.end - range.start + 1));
    } else {
      res.statusCode = 200;
      res.setHeader('Content-Length', String(reader.size));
    }
    res.locals.bytesOut = range ? range.end - range.start + 1 : reader.size;
    await reader.sendTo(res, range);
  };

  return (method, path) => {
    if (method !== 'HEAD' && method !== 'GET') return undefined;
    const m = BLOB_PATH.exec(path);
    if (!m) return undefined;
    return method === 'HEAD' ? (req, res) => head(req, res, m) : (req, res) => get(req, res, m);
  };
}

/** What express serves on a blob's path: DELETE (reads never reach it: see blobReads). */
export function blobRoutes(registry: Registry): Router {
  const r = Router();
  r.delete(BLOB_PATH, async (req, res) => {
    res.locals.route = ROUTE;
    const name = nameParam(req);
    res.locals.repo = name;
    const d = pathDigest(req);
    await drain(req);
    await registry.deleteBlob(name, d);
    res.status(202).set('Content-Length', '0').end();
  });
  return r;
}
