import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Exchange } from './exchange.js';
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
  UPLOAD_TOO_LARGE: 413,
  STORAGE_FULL: 507,
  NO_ROOM: 507,
  TIER_UNAVAILABLE: 503,
  PARAMETER_INVALID: 400,
};

/**
 * Internal codes that are not in the OCI list are reported with the nearest code clients understand; a full disk
 * goes out as distribution's `UNKNOWN`, the code of every 5xx.
 */
const WIRE_CODE: Partial<Record<ErrorCode, string>> = {
  UPLOAD_OUT_OF_ORDER: 'BLOB_UPLOAD_INVALID',
  MANIFEST_TOO_LARGE: 'SIZE_INVALID',
  UPLOAD_TOO_LARGE: 'SIZE_INVALID',
  STORAGE_FULL: 'UNKNOWN',
  NO_ROOM: 'UNKNOWN',
  // distribution's code for 503 (errcode.ErrorCodeUnavailable).
  TIER_UNAVAILABLE: 'UNAVAILABLE',
};

/** Seconds a client is told to wait after a 429 (a busy moment, not a quota). */
const RETRY_AFTER_SECONDS = 1;

export function statusOf(code: ErrorCode): number {
  return STATUS[code];
}

/** The code an error carries on the wire. */
export function wireCode(code: ErrorCode): string {
  return WIRE_CODE[code] ?? code;
}

function errorBody(code: string, message: string, detail: unknown = null): string {
  return JSON.stringify({ errors: [{ code, message, detail }] });
}

/** What every JSON error body is sent as (what express's `res.json` sends too). */
const JSON_TYPE = 'application/json; charset=utf-8';

/** Plain Node response calls, so that the front door and express's routes send errors alike. */
export function sendError(res: Exchange, err: OciError): void {
  const status = STATUS[err.code];
  const code = wireCode(err.code);
  // The log says what the client was told.
  res.locals.errorCode = code;
  if (res.headersSent) {
    // The response is already streaming: the only honest signal left is to cut the connection.
    res.destroy(err);
    return;
  }
  res.statusCode = status;
  res.setHeader('Content-Type', JSON_TYPE);
  if (err.detail && typeof err.detail === 'object' && 'offset' in err.detail) {
    const offset = Number((err.detail as { offset: unknown }).offset);
    res.setHeader('Range', `0-${Math.max(0, offset - 1)}`);
  }
  if (err.code === 'RANGE_INVALID' && err.detail && typeof err.detail === 'object' && 'size' in err.detail) {
    res.setHeader('Content-Range', `bytes */${Number((err.detail as { size: unknown }).size)}`);
  }
  if (err.code === 'TOOMANYREQUESTS') {
    const wait = err.detail && typeof err.detail === 'object' && 'retryAfter' in err.detail ? Number(err.detail.retryAfter) : RETRY_AFTER_SECONDS;
    res.setHeader('Retry-After', String(wait));
  }
  const body = errorBody(code, err.message, err.detail);
  res.setHeader('Content-Length', String(Buffer.byteLength(body)));
  res.end(body);
}

/**
 * A request refused below the routes (framing, the HTTP parser, the connection cap): HTTP fixes the status, the
 * body is an OCI error all the same, and the connection is closed because what follows on it cannot be trusted.
 */
export interface Refusal {
  status: number;
  code: string;
  message: string;
}

/** What a framing check found wrong, by the header at fault. */
export interface FramingProblem {
  header: 'content-length' | 'transfer-encoding' | 'host' | 'version';
  message: string;
}

export function framingRefusal(p: FramingProblem): Refusal {
  return { status: 400, code: p.header === 'content-length' ? 'SIZE_INVALID' : 'UNSUPPORTED', message: p.message };
}

export const CONNECT_REFUSAL: Refusal = { status: 405, code: 'UNSUPPORTED', message: 'CONNECT is not supported: this is a registry, not a proxy' };

export const EXPECTATION_REFUSAL: Refusal = { status: 417, code: 'UNSUPPORTED', message: 'only "Expect: 100-continue" is supported' };

export const CONNECTION_REFUSAL: Refusal = {
  status: STATUS.TOOMANYREQUESTS,
  code: 'TOOMANYREQUESTS',
  message: 'too many open connections; retry shortly',
};

