import { Router } from 'express';
import { OciError } from '../../core/errors.js';
import type { AdminApi } from '../../cache/admin.js';
import { parseDuration } from '../../config/units.js';
import { queryParam } from '../params.js';
import { renderStatusPage } from '../status-page.js';

const flag = (v: string | undefined) => v !== undefined && v !== '0' && v !== 'false';

/** The operator API, mounted only on the admin listener (see admin-server.ts), which decides who may call it. */
export function adminRoutes(admin: AdminApi): Router {
  const r = Router();
  r.get('/admin/', async (_req, res) => {
    res.locals.route = '/admin/';
    const [status, refs] = await Promise.all([admin.status(), admin.references()]);
    res.set('Content-Type', 'text/html; charset=utf-8').set('Cache-Control', 'no-store').send(renderStatusPage(status, refs));
  });
  r.get('/admin/v1/status', async (_req, res) => {
    res.locals.route = '/admin/v1/status';
    res.json(await admin.status());
  });
  r.get('/admin/v1/du', async (req, res) => {
    res.locals.route = '/admin/v1/du';
    res.json({ references: await admin.du(queryParam(req, 'repo')) });
  });
  r.get('/admin/v1/references', async (req, res) => {
    res.locals.route = '/admin/v1/references';
    res.json({ references: await admin.references(queryParam(req, 'repo')) });
  });
  r.post('/admin/v1/gc', async (req, res) => {
    res.locals.route = '/admin/v1/gc';
    res.json(await admin.gc(flag(queryParam(req, 'dryRun'))));
  });
  r.post('/admin/v1/prune', async (req, res) => {
    res.locals.route = '/admin/v1/prune';
    const olderThan = parseDuration(queryParam(req, 'olderThan', 'PARAMETER_INVALID') ?? '');
    if (olderThan === undefined) throw new OciError('PARAMETER_INVALID', 'prune needs olderThan=<duration with a unit>, e.g. 7d or 12h');
    res.json(await admin.prune(olderThan, queryParam(req, 'repo'), flag(queryParam(req, 'dryRun'))));
  });
  r.post('/admin/v1/tier/retention', async (req, res) => {
    res.locals.route = '/admin/v1/tier/retention';
    res.json(await admin.tierRetention(flag(queryParam(req, 'dryRun'))));
  });
  r.post('/admin/v1/verify', async (req, res) => {
    res.locals.route = '/admin/v1/verify';
    res.json(await admin.verify(flag(queryParam(req, 'repair'))));
  });
  return r;
}
