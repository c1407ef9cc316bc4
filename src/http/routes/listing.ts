import { Router, type Response } from 'express';
import type { Page, Registry } from '../../registry/registry.js';
import { OCI_INDEX } from '../../registry/media-types.js';
import { nameParam, pageSize, pathDigest, queryParam } from '../params.js';
import { accessOf } from '../access.js';

/** RFC 5988 `Link` to the next page, as the distribution spec describes. */
function linkNext(res: Response, path: string, page: Page, n: number | undefined): void {
  if (page.next === undefined || n === undefined) return;
  res.set('Link', `<${path}?n=${n}&last=${encodeURIComponent(page.next)}>; rel="next"`);
}

export const TAGS_LIST_PATH = /^\/v2\/(.+)\/tags\/list$/;
export const CATALOG_PATH = /^\/v2\/_catalog$/;
export const REFERRERS_PATH = /^\/v2\/(.+)\/referrers\/([^/]+)$/;

/** Tags list, catalog and referrers: the read-only listings of the API. */
export function listingRoutes(registry: Registry): Router {
  const r = Router();

  r.get(TAGS_LIST_PATH, async (req, res) => {
    res.locals.route = '/v2/<name>/tags/list';
    const name = nameParam(req);
    res.locals.repo = name;
    const n = pageSize(req);
    const page = await registry.tags(name, n, queryParam(req, 'last'));
    linkNext(res, `/v2/${name}/tags/list`, page, n);
    res.json({ name, tags: page.items });
  });

  r.get(CATALOG_PATH, async (req, res) => {
    res.locals.route = '/v2/_catalog';
    const n = pageSize(req);
    const page = await registry.catalog(n, queryParam(req, 'last'), accessOf(res).visible);
    linkNext(res, '/v2/_catalog', page, n);
    res.json({ repositories: page.items });
  });

  r.get(REFERRERS_PATH, (req, res) => {
    res.locals.route = '/v2/<name>/referrers/<digest>';
    const name = nameParam(req);
    res.locals.repo = name;
    const artifactType = queryParam(req, 'artifactType');
    const index = registry.referrers(name, pathDigest(req), artifactType);
    if (artifactType !== undefined) res.set('OCI-Filters-Applied', 'artifactType');
    res.status(200).set('Content-Type', OCI_INDEX).end(JSON.stringify(index));
  });
  return r;
}
