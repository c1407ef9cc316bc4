import { Router, type Response } from 'express';
import type { Registry } from '../../registry/registry.js';
import { nameParam, pathDigest } from '../params.js';
import { parseRange } from '../ranges.js';
import { drain } from '../body.js';

export const BLOB_PATH = /^\/v2\/(.+)\/blobs\/([^/]+)$/;

function blobHeaders(res: Response, digest: string): void {
  res.set({
    'Docker-Content-Digest': digest,
    'Accept-Ranges': 'bytes',
    'Content-Type': 'application/octet-stream',
    ETag: `"${digest}"`,
    'Cache-Control': 'max-age=31536000',
  });
}

export function blobRoutes(registry: Registry): Router {
  const r = Router();
  // HEAD is answered from the in-memory index: it is on every BuildKit export's critical path.
  r.head(BLOB_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/<digest>';
    const name = nameParam(req);
    res.locals.repo = name;
    const d = pathDigest(req);
    res.locals.ref = d.value;
    const size = await registry.headBlob(name, d);
    blobHeaders(res, d.value);
    res.set('Content-Length', String(size)).status(200).end();
  });

  r.get(BLOB_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/<digest>';
    const name = nameParam(req);
    res.locals.repo = name;
    const d = pathDigest(req);
    res.locals.ref = d.value;
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
      res.status(206).set({
        'Content-Range': `bytes ${range.start}-${range.end}/${reader.size}`,
        'Content-Length': String(range.end - range.start + 1),
      });
    } else {
      res.status(200).set('Content-Length', String(reader.size));
    }
    res.locals.bytesOut = range ? range.end - range.start + 1 : reader.size;
    await reader.sendTo(res, range);
  });

  r.delete(BLOB_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/blobs/<digest>';
    const name = nameParam(req);
    res.locals.repo = name;
    const d = pathDigest(req);
    await drain(req);
    await registry.deleteBlob(name, d);
    res.status(202).set('Content-Length', '0').end();
  });
  return r;
}
