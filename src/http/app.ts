import express, { type RequestHandler } from 'express';
import type { Registry } from '../registry/registry.js';
import type { Logger } from '../observability/logger.js';
import { OciError } from '../core/errors.js';
import { errorHandler } from './oci-errors.js';
import { requestLog } from './request-log.js';
import { baseRoutes } from './routes/base.js';
import { blobRoutes } from './routes/blobs.js';
import { uploadRoutes } from './routes/uploads.js';
import { manifestRoutes } from './routes/manifests.js';
import { listingRoutes } from './routes/listing.js';
import { healthRoutes } from './routes/health.js';

export interface AppOptions {
  maxManifestBytes: number;
}

/**
 * Rejects paths that could only be an attempt to escape: percent-encoding (no valid name, tag, digest or upload id
 * needs it), NUL, backslashes, empty or dot segments. Everything after this point still validates each part.
 */
const safePath: RequestHandler = (req, _res, next) => {
  const path = req.originalUrl.split('?', 1)[0]!;
  if (/[%\\\0]/.test(path) || /\/\/|\/\.\.?(\/|$)/.test(path)) {
    throw new OciError('NAME_INVALID', 'invalid characters or segments in the request path');
  }
  next();
};

export function createApp(registry: Registry, log: Logger, opts: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  app.use(requestLog(log));
  app.use(healthRoutes());
  app.use('/v2', (_req, res, next) => {
    res.set('Docker-Distribution-API-Version', 'registry/2.0');
    next();
  });
  app.use('/v2', safePath);
  app.use(baseRoutes());
  app.use(listingRoutes(registry));
  app.use(uploadRoutes(registry));
  app.use(blobRoutes(registry));
  app.use(manifestRoutes(registry, opts.maxManifestBytes));
  app.use('/v2', (req, _res, next) => {
    next(new OciError('UNSUPPORTED', `${req.method} is not supported on this path`));
  });
  app.use((_req, res) => {
    res.status(404).json({ errors: [{ code: 'NOT_FOUND', message: 'not found', detail: null }] });
  });
  app.use(errorHandler(log));
  return app;
}
