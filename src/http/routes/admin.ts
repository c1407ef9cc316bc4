import { Router, type RequestHandler } from 'express';
import { OciError } from '../../core/errors.js';
import type { AdminApi } from '../../cache/admin.js';
import { parseDuration } from '../../config/units.js';
import { queryParam } from '../params.js';

/** Admin calls come from the machine itself: the CLI or an operator's curl on the box. */
const localOnly: RequestHandler = (req, _res, next) => {
  const addr = req.socket.remoteAddress;
  const local =
    addr === undefined ||
    addr === req.socket.localAddress ||
    addr === '::1' ||
    addr.startsWith('127.') ||
    addr.startsWith('::ffff:127.');
  if (!local) throw new OciError('DENIED', 'the admin API only answers local requests');
  next();
};

const flag = (v: string | undefined) => v !== undefined && v !== '0' && v !== 'false';

export function adminRoutes(admin: AdminApi): Router {
  const r = Router();
  r.use('/admin', localOnly);
  r.get('/admin/v1/status', async (_req, res) => {
    res.locals.route = '/admin/v1/status';
    res.json(await admin.status());
  });
  r.get('/admin/v1/du', async (req, res) => {
    res.locals.route = '/admin/v1/du';
    res.json({ references: await admin.du(queryParam(req, 'repo')) });
  });
  r.post('/admin/v1/gc', async (req, res) => {
    res.locals.route = '/admin/v1/gc';
    res.json(await admin.gc(flag(queryParam(req, 'dryRun'))));
  });
  r.post('/admin/v1/prune', async (req, res) => {
    res.locals.route = '/admin/v1/prune';
    const olderThan = parseDuration(queryParam(req, 'olderThan') ?? '');
    if (olderThan === undefined) throw new OciError('UNSUPPORTED', 'prune needs olderThan=<duration>, e.g. 7d');
    res.json(await admin.prune(olderThan, queryParam(req, 'repo'), flag(queryParam(req, 'dryRun'))));
  });
  return r;
}
