/**
 * Per-reference analytics (issue 12, item 2) on the real daemon, with one and two worker processes: a BuildKit-
 * shaped export (HEAD each blob, upload the missing, PUT the cache index by tag) done twice — the second skips
 * every upload — then an import; `du --json`, GET /admin/v1/references and /metrics report exactly what happened,
 * summed over the workers by the primary, as does the hit rate over time in `status`, and the figures survive a
 * restart. With `analytics.enabled: false` nothing is counted.
 */
import { writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReferenceReport } from '../../src/cache/reference-report.js';
import { hitTotals } from '../../src/cache/hit-history.js';
import { KiB, adminRequest, cliJson, pullRef, pushRef, putBlob, randomLayers, startCache, status, waitFor, writeCacheConfig, type CacheDaemon } from '../helpers/cache-helpers.js';
import { cleanup, makeTempDir, servingPids } from '../helpers/daemon.js';
import { MT, buildkitCacheConfig, buildkitCacheIndex, request, sha256 } from '../helpers/registry-client.js';
import { parseExposition, sampleValue } from '../helpers/prometheus-text.js';

const REPO = 'ci/cache';

/** BuildKit's export: HEAD every blob, upload only the missing ones, then the index under `tag`. */
async function exportCache(d: CacheDaemon, tag: string, blobs: Buffer[], index: Buffer): Promise<number> {
  let skipped = 0;
  for (const b of blobs) {
    const head = await d.client.headBlob(REPO, sha256(b));
    if (head.status === 200) skipped++;
    else await putBlob(d.client, REPO, b);
  }
  const put = await d.client.putManifest(REPO, tag, index, MT.OCI_INDEX);
  expect(put.status, put.body.toString()).toBe(201);
  return skipped;
}

/** BuildKit's import: the index by tag, then every blob it lists. */
async function importCache(d: CacheDaemon, tag: string, blobs: Buffer[]): Promise<void> {
  expect((await d.client.getManifest(REPO, tag)).status).toBe(200);
  for (const b of blobs) expect((await d.client.getBlobDigest(REPO, sha256(b))).status).toBe(200);
}

const du = (d: CacheDaemon) => cliJson<ReferenceReport[]>(['du', '--data', d.dataDir]);
const find = (refs: ReferenceReport[], tag: string) => refs.find((r) => r.repo === REPO && r.tag === tag);

