/**
 * Typed errors shared by every layer. Each carries an OCI distribution error code; the HTTP layer maps codes to
 * statuses in exactly one place (src/http/oci-errors.ts), so storage and domain code never think about HTTP.
 */
export type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'PAGINATION_NUMBER_INVALID'
  | 'RANGE_INVALID'
  | 'UPLOAD_OUT_OF_ORDER'
  | 'MANIFEST_TOO_LARGE'
  | 'UPLOAD_TOO_LARGE'
  | 'STORAGE_FULL'
  /** The budget has no room that eviction could make (unlike STORAGE_FULL, the disk itself is not full). */
  | 'NO_ROOM'
  /** A tier below the local disk cannot be reached now (read-through during an outage): retry later. */
  | 'TIER_UNAVAILABLE'
  /** A missing or malformed parameter of an admin call (the admin API is not OCI's and has no code of its own). */
  | 'PARAMETER_INVALID';

export class OciError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = 'OciError';
  }
}

export const isOciError = (e: unknown): e is OciError => e instanceof OciError;

/** Node's fs errors carry a string code; this narrows them without `any`. */
export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'string'
    ? (e as { code: string }).code
    : undefined;
}
