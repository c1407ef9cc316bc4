/**
 * Every error code the daemon can put on the wire is in README's list (issue 9: STORAGE_FULL's was not). The codes
 * are taken from the one mapper (src/http/oci-errors.ts) and the two catch-alls, not typed in here.
 */
import { readFileSync } from 'node:fs';
import type { NextFunction, Request, Response } from 'express';
import { describe, expect, it } from 'vitest';
import { OciError, type ErrorCode } from '../../src/core/errors.js';
import { notFound } from '../../src/http/app.js';
import { errorHandler, sendError } from '../../src/http/oci-errors.js';
import { createLogger } from '../../src/observability/logger.js';

/** Exhaustive by type: a new ErrorCode does not compile until it is listed here. */
const ALL_CODES: Record<ErrorCode, true> = {
  BLOB_UNKNOWN: true,
  BLOB_UPLOAD_INVALID: true,
  BLOB_UPLOAD_UNKNOWN: true,
  DIGEST_INVALID: true,
  MANIFEST_BLOB_UNKNOWN: true,
  MANIFEST_INVALID: true,
  MANIFEST_UNKNOWN: true,
  NAME_INVALID: true,
  NAME_UNKNOWN: true,
  SIZE_INVALID: true,
  TAG_INVALID: true,
  UNAUTHORIZED: true,
  DENIED: true,
  UNSUPPORTED: true,
  TOOMANYREQUESTS: true,
  PAGINATION_NUMBER_INVALID: true,
  RANGE_INVALID: true,
  UPLOAD_OUT_OF_ORDER: true,
  MANIFEST_TOO_LARGE: true,
  STORAGE_FULL: true,
  PARAMETER_INVALID: true,
};

/** A response that records the code of the error body it is given. */
function recorder(): { res: Response; code: () => string } {
  let body = '';
  const res = {
    locals: {},
    headersSent: false,
    status: () => res,
    set: () => res,
    end: (b: string) => (body = b),
    json: (b: unknown) => (body = JSON.stringify(b)),
  };
  return { res: res as unknown as Response, code: () => (JSON.parse(body) as { errors: [{ code: string }] }).errors[0].code };
}

function wireCodes(): Set<string> {
  const codes = new Set<string>();
  for (const code of Object.keys(ALL_CODES) as ErrorCode[]) {
    const r = recorder();
    sendError(r.res, new OciError(code, 'x'));
    codes.add(r.code());
  }
  const req = { method: 'GET', originalUrl: '/' } as Request;
  const next = (() => {}) as NextFunction;
  for (const err of [new Error('internal'), Object.assign(new Error('malformed'), { status: 400 })]) {
    const r = recorder();
    errorHandler(createLogger('silent'))(err, req, r.res, next);
    codes.add(r.code());
  }
  const r = recorder();
  void notFound(req, r.res, next);
  codes.add(r.code());
  return codes;
}

describe('error codes', () => {
  it("README's error list names every code the daemon sends", () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const bullet = /^- \*\*Errors\*\*[\s\S]*?(?=\n- \*\*|\n\n)/m.exec(readme)?.[0] ?? '';
    const listed = new Set([...bullet.matchAll(/`([A-Z_]{4,})`/g)].map((m) => m[1]!));
    const sent = wireCodes();
    expect(sent.size).toBeGreaterThan(10);
    expect([...sent].filter((c) => !listed.has(c)).sort()).toEqual([]);
  });
});
