import type { Request } from 'express';
import { OciError, type ErrorCode } from '../core/errors.js';
import { parseDigest, type Digest } from '../core/digest.js';
import { parseName } from '../registry/names.js';

/** Route regexes capture path parts raw; these validate them before anything else happens. */
export function nameParam(req: Request): string {
  return parseName(String(req.params[0] ?? ''));
}

export function pathDigest(req: Request): Digest {
  return parseDigest(String(req.params[1] ?? ''));
}

/**
 * A single-valued query parameter; repeated parameters are ambiguous and rejected, with the code of the value's
 * kind when it has one (a repeated digest is an invalid digest: 400, not 405).
 */
export function queryParam(req: Request, key: string, code: ErrorCode = 'UNSUPPORTED'): string | undefined {
  const v = req.query[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OciError(code, `query parameter "${key}" must be given once`);
  return v;
}

export function queryDigest(req: Request, key: string): Digest | undefined {
  const v = queryParam(req, key, 'DIGEST_INVALID');
  return v === undefined ? undefined : parseDigest(v);
}

/** `n` for pagination: a non-negative integer, capped to keep one response bounded. */
export function pageSize(req: Request, max = 10_000): number | undefined {
  const v = queryParam(req, 'n', 'PAGINATION_NUMBER_INVALID');
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new OciError('PAGINATION_NUMBER_INVALID', `invalid page size "${v.slice(0, 20)}"`);
  return Math.min(Number(v), max);
}
