import type { RequestHandler } from 'express';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Exchange } from './exchange.js';
import type { Logger } from '../observability/logger.js';
import type { RequestOutcome } from '../observability/metrics.js';

/** A client's X-Request-Id is kept when it is short and plain (it goes into logs and back into a header). */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@\/+=-]{1,128}$/;

/** The request's id: the client's own when it is sane, else a fresh one. */
export function requestId(header: string | string[] | undefined): string {
  return typeof header === 'string' && SANE_REQUEST_ID.test(header) ? header : randomUUID();
}

const NO_BODY = () => 0;

/**
 * Counts the request body as it is read, whoever reads it and however the request ends (a refused digest read the
 * whole body too). The counter joins the first reader — a 'data' listener or a resume() that discards — and never
 * starts the flow itself: a 'data' listener of its own, added up front, would set the body flowing before the
 * route is ready for it.
 */
function bodyCounter(req: IncomingMessage): () => number {
  // No Content-Length and no Transfer-Encoding: no body (RFC 9112 §6.3; the framing check refused the rest). The
  // common case of HEAD and GET, spared two listeners a request.
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) return NO_BODY;
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
 * One JSON line per request: its id (echoed in X-Request-Id), method, route template (never the raw URL, which
 * may carry hostile input), repository, the caller's name with auth on, status, the error code as sent, bytes
 * in/out (bodies) and duration; the same outcome feeds the HTTP metrics and the reference analytics.
 */
export function requestLog(log: Logger, observe?: (o: RequestOutcome) => void): (req: IncomingMessage, res: Exchange) => void {
  return (req, res) => {
    const started = process.hrtime.bigint();
    const bytesIn = bodyCounter(req);
    const id = requestId(req.headers['x-request-id']);
    res.setHeader('X-Request-Id', id);
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = res.headersSent ? res.statusCode : 0;
      const line = {
        reqId: id,
        method: req.method ?? '',
        route: (res.locals.route as string | undefined) ?? 'unmatched',
        repo: res.locals.repo,
        // Who, by name (never a credential), when auth is on.
        user: res.locals.user,
        // The tag that answered for a missing one (registry.fallback).
        fallback: res.locals.fallback,
        // A blob HEAD that waited for another client's upload of it (push coalescing).
        coalesced: res.locals.coalesced,
        status,
        code: res.locals.errorCode,
        bytesIn: bytesIn(),
        // Streamed bodies (blobs, manifests) say their size; everything else carries a Content-Length.
        bytesOut: req.method === 'HEAD' ? 0 : (res.locals.bytesOut ?? Number(res.getHeader('content-length') ?? 0)),
        ms: Math.round(ms * 100) / 100,
        complete: res.writableFinished,
      };
      // Named fields, not a spread of the line: this runs on every request (see bench --only metrics).
      observe?.({
        method: line.method,
        route: line.route,
        status,
        bytesIn: line.bytesIn,
        bytesOut: line.bytesOut,
        seconds: ms / 1000,
        repo: line.repo as string | undefined,
        ref: res.locals.ref as string | undefined,
        cacheConfigBytes: res.locals.cacheConfigBytes as number | undefined,
        coalesced: res.locals.coalesced as boolean | undefined,
      });
      if (status >= 500 || status === 0) log.warn(line, 'request');
      else log.info(line, 'request');
    });
  };
}

/** The same log for an express app of its own (the admin API, the metrics listener). */
export function requestLogMiddleware(log: Logger): RequestHandler {
  const track = requestLog(log);
  return (req, res, next) => {
    track(req, res);
    next();
  };
}