/**
 * An error of Node's HTTP parser (the `clientError` event) as a refusal; undefined for a failing socket (reset,
 * broken pipe), which nobody is left to answer.
 */
export function parserRefusal(err: NodeJS.ErrnoException & { reason?: string }): Refusal | undefined {
  const reason = typeof err.reason === 'string' ? err.reason : 'malformed request';
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, code: 'UNSUPPORTED', message: 'the request headers did not arrive in time' };
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, code: 'UNSUPPORTED', message: 'the request headers are too large' };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { status: 413, code: 'SIZE_INVALID', message: 'the chunk extensions are too large' };
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return framingRefusal({ header: 'content-length', message: reason });
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return framingRefusal({ header: 'transfer-encoding', message: reason });
    default:
      return err.code?.startsWith('HPE_') ? { status: 400, code: 'UNSUPPORTED', message: `malformed request: ${reason}` } : undefined;
  }
}

function refusalHeaders(r: Refusal, body: string): Record<string, string> {
  return {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    Connection: 'close',
    ...(r.code === 'TOOMANYREQUESTS' ? { 'Retry-After': String(RETRY_AFTER_SECONDS) } : {}),
  };
}

/** Sends a refusal through the request's own response (which then closes the connection). */
export function sendRefusal(res: ServerResponse, r: Refusal): void {
  const body = errorBody(r.code, r.message);
  res.writeHead(r.status, refusalHeaders(r, body)).end(body);
}

/** A refusal as a complete HTTP/1.1 response, for a socket no response object is writing on. */
export function refusalBytes(r: Refusal): Buffer {
  const body = errorBody(r.code, r.message);
  const headers = refusalHeaders(r, body);
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return Buffer.from(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}\r\n${lines}\r\n${body}`, 'latin1');
}

/** Which resource a path under /v2/ that no route serves was after, for a 404 with a code clients act on. */
function unknownCode(path: string): ErrorCode | undefined {
  if (!path.startsWith('/v2/')) return undefined;
  if (/\/blobs\/uploads(\/|$)/.test(path)) return 'BLOB_UPLOAD_UNKNOWN';
  if (/\/manifests(\/|$)/.test(path)) return 'MANIFEST_UNKNOWN';
  if (/\/blobs(\/|$)/.test(path)) return 'BLOB_UNKNOWN';
  if (/\/(tags|referrers)(\/|$)/.test(path)) return 'NAME_UNKNOWN';
  return undefined;
}

/** The fallback: a path no route serves is a 404 with the code its shape implies, or UNSUPPORTED. */
export const notFound: RequestHandler = (req, res, next) => {
  const code = unknownCode(req.path);
  if (code) return next(new OciError(code, 'no such resource'));
  res.locals.errorCode = 'UNSUPPORTED';
  const body = errorBody('UNSUPPORTED', 'no such endpoint');
  res.status(404).set({ 'Content-Type': JSON_TYPE, 'Content-Length': String(Buffer.byteLength(body)) }).end(body);
};

/**
 * Answers a request that failed: OCI errors as such, anything else as a logged 500 that reveals nothing internal.
 * The one place both the front door and express's error middleware send failures through.
 */
export function failureResponder(log: Logger): (err: unknown, req: IncomingMessage, res: Exchange) => void {
  return (err, req, res) => {
    if (err instanceof OciError) return sendError(res, err);
    const status = typeof err === 'object' && err !== null && 'status' in err ? Number(err.status) : 500;
    if (status >= 400 && status < 500 && !res.headersSent) {
      // A client error raised by express or Node itself (malformed request): keep its status.
      res.statusCode = status;
      res.setHeader('Content-Type', JSON_TYPE);
      res.end(errorBody('UNSUPPORTED', 'malformed request'));
      return;
    }
    if (req.socket.destroyed) {
      // The client went away mid-request (an aborted upload): nobody is left to answer, and nothing failed here.
      log.info({ method: req.method, reason: (err as Error)?.message }, 'client went away mid-request');
      return void res.destroy();
    }
    log.error({ err, method: req.method, url: (req.url ?? '').slice(0, 300) }, 'request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.statusCode = 500;
    res.setHeader('Content-Type', JSON_TYPE);
    res.end(errorBody('UNKNOWN', 'internal error'));
  };
}

/** Express error middleware: the same responder. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  const respond = failureResponder(log);
  return (err: unknown, req, res, _next) => respond(err, req, res);
}
