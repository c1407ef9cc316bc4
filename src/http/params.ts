import type { Request } from 'express';
import { OciError } from '../core/errors.js';
import { parseDigest, type Digest } from '../core/digest.js';
import { parseName } from '../registry/names.js';

/** Route regexes capture path parts raw; these validate them before anything else happens. */
export function nameParam(req: Request): string {
  return parseName(String(req.params[0] ?? ''));
}

export function pathDigest(req: Request): Digest {
  return parseDigest(String(req.params[1] ?? ''));
}

/** A single-valued query parameter; repeated parameters are ambiguous and rejected. */
export function queryParam(req: Request, key: string): string | undefined {
  const v = req.query[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OciError('UNSUPPORTED', `query parameter "${key}" must be given once`);
  return v;
}

export function queryDigest(req: Request, key: string): Digest | undefined {
  const v = queryParam(req, key);
  return v === undefined ? undefined : parseDigest(v);
}

/** `n` for pagination: a non-negative integer, capped to keep one response bounded. */
export function pageSize(req: Request, max = 10_000): number | undefined {
  const v = queryParam(req, 'n');
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new OciError('PAGINATION_NUMBER_INVALID', `invalid page size "${v.slice(0, 20)}"`);
  return Math.min(Number(v), max);
}