describe('reference analytics', () => {
  afterEach(cleanup);

  it.each([1, 2])('with %s worker(s): skipped uploads, saved bytes, pulls and warnings, exact', async (workers) => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers });
    const layers = randomLayers([64 * KiB, 128 * KiB, 256 * KiB]);
    const config = buildkitCacheConfig(layers, 'main');
    const blobs = [...layers, config];
    const index = buildkitCacheIndex(layers, config);
    const blobBytes = blobs.reduce((n, b) => n + b.length, 0);

    expect(await exportCache(d, 'main', blobs, index)).toBe(0);
    expect(await exportCache(d, 'main', blobs, index)).toBe(blobs.length);
    await importCache(d, 'main', blobs);
    // Same layers, a cache config over BuildKit's 1 MiB import limit (JSON padded with spaces).
    const bigConfig = Buffer.concat([buildkitCacheConfig(layers, 'big'), Buffer.alloc(1100 * KiB, 0x20)]);
    const bigIndex = buildkitCacheIndex(layers, bigConfig);
    expect(await exportCache(d, 'big', [...layers, bigConfig], bigIndex)).toBe(layers.length);

    const expected = {
      pushes: 2,
      uploaded: blobs.length,
      uploadsSkipped: blobs.length,
      savedBytes: blobBytes,
      hitRate: 0.5,
      pulls: 1,
      blobsServed: blobs.length,
      servedBytes: blobBytes,
      // The layers are shared with `big`; the index and the cache config are main's alone.
      ownBytes: index.length + config.length,
      sharedBytes: blobBytes - config.length,
      bytes: index.length + blobBytes,
      warnings: [],
    };
    // Signals reach the primary in batches, and a push claims its HEADs a moment later: wait for the counts.
    await waitFor('the analytics of both exports', async () => (find(await du(d), 'main')?.uploadsSkipped ?? 0) === blobs.length && (find(await du(d), 'big')?.uploadsSkipped ?? 0) === layers.length).catch(async (e) => {
      console.log(JSON.stringify(await du(d), null, 1));
      throw e;
    });
    const refs = await du(d);
    expect(find(refs, 'main')).toMatchObject(expected);
    expect(find(refs, 'main')!.lastPush).toBeDefined();
    expect(find(refs, 'main')!.lastImport).toBeDefined();
    expect(find(refs, 'big')).toMatchObject({
      pushes: 1,
      uploaded: 1,
      uploadsSkipped: layers.length,
      savedBytes: blobBytes - config.length,
      hitRate: layers.length / (layers.length + 1),
      pulls: 0,
      cacheConfigBytes: bigConfig.length,
      warnings: ['cache-config-too-large'],
    });
    if (workers === 2) expect(servingPids(d, REPO).size, 'requests reached both workers').toBe(2);

    // The admin API says the same; `ls` is `du`.
    const api = await adminRequest(d.admin, 'GET', '/admin/v1/references');
    expect(api.status).toBe(200);
    expect((JSON.parse(api.body.toString()) as { references: ReferenceReport[] }).references).toEqual(refs);
    expect(await cliJson<ReferenceReport[]>(['ls', '--data', d.dataDir])).toEqual(refs);

    // The top references as Prometheus series.
    const samples = parseExposition((await request('GET', `${d.url}/metrics`)).body.toString());
    expect(sampleValue(samples, 'buildcached_reference_saved_bytes_total', { reference: `${REPO}:main` })).toBe(blobBytes);
    expect(sampleValue(samples, 'buildcached_reference_uploads_skipped_total', { reference: `${REPO}:main` })).toBe(blobs.length);
    expect(sampleValue(samples, 'buildcached_reference_pulls_total', { reference: `${REPO}:main` })).toBe(1);
    expect(sampleValue(samples, 'buildcached_reference_pushes_total', { reference: `${REPO}:big` })).toBe(1);

    // The hit rate over time counts every lookup: the HEADs of the exports (4 misses, then 4 hits, then 3 hits and
    // a miss) and the import's manifest and 4 blobs (hits); Prometheus counts the same ones.
    const lookups = { hits: 12, misses: 5, rate: 12 / 17 };
    await waitFor('the lookups to reach the hit rate', async () => hitTotals((await status(d.url)).hitRate).hits === lookups.hits);
    expect(hitTotals((await status(d.url)).hitRate)).toEqual(lookups);
    const kinds = ['blob_head', 'blob_get', 'manifest'];
    expect(kinds.reduce((n, kind) => n + sampleValue(samples, 'buildcached_cache_hits_total', { kind })!, 0)).toBe(lookups.hits);
    expect(kinds.reduce((n, kind) => n + sampleValue(samples, 'buildcached_cache_misses_total', { kind })!, 0)).toBe(lookups.misses);

    // Persisted: a restarted daemon reports the same figures.
    expect((await d.stop()).code).toBe(0);
    const again = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers, dataDir: d.dataDir, configPath: d.configPath });
    expect(find(await du(again), 'main')).toMatchObject(expected);
    expect(hitTotals((await status(again.url)).hitRate)).toEqual(lookups);
  }, 60_000);

  it('analytics.enabled: false counts neither the references nor the hit rate', async () => {
    const configPath = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), { maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    await writeFile(configPath, 'analytics:\n  enabled: false\n', { flag: 'a' });
    const d = await startCache({ maxBytes: 0, pushGraceSeconds: 0, configPath });
    await pushRef(d.client, REPO, 'main', randomLayers([10 * KiB]));
    expect((await pullRef(d.client, REPO, 'main')).status).toBe('ok');
    // A stop delivers every worker's pending signals to the primary and saves what it counted: after a restart
    // the store shows what was ever recorded, and that is nothing.
    expect((await d.stop()).code).toBe(0);
    const again = await startCache({ maxBytes: 0, pushGraceSeconds: 0, dataDir: d.dataDir, configPath });
    expect(hitTotals((await status(again.url)).hitRate)).toEqual({ hits: 0, misses: 0, rate: null });
    expect(find(await du(again), 'main')).toMatchObject({ pushes: 0, pulls: 0, uploaded: 0, uploadsSkipped: 0, blobsServed: 0 });
    expect(find(await du(again), 'main')!.bytes).toBeGreaterThan(0);
  }, 60_000);
});
