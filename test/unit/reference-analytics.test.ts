import { describe, expect, it } from 'vitest';
import { referenceActivity } from '../../src/http/activity.js';
import { FETCH_GRACE_SECONDS, ProbeQueue, emptyCounters, hitRate, referenceWarnings } from '../../src/cache/reference-stats.js';

const BLOB = '/v2/<name>/blobs/<digest>';
const MANIFEST = '/v2/<name>/manifests/<reference>';
const D = `sha256:${'a'.repeat(64)}`;
const AT = 1_700_000_000_000;
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
    expect(referenceActivity(outcome('PUT', MANIFEST, 201, 'main', { cacheConfigBytes: 10 }), AT)).toEqual({ at: AT, kind: 'push', repo: 'ci/app', tag: 'main', cacheConfigBytes: 10 });
    expect(referenceActivity(outcome('GET', MANIFEST, 200, 'main'), AT)).toEqual({ at: AT, kind: 'pull', repo: 'ci/app', tag: 'main' });
    expect(referenceActivity(outcome('HEAD', BLOB, 200, D), AT)).toEqual({ at: AT, kind: 'probe', repo: 'ci/app', digest: D, hit: true });
    expect(referenceActivity(outcome('HEAD', BLOB, 404, D), AT)).toEqual({ at: AT, kind: 'probe', repo: 'ci/app', digest: D, hit: false });
    expect(referenceActivity(outcome('GET', BLOB, 206, D, { bytesOut: 5 }), AT)).toEqual({ at: AT, kind: 'served', repo: 'ci/app', digest: D, bytes: 5 });
  });

  it('ignores manifests by digest (an index child), failures, and requests no route parsed', () => {
    expect(referenceActivity(outcome('PUT', MANIFEST, 201, D), AT)).toBeUndefined();
    expect(referenceActivity(outcome('GET', MANIFEST, 404, 'main'), AT)).toBeUndefined();
    expect(referenceActivity(outcome('HEAD', BLOB, 400, D), AT)).toBeUndefined();
    expect(referenceActivity(outcome('GET', BLOB, 200, D), AT)).toBeUndefined(); // no bytes sent
    expect(referenceActivity({ ...outcome('HEAD', BLOB, 200, D), repo: undefined }, AT)).toBeUndefined();
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

describe('ProbeQueue (the HEADs waiting for their push)', () => {
  const probe = (i: number, at = i) => ({ digest: `d${i}`, hit: i % 2 === 0, at });

  it('keeps the newest `max` probes, in order, however many arrive', () => {
    const q = new ProbeQueue();
    for (let i = 0; i < 10_000; i++) q.add(probe(i), 0, 1000);
    expect(q.size).toBe(1000);
    const all = q.take(() => true);
    expect(all.map((p) => p.at)).toEqual(Array.from({ length: 1000 }, (_, i) => 9000 + i));
    expect(q.size).toBe(0);
  });

  it('drops the probes older than the horizon', () => {
    const q = new ProbeQueue();
    for (let i = 0; i < 10; i++) q.add(probe(i), 0, 100);
    q.add(probe(10), 7, 100);
    expect(q.take(() => true).map((p) => p.at)).toEqual([7, 8, 9, 10]);
  });

  it('take removes what it accepts and keeps the rest in order for a later push', () => {
    const q = new ProbeQueue();
    for (let i = 0; i < 6; i++) q.add(probe(i), 0, 100);
    expect(q.take((p) => p.hit).map((p) => p.digest)).toEqual(['d0', 'd2', 'd4']);
    q.add(probe(6), 0, 100);
    expect(q.size).toBe(4);
    expect(q.take(() => true).map((p) => p.digest)).toEqual(['d1', 'd3', 'd5', 'd6']);
  });
});
