import { request } from 'node:http';
import { Router } from 'express';
import { OciError } from '../../core/errors.js';
import type { Layout } from '../../storage/layout.js';
import { readOwner } from '../../storage/data-dir.js';
import { adminTarget } from '../admin-target.js';

/**
 * With auth on, callers with an `admin: true` rule reach the admin API (and whatever else the admin listener
 * serves) through the registry's own port: the request is streamed to the admin listener, which the primary
 * serves and names in daemon.json, with the admin token added when that listener needs one.
 */
export function adminProxyRoutes(layout: Layout): Router {
  const r = Router();
  r.all(/^\/admin(\/.*)?$/, async (req, res) => {
    res.locals.route = '/admin/*';
    const owner = await readOwner(layout);
    if (!owner?.adminUrl) throw new OciError('UNSUPPORTED', 'the admin API is not listening yet');
    const headers = { ...req.headers };
    delete headers.authorization;
    delete headers.host;
    if (owner.adminToken) headers.authorization = `Bearer ${owner.adminToken}`;
    await new Promise<void>((done, fail) => {
      const upstream = request({ ...adminTarget(owner.adminUrl!), method: req.method, path: req.originalUrl, headers, agent: false }, (answer) => {
        res.status(answer.statusCode ?? 502);
        for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined && k !== 'connection' && k !== 'keep-alive') res.setHeader(k, v);
        answer.pipe(res);
        answer.on('end', done);
        answer.on('error', fail);
      });
      upstream.on('error', (e) => fail(new OciError('UNSUPPORTED', `the admin API does not answer: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
      req.pipe(upstream);
    });
  });
  return r;
}
