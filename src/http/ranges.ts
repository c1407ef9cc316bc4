import { OciError } from '../core/errors.js';

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * Parses a `Range` request header against a blob of `size` bytes (RFC 9110). Returns undefined when the whole
 * blob should be sent (no header, or several ranges, which a server may answer with the full content), a range for
 * 206, and throws RANGE_INVALID (416) for a malformed or unsatisfiable one.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=([^,]*)$/.exec(header.trim());
  if (!m) {
    if (/^bytes=.*,/.test(header.trim())) return undefined;
    throw unsatisfiable(size, `malformed Range "${header.slice(0, 100)}"`);
  }
  const spec = /^\s*(\d*)-(\d*)\s*$/.exec(m[1]!);
  if (!spec || (spec[1] === '' && spec[2] === '')) throw unsatisfiable(size, `malformed Range "${header.slice(0, 100)}"`);
  if (spec[1] === '') {
    const suffix = Number(spec[2]);
    if (suffix === 0 || size === 0) throw unsatisfiable(size, 'empty suffix range');
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(spec[1]);
  const end = spec[2] === '' ? size - 1 : Math.min(Number(spec[2]), size - 1);
  if (spec[2] !== '' && Number(spec[2]) < start) throw unsatisfiable(size, 'range end before start');
  if (start >= size) throw unsatisfiable(size, `range starts at ${start}, blob has ${size} bytes`);
  return { start, end };
}

function unsatisfiable(size: number, message: string): OciError {
  return new OciError('RANGE_INVALID', message, { size });
}

/**
 * Parses an upload chunk's `Content-Range`: the OCI form `start-end`, and the `bytes start-end/total` form some
 * clients send. Both ends inclusive.
 */
export function parseContentRange(header: string | undefined): ByteRange | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) throw new OciError('UPLOAD_OUT_OF_ORDER', `malformed Content-Range "${header.slice(0, 100)}"`);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start || !Number.isSafeInteger(end)) {
    throw new OciError('UPLOAD_OUT_OF_ORDER', `invalid Content-Range "${header.slice(0, 100)}"`);
  }
  return { start, end };
}
