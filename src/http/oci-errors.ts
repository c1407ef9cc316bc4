import type { ErrorRequestHandler, Response } from 'express';
import { OciError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';

/** The one place where error codes become HTTP statuses. */
const STATUS: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  UPLOAD_OUT_OF_ORDER: 416,
  MANIFEST_TOO_LARGE: 413,
  STORAGE_FULL: 507,
  PARAMETER_INVALID: 400,
};

/** Internal codes that are not in the OCI list are reported with the nearest OCI code clients understand. */
const WIRE_CODE: Partial<Record<ErrorCode, string>> = {
  UPLOAD_OUT_OF_ORDER: 'BLOB_UPLOAD_INVALID',
  MANIFEST_TOO_LARGE: 'SIZE_INVALID',
  STORAGE_FULL: 'UNKNOWN',
};

export function statusOf(code: ErrorCode): number {
  return STATUS[code];
}

export function sendError(res: Response, err: OciError): void {
  const status = STATUS[err.code];
  const code = WIRE_CODE[err.code] ?? err.code;
  // The log says what the client was told.
  res.locals.errorCode = code;
  if (res.headersSent) {
    // The response is already streaming: the only honest signal left is to cut the connection.
    res.destroy(err);
    return;
  }
  res.status(status).set('Content-Type', 'application/json');
  if (err.detail && typeof err.detail === 'object' && 'offset' in err.detail) {
    const offset = Number((err.detail as { offset: unknown }).offset);
    res.set('Range', `0-${Math.max(0, offset - 1)}`);
  }
  if (err.code === 'RANGE_INVALID' && err.detail && typeof err.detail === 'object' && 'size' in err.detail) {
    res.set('Content-Range', `bytes */${Number((err.detail as { size: unknown }).size)}`);
  }
  const body = JSON.stringify({ errors: [{ code, message: err.message, detail: err.detail ?? null }] });
  res.set('Content-Length', String(Buffer.byteLength(body)));
  res.end(body);
}

/** Express error middleware: OCI errors as such, anything else as a logged 500 that reveals nothing internal. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (err instanceof OciError) return sendError(res, err);
    const status = typeof err === 'object' && err !== null && 'status' in err ? Number(err.status) : 500;
    if (status >= 400 && status < 500 && !res.headersSent) {
      // A client error raised by express or Node itself (malformed request): keep its status.
      res.status(status).json({ errors: [{ code: 'UNSUPPORTED', message: 'malformed request', detail: null }] });
      return;
    }
    log.error({ err, method: req.method, url: req.originalUrl.slice(0, 300) }, 'request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(500).json({ errors: [{ code: 'UNKNOWN', message: 'internal error', detail: null }] });
  };
}
