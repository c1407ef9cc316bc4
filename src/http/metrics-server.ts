import { createServer } from 'node:http';
import express from 'express';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { MetricsSource } from '../observability/metrics.js';
import { errorHandler, notFound } from './oci-errors.js';
import { requestLogMiddleware } from './request-log.js';
import { METRICS_PATH, metricsHandler } from './routes/metrics.js';
import { listen, splitListen } from './server.js';

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * `metrics.listen`: a listener of its own that serves GET /metrics and nothing else (a private port for the
 * scraper), run by the process that owns the metrics (the single process, or the primary). Undefined when unset.
 */
export async function serveMetrics(config: Config, source: MetricsSource, log: Logger): Promise<MetricsServer | undefined> {
  if (!config.metrics.enabled || !config.metrics.listen) return undefined;
  const app = express();
  app.disable('x-powered-by');
  app.use(requestLogMiddleware(log));
  app.get(METRICS_PATH, metricsHandler(source));
  app.use(notFound);
  app.use(errorHandler(log));
  const server = createServer({ headersTimeout: 30_000 }, app);
  const { host, port } = splitListen(config.metrics.listen);
  const addr = await listen(server, host, port);
  return {
    url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/metrics`,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
