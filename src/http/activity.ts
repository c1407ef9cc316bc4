import type { ReferenceActivity } from '../cache/reference-stats.js';
import type { RequestOutcome } from '../observability/metrics.js';

const BLOB_ROUTE = '/v2/<name>/blobs/<digest>';
const MANIFEST_ROUTE = '/v2/<name>/manifests/<reference>';

/** A tag, not a digest (digests carry their algorithm: `sha256:…`). */
const isTag = (ref: string) => !ref.includes(':');

/**
 * What a request that ended at `at` (epoch ms) did to a cache reference, for the analytics: a manifest PUT or GET
 * under a tag, a blob HEAD answered (found or not), blob bytes sent. Pure; anything else (errors, digests for
 * manifests) is none.
 */
export function referenceActivity(o: RequestOutcome, at: number): ReferenceActivity | undefined {
  const { repo, ref } = o;
  if (repo === undefined || ref === undefined) return undefined;
  if (o.route === MANIFEST_ROUTE && isTag(ref)) {
    if (o.method === 'PUT' && o.status === 201) {
      return { at, kind: 'push', repo, tag: ref, ...(o.cacheConfigBytes !== undefined ? { cacheConfigBytes: o.cacheConfigBytes } : {}) };
    }
    if (o.method === 'GET' && o.status === 200) return { at, kind: 'pull', repo, tag: ref };
  } else if (o.route === BLOB_ROUTE) {
    if (o.method === 'HEAD' && (o.status === 200 || o.status === 404)) return { at, kind: 'probe', repo, digest: ref, hit: o.status === 200 };
    if (o.method === 'GET' && (o.status === 200 || o.status === 206) && o.bytesOut > 0) return { at, kind: 'served', repo, digest: ref, bytes: o.bytesOut };
  }
  return undefined;
}
