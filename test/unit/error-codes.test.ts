/** The README's list of error codes is the contract: every code and status the server sends is in it. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/core/errors.js';
import {
  CONNECTION_REFUSAL,
  EXPECTATION_REFUSAL,
  framingRefusal,
  parserRefusal,
  statusOf,
  wireCode,
  type Refusal,
} from '../../src/http/oci-errors.js';

// Every internal code, checked complete by the compiler.
const ALL: Record<ErrorCode, true> = {
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
  UPLOAD_TOO_LARGE: true,
  NO_ROOM: true,
  TIER_UNAVAILABLE: true,
  PARAMETER_INVALID: true,
};

function readmeCodes(): Map<string, number[]> {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const out = new Map<string, number[]>();
  for (const m of readme.matchAll(/^\s*\| `([A-Z_]+)` \| ([\d, ]+) \|/gm)) out.set(m[1]!, m[2]!.split(',').map((s) => Number(s.trim())));
  return out;
}

describe('the README lists every error code the server sends', () => {
  const listed = readmeCodes();
  const expectListed = (code: string, status: number) => {
    expect(listed.has(code), `${code} is not in the README's list`).toBe(true);
    expect(listed.get(code), `${code} with ${status}`).toContain(status);
  };

  it('codes from the error mapper', () => {
    for (const code of Object.keys(ALL) as ErrorCode[]) expectListed(wireCode(code), statusOf(code));
    expectListed('UNKNOWN', 507);
  });

  it('refusals below the routes, the fallback 404 and internal errors', () => {
    const parser = ['ERR_HTTP_REQUEST_TIMEOUT', 'HPE_HEADER_OVERFLOW', 'HPE_CHUNK_EXTENSIONS_OVERFLOW', 'HPE_INVALID_CONTENT_LENGTH', 'HPE_UNEXPECTED_CONTENT_LENGTH', 'HPE_INVALID_TRANSFER_ENCODING', 'HPE_INVALID_METHOD'];
    const refusals: Refusal[] = [
      ...parser.map((code) => parserRefusal(Object.assign(new Error('x'), { code }))!),
      ...(['content-length', 'transfer-encoding', 'host'] as const).map((header) => framingRefusal({ header, message: 'x' })),
      EXPECTATION_REFUSAL,
      CONNECTION_REFUSAL,
    ];
    for (const r of refusals) expectListed(r.code, r.status);
    expect(parserRefusal(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBeUndefined();
    // src/http/oci-errors.ts: notFound outside the resource paths, errorHandler for express's client errors and 500s.
    expectListed('UNSUPPORTED', 404);
    expectListed('UNSUPPORTED', 400);
    expectListed('UNKNOWN', 500);
  });
});
