import { Router, type Response } from 'express';
import type { Registry } from '../../registry/registry.js';
import type { ManifestRecord } from '../../storage/repository-store.js';
import { lookupReference, parseReference } from '../../registry/names.js';
import { drain, readLimited, type MemoryBudget } from '../body.js';
import { nameParam } from '../params.js';

export const MANIFEST_PATH = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const ROUTE = '/v2/<name>/manifests/<reference>';

function manifestHeaders(res: Response, m: ManifestRecord): void {
  res.set({
    'Content-Type': m.mediaType,
    'Content-Length': String(m.size),
    'Docker-Content-Digest': m.digest,
    ETag: `"${m.digest}"`,
  });
}

/** Says which tag answered for a missing one (registry.fallback), to the client and in the request log. */
function fallbackHeader(res: Response, served: string | undefined): void {
  if (served === undefined) return;
  res.set('Buildcached-Fallback', served);
  res.locals.fallback = served;
}

export function manifestRoutes(registry: Registry, maxManifestBytes: number, buffers: MemoryBudget): Router {
  const r = Router();

  r.head(MANIFEST_PATH, async (req, res) => {
    res.locals.route = ROUTE;
    const name = nameParam(req);
    res.locals.repo = name;
    const found = await registry.resolve(name, lookupReference(String(req.params[1])));
    manifestHeaders(res, found.record);
    fallbackHeader(res, found.fallback);
    res.status(200).end();
  });

  r.get(MANIFEST_PATH, async (req, res) => {
    res.locals.route = ROUTE;
    const name = nameParam(req);
    res.locals.repo = name;
    res.locals.ref = String(req.params[1]);
    const { record, reader, fallback } = await registry.openManifest(name, lookupReference(res.locals.ref as string));
    manifestHeaders(res, record);
    fallbackHeader(res, fallback);
    res.locals.bytesOut = record.size;
    await reader.sendTo(res);
  });

  r.put(MANIFEST_PATH, async (req, res) => {
    res.locals.route = ROUTE;
    const name = nameParam(req);
    res.locals.repo = name;
    res.locals.ref = String(req.params[1]);
    const ref = parseReference(res.locals.ref as string);
    const body = await readLimited(req, res, maxManifestBytes, buffers);
    const { record, cacheConfigBytes } = await registry.putManifest(name, ref, body, req.headers['content-type']);
    res.locals.cacheConfigBytes = cacheConfigBytes;
    res.status(201).set({
      Location: `/v2/${name}/manifests/${record.digest}`,
      'Docker-Content-Digest': record.digest,
      'Content-Length': '0',
    });
    if (record.subject) res.set('OCI-Subject', record.subject);
    res.end();
  });

  r.delete(MANIFEST_PATH, async (req, res) => {
    res.locals.route = ROUTE;
    const name = nameParam(req);
    res.locals.repo = name;
    const ref = lookupReference(String(req.params[1]));
    await drain(req);
    await registry.deleteManifest(name, ref);
    res.status(202).set('Content-Length', '0').end();
  });
  return r;
}
