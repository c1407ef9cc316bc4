import type { RequestHandler } from 'express';
import type { Logger } from '../observability/logger.js';

/**
 * One JSON line per request: method, route template (never the raw URL, which may carry hostile input),
 * repository, status, bytes in/out and duration.
 */
export function requestLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = res.headersSent ? res.statusCode : 0;
      const line = {
        method: req.method,
        route: res.locals.route ?? 'unmatched',
        repo: res.locals.repo,
        status,
        code: res.locals.errorCode,
        bytesIn: res.locals.bytesIn ?? 0,
        bytesOut: res.locals.bytesOut ?? Number(res.getHeader('content-length') ?? 0),
        ms: Math.round(ms * 100) / 100,
        complete: res.writableFinished,
      };
      if (status >= 500 || status === 0) log.warn(line, 'request');
      else log.info(line, 'request');
    });
    next();
  };
}
