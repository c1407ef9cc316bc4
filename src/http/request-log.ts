import type { Request, RequestHandler } from 'express';
import type { Logger } from '../observability/logger.js';

/**
 * Counts the request body as it is read, whoever reads it and however the request ends (a refused digest read the
 * whole body too). The counter joins the first reader — a 'data' listener or a resume() that discards — and never
 * starts the flow itself: a 'data' listener of its own, added up front, would set the body flowing before the
 * route is ready for it.
 */
function bodyCounter(req: Request): () => number {
  let bytes = 0;
  let counting = false;
  const start = () => {
    if (counting) return;
    counting = true;
    req.off('newListener', onListener);
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
  };
  const onListener = (event: string | symbol) => event === 'data' && start();
  req.on('newListener', onListener);
  req.once('resume', start);
  return () => bytes;
}

/**
 * One JSON line per request: method, route template (never the raw URL, which may carry hostile input),
 * repository, the caller's name with auth on, status, the error code as sent, bytes in/out (bodies) and duration.
 */
export function requestLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const bytesIn = bodyCounter(req);
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = res.headersSent ? res.statusCode : 0;
      const line = {
        method: req.method,
        route: res.locals.route ?? 'unmatched',
        repo: res.locals.repo,
        // Who, by name (never a credential), when auth is on.
        user: res.locals.user,
        // The tag that answered for a missing one (registry.fallback).
        fallback: res.locals.fallback,
        status,
        code: res.locals.errorCode,
        bytesIn: bytesIn(),
        // Streamed bodies (blobs, manifests) say their size; everything else carries a Content-Length.
        bytesOut: req.method === 'HEAD' ? 0 : (res.locals.bytesOut ?? Number(res.getHeader('content-length') ?? 0)),
        ms: Math.round(ms * 100) / 100,
        complete: res.writableFinished,
      };
      if (status >= 500 || status === 0) log.warn(line, 'request');
      else log.info(line, 'request');
    });
    next();
  };
}
