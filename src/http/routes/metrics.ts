import type { RequestHandler } from 'express';
import type { MetricsSource } from '../../observability/metrics.js';

export const METRICS_PATH = '/metrics';

/**
 * GET /metrics, the Prometheus scrape of the whole daemon; the same handler wherever it is mounted (the main
 * listener, `metrics.listen`). Mounted as a route of the app itself (app.get), not as a router: a router is entered
 * by every request, which costs each one a little (see bench --only metrics).
 */
export function metricsHandler(source: MetricsSource): RequestHandler {
  return async (_req, res) => {
    res.locals.route = METRICS_PATH;
    const text = await source.text();
    res.set('Content-Type', source.contentType).set('Cache-Control', 'no-store').send(text);
  };
}
