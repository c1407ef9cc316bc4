import type { IncomingMessage, RequestListener } from 'node:http';
import express, { type RequestHandler } from 'express';
import type { Registry } from '../registry/registry.js';
import type { Logger } from '../observability/logger.js';
import { OciError } from '../core/errors.js';
import { errorHandler, failureResponder, notFound } from './oci-errors.js';
import { MemoryBudget } from './body.js';
import { requestLog } from './request-log.js';
import { BASE_PATH, baseRoutes } from './routes/base.js';
import { BLOB_PATH, blobReads, blobRoutes } from './routes/blobs.js';
import { UPLOAD_SESSION_PATH, UPLOAD_START_PATH, uploadRoutes } from './routes/uploads.js';
import { MANIFEST_PATH, manifestRoutes } from './routes/manifests.js';
import { CATALOG_PATH, REFERRERS_PATH, TAGS_LIST_PATH, listingRoutes } from './routes/listing.js';
import { healthRoutes, type Readiness } from './routes/health.js';
import type { Authenticator } from '../auth/authenticator.js';
import type { Layout } from '../storage/layout.js';
import { authenticate, type ChallengeOptions } from './auth.js';
import { tokenRoutes, type TokenSettings } from './routes/token.js';
import { adminProxyRoutes } from './routes/admin-proxy.js';
import { METRICS_PATH, metricsHandler } from './routes/metrics.js';
import { cacheLookup, type HttpMetrics, type MetricsSource, type RequestOutcome } from '../observability/metrics.js';
import type { ReferenceActivity } from '../cache/reference-stats.js';
import { referenceActivity } from './activity.js';
import { exchange, requestPath, type Exchange } from './exchange.js';

export interface AppOptions {
  maxManifestBytes: number;
  /** Manifest bodies this process holds in memory at once (http.maxBufferedManifestBytes). */
  maxBufferedManifestBytes: number;
  /** Absent: no authentication, and the admin API only on its own listener. */
  auth?: { authenticator: Authenticator; challenge: ChallengeOptions; tokens: TokenSettings; layout: Layout };
  /** Metrics on (metrics.enabled): requests are counted here, and GET /metrics answers from `source`. */
  metrics?: { http: HttpMetrics; source: MetricsSource };
  /** Where what a request did to a cache reference goes (the store owner's ReferenceStats, maybe over IPC). */
  activity?: (a: ReferenceActivity) => void;
  /** Where a cache lookup's outcome goes, for the hit rate over time (the store owner's HitHistory, maybe over
   *  IPC). */
  lookup?: (hit: boolean) => void;
  /** What /readyz reports beyond "serving" (a tier's outage). */
  readiness?: Readiness;
}

/**
 * Rejects paths that could only be an attempt to escape: percent-encoding (no valid name, tag, digest or upload id
 * needs it), NUL, backslashes, empty or dot segments. Everything after this point still validates each part.
 */
function checkPath(path: string): void {
  if (/[%\\\0]/.test(path) || /\/\/|\/\.\.?(\/|$)/.test(path)) {
    throw new OciError('NAME_INVALID', 'invalid characters or segments in the request path');
  }
}

/** Every API path with the methods its router serves (HEAD comes with GET), for 405 + `Allow` vs 404. */
const API_ROUTES: ReadonlyArray<readonly [RegExp, readonly string[]]> = [
  [BASE_PATH, ['GET', 'HEAD']],
  [CATALOG_PATH, ['GET', 'HEAD']],
  [TAGS_LIST_PATH, ['GET', 'HEAD']],
  [REFERRERS_PATH, ['GET', 'HEAD']],
  [UPLOAD_START_PATH, ['POST']],
  [UPLOAD_SESSION_PATH, ['GET', 'HEAD', 'PATCH', 'PUT', 'DELETE']],
  [BLOB_PATH, ['GET', 'HEAD', 'DELETE']],
  [MANIFEST_PATH, ['GET', 'HEAD', 'PUT', 'DELETE']],
];

/** A path that some route serves, reached with a method none of them serves: 405 UNSUPPORTED with `Allow`. */
const methodNotAllowed: RequestHandler = (req, res, next) => {
  const allowed = new Set<string>();
  for (const [path, methods] of API_ROUTES) if (path.test(req.path)) for (const m of methods) allowed.add(m);
  if (allowed.size === 0) return next();
  res.set('Allow', [...allowed].join(', '));
  next(new OciError('UNSUPPORTED', `${req.method} is not supported on this path`));
};

/**
 * The registry's request listener: a front door that every request passes — the request log, the API version
 * header and path check under /v2, authentication — then blob reads answered right there (the hottest path), and
 * everything else handed to express's router.
 */
export function createApp(registry: Registry, log: Logger, opts: AppOptions): RequestListener {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  const { metrics, activity, lookup } = opts;
  const observe = (o: RequestOutcome) => {
    const found = cacheLookup(o.method, o.route, o.status);
    metrics?.http.observe(o, found);
    if (found) lookup?.(found.hit);
    const a = activity && referenceActivity(o, Date.now());
    if (a) activity(a);
  };
  const track = requestLog(log, metrics || activity || lookup ? observe : undefined);
  app.use(healthRoutes(opts.readiness));
  const auth = opts.auth;
  if (auth) app.use(tokenRoutes(auth.authenticator, auth.tokens));
  // With auth on, /metrics on this listener is for admin rules (metrics.listen serves it unauthenticated).
  if (metrics) app.get(METRICS_PATH, metricsHandler(metrics.source));
  if (auth) app.use(adminProxyRoutes(auth.layout));
  app.use(baseRoutes());
  app.use(listingRoutes(registry));
  app.use(uploadRoutes(registry));
  app.use(blobRoutes(registry));
  app.use(manifestRoutes(registry, opts.maxManifestBytes, new MemoryBudget(opts.maxBufferedManifestBytes)));
  app.use(methodNotAllowed);
  app.use(notFound);
  app.use(errorHandler(log));

  const guard = auth && authenticate(auth.authenticator, auth.challenge);
  const fastRead = blobReads(registry);
  const fail = failureResponder(log);
  const admit = async (req: IncomingMessage, res: Exchange, path: string) => {
    if (guard) await guard(req, res, path);
    const read = fastRead(req.method, path);
    if (read) await read(req, res);
    else app(req, res);
  };
  return (req, res) => {
    const ex = exchange(res);
    track(req, ex);
    const path = requestPath(req);
    try {
      if (path === '/v2' || path.startsWith('/v2/')) {
        ex.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
        checkPath(path);
      }
    } catch (err) {
      return fail(err, req, ex);
    }
    admit(req, ex, path).catch((err: unknown) => fail(err, req, ex));
  };
}
