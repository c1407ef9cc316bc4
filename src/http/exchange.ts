import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * A response with the per-request fields that the request log, authentication and the routes share (route
 * template, repository, caller, error code…). The front door creates `locals` before anything else runs; express
 * keeps the object it finds, so its routes write to the same one.
 */
export type Exchange = ServerResponse & { locals: Record<string, any> };

/** Gives `res` its `locals` (once, before any step reads them). */
export function exchange(res: ServerResponse): Exchange {
  const ex = res as Exchange;
  ex.locals ??= Object.create(null) as Record<string, any>;
  return ex;
}

/**
 * The path of the request target, without the query, and from the path on for the absolute form
 * (`GET http://host/v2/ HTTP/1.1`, RFC 9112 §3.2.2) — what express calls `req.path`, without parsing the URL.
 */
export function requestPath(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  return path.charCodeAt(0) === 47 /* / */ ? path : path.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '') || '/';
}
