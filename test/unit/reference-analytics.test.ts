import { describe, expect, it } from 'vitest';
import { referenceActivity } from '../../src/http/activity.js';
import { FETCH_GRACE_SECONDS, emptyCounters, hitRate, referenceWarnings } from '../../src/cache/reference-stats.js';

const BLOB = '/v2/<name>/blobs/<digest>';
const MANIFEST = '/v2/<name>/manifests/<reference>';
const D = `sha256:${'a'.repeat(64)}`;
const outcome = (method: string, route: string, status: number, ref: string, extra = {}) => ({
  method,
  route,
  status,
  repo: 'ci/app',
  ref,
  bytesIn: 0,
  bytesOut: 0,
  seconds: 0,
  ...extra,
});

describe('referenceActivity', () => {
  it('reads exports, imports, probes and served bytes from finished requests', () => {
    expect(referenceActivity(outcome('PUT', MANIFEST, 201, 'main', { cacheConfigBytes: 10 }))).toEqual({ kind: 'push', repo: 'ci/app', tag: 'main', cacheConfigBytes: 10 });
    expect(referenceActivity(outcome('GET', MANIFEST, 200, 'main'))).toEqual({ kind: 'pull', repo: 'ci/app', tag: 'main' });
    expect(referenceActivity(outcome('HEAD', BLOB, 200, D))).toEqual({ kind: 'probe', repo: 'ci/app', digest: D, hit: true });
    expect(referenceActivity(outcome('HEAD', BLOB, 404, D))).toEqual({ kind: 'probe', repo: 'ci/app', digest: D, hit: false });
    expect(referenceActivity(outcome('GET', BLOB, 206, D, { bytesOut: 5 }))).toEqual({ kind: 'served', repo: 'ci/app', digest: D, bytes: 5 });
  });

  it('ignores manifests by digest (an index child), failures, and requests no route parsed', () => {
    expect(referenceActivity(outcome('PUT', MANIFEST, 201, D))).toBeUndefined();
    expect(referenceActivity(outcome('GET', MANIFEST, 404, 'main'))).toBeUndefined();
    expect(referenceActivity(outcome('HEAD', BLOB, 400, D))).toBeUndefined();
    expect(referenceActivity(outcome('GET', BLOB, 200, D))).toBeUndefined(); // no bytes sent
    expect(referenceActivity({ ...outcome('HEAD', BLOB, 200, D), repo: undefined })).toBeUndefined();
  });
});

describe('reference warnings and hit rate', () => {
  it('flags a cache config over 1 MiB', () => {
    expect(referenceWarnings({ ...emptyCounters(), cacheConfigBytes: 1024 * 1024 }, 0)).toEqual([]);
    expect(referenceWarnings({ ...emptyCounters(), cacheConfigBytes: 1024 * 1024 + 1 }, 0)).toEqual(['cache-config-too-large']);
  });

  it('flags an import whose layers were never fetched, once the importer had time to fetch them', () => {
    const imported = { ...emptyCounters(), pulls: 1, lastImport: 1000 };
    expect(referenceWarnings(imported, 1000 + FETCH_GRACE_SECONDS - 1)).toEqual([]);
    expect(referenceWarnings(imported, 1000 + FETCH_GRACE_SECONDS)).toEqual(['imported-layers-never-fetched']);
    expect(referenceWarnings({ ...imported, blobsServed: 1, servedBytes: 10 }, 1000 + FETCH_GRACE_SECONDS)).toEqual([]);
  });

  it('hit rate: skipped uploads over all blobs seen at export; none before an export', () => {
    expect(hitRate(emptyCounters())).toBeNull();
    expect(hitRate({ ...emptyCounters(), uploadsSkipped: 3, uploaded: 1 })).toBe(0.75);
  });
});
