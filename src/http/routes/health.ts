import { Router } from 'express';

/** Liveness and readiness for systemd, Docker HEALTHCHECK and load balancers. The app exists only once the
 *  stores are loaded, so both answer 200 whenever the process can answer at all. */
export function healthRoutes(): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.locals.route = '/healthz';
    res.json({ status: 'ok' });
  });
  r.get('/readyz', (_req, res) => {
    res.locals.route = '/readyz';
    res.json({ status: 'ready' });
  });
  return r;
}
