import { Router } from 'express';

/** Why the daemon serves in a degraded way (a tier below it cannot be reached), or undefined when it does not. */
export type Readiness = () => Promise<string | undefined>;

/** Liveness and readiness for systemd, Docker HEALTHCHECK and load balancers. The app exists only once the
 *  stores are loaded, so both answer 200 whenever the process can answer at all; readiness says `degraded` (still
 *  200: local hits and pushes are served) while a tier below is unreachable. */
export function healthRoutes(readiness?: Readiness): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.locals.route = '/healthz';
    res.json({ status: 'ok' });
  });
  r.get('/readyz', async (_req, res) => {
    res.locals.route = '/readyz';
    const degraded = await readiness?.().catch(() => undefined);
    res.json(degraded ? { status: 'degraded', reason: degraded } : { status: 'ready' });
  });
  return r;
}
