import { Router } from 'express';
import type { MetricsSource } from '../../observability/metrics.js';

/**
 * GET /metrics, the Prometheus scrape of the whole daemon. One router wherever it is mounted (the main listener,
 * `metrics.listen`), so that an access rule for it goes in one place.
 */
export function metricsRoutes(source: MetricsSource): Router {
  const r = Router();
  r.get('/metrics', async (_req, res) => {
    res.locals.route = '/metrics';
    const text = await source.text();
    res.set('Content-Type', source.contentType).set('Cache-Control', 'no-store').send(text);
  });
  return r;
}
