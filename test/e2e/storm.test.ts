/**
 * A push/pull storm: 16 CI jobs at once, each exporting a BuildKit-shaped registry cache (layer blobs + a cache
 * config blob + an OCI index listing them, no platform) with every push style clients use, sharing some layers with
 * other jobs, then importing it again. No request may fail, every digest must verify, and the store must hold each
 * digest exactly once as DATA/blobs/sha256/<2 hex>/<hex>.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB } from '../helpers/content.js';
import { cleanup, startDaemon, type Daemon } from '../helpers/daemon.js';
import {
  buildkitCacheConfig,
  buildkitCacheIndex,
  expectStatus,
  MT,
  RegistryClient,
  request,
  sha256,
  type PushStyle,
} from '../helpers/registry-client.js';
import { blobTree, corruptBlobs, listDir } from '../helpers/store.js';

const CLIENTS = 16;
const STYLES: PushStyle[] = ['monolithic-post', 'post-put', 'patch-chunks-put', 'patch-chunked-te-put'];

/** 1–4 MiB, not aligned to anything. */
const blobSize = (n: number) => MiB + ((n * 987_659) % (3 * MiB));

interface Job {
  id: number;
  repo: string;
  tag: string;
  layers: Buffer[];
  cacheConfig: Buffer;
  index: Buffer;
}

describe('16 concurrent clients pushing and pulling overlapping caches', () => {
  let daemon: Daemon;
  const shared = Array.from({ length: 4 }, (_, i) => randomBytes(blobSize(100 + i)));
  const jobs: Job[] = Array.from({ length: CLIENTS }, (_, i) => {
    const unique = Array.from({ length: 3 }, (_, k) => randomBytes(blobSize(i * 3 + k)));
    const layers = [shared[i % 4]!, ...unique.slice(0, 2), shared[(i + 1) % 4]!, unique[2]!];
    const cacheConfig = buildkitCacheConfig(layers, `job${i}`);
    return { id: i, repo: i % 2 === 0 ? 'storm/app' : 'storm/other', tag: `job-${i}`, layers, cacheConfig, index: buildkitCacheIndex(layers, cacheConfig) };
  });
  // Jobs 0–3 also export to one shared tag: last writer wins.
  const mainWriters = jobs.slice(0, 4);

  beforeAll(async () => {
    daemon = await startDaemon();
  });
  afterAll(cleanup);

  /** One CI job: export (push) then import (pull) its cache, on its own keep-alive connections. */
  async function runJob(job: Job): Promise<void> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    const c = new RegistryClient(daemon.url, agent);
    try {
      for (const [k, blob] of job.layers.entries()) {
        const digest = sha256(blob);
        const style = STYLES[(job.id + k) % STYLES.length]!;
        // BuildKit HEADs first and skips blobs that exist; half the jobs push regardless, so identical
        // digests really are written concurrently.
        const head = await c.headBlob(job.repo, digest);
        if (head.status === 200) {
          expect(Number(head.headers['content-length'])).toBe(blob.length);
          expect(head.headers['docker-content-digest']).toBe(digest);
          if (job.id % 2 === 0) continue;
        } else {
          expectStatus(head, 404, `HEAD ${digest}`);
        }
        if (k === 3 && job.id % 4 === 1) {
          // Cross-repository mount of a shared layer from the other repository; 202 means "upload it".
          const from = job.repo === 'storm/app' ? 'storm/other' : 'storm/app';
          const m = await c.req('POST', `/v2/${job.repo}/blobs/uploads/?mount=${digest}&from=${from}`);
          if (m.status === 201) {
            expect(m.headers['docker-content-digest']).toBe(digest);
            continue;
          }
          expectStatus(m, 202, 'mount fallback');
          const loc = new URL(m.headers.location!, daemon.url).toString();
          const put = await request('PUT', RegistryClient.withDigest(loc, digest), { agent, body: blob });
          expectStatus(put, 201, 'PUT after mount fallback');
          continue;
        }
        await c.pushBlob(job.repo, blob, style, 256 * 1024 + job.id * 1000);
      }
      await c.pushBlob(job.repo, job.cacheConfig, 'monolithic-post');
      const put = await c.putManifest(job.repo, job.tag, job.index, MT.OCI_INDEX);
      expectStatus(put, 201, `PUT index ${job.repo}:${job.tag}`);
      expect(put.headers['docker-content-digest']).toBe(sha256(job.index));
      if (mainWriters.includes(job)) expectStatus(await c.putManifest('storm/app', 'main', job.index, MT.OCI_INDEX), 201, 'PUT main');

      // Import: the index by tag, then every entry it lists.
      const got = await c.getManifest(job.repo, job.tag);
      expectStatus(got, 200, `GET ${job.repo}:${job.tag}`);
      expect(got.headers['content-type']).toBe(MT.OCI_INDEX);
      expect(got.headers['docker-content-digest']).toBe(sha256(job.index));
      expect(got.body.equals(job.index)).toBe(true);
      const index = JSON.parse(got.body.toString()) as { manifests: Array<{ digest: string; size: number; mediaType: string; platform?: unknown }> };
      expect(index.manifests.map((m) => m.mediaType)).toContain(MT.BUILDKIT_CACHE_CONFIG);
      for (const entry of index.manifests) {
        expect(entry.platform).toBeUndefined();
        const b = await c.getBlobDigest(job.repo, entry.digest);
        expectStatus(b, 200, `GET blob ${entry.digest}`);
        expect(b.digest).toBe(entry.digest);
        expect(b.length).toBe(entry.size);
      }
      // A ranged read of one layer (resumed pulls).
      const first = index.manifests[0]!;
      const r = await c.req('GET', `/v2/${job.repo}/blobs/${first.digest}`, { headers: { Range: 'bytes=1000-1999' } });
      expectStatus(r, 206, 'ranged GET');
      expect(r.headers['content-range']).toBe(`bytes 1000-1999/${first.size}`);
      expect(r.body.equals(job.layers[0]!.subarray(1000, 2000))).toBe(true);
    } finally {
      agent.destroy();
    }
  }

  it('every job succeeds, every digest verifies, each blob is stored exactly once', async () => {
    const results = await Promise.allSettled(jobs.map((j) => runJob(j)));
    const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [`job ${i}: ${(r.reason as Error)?.stack ?? String(r.reason)}`] : []));
    expect(failures).toEqual([]);

    const c = new RegistryClient(daemon.url);
    // Last writer wins on the shared tag, atomically: it is one of the writers' indexes, intact.
    const main = await c.getManifest('storm/app', 'main');
    expect(main.status).toBe(200);
    expect(mainWriters.map((j) => sha256(j.index))).toContain(main.headers['docker-content-digest']);
    expect(sha256(main.body)).toBe(main.headers['docker-content-digest']);

    for (const repo of ['storm/app', 'storm/other']) {
      const tags = JSON.parse((await c.req('GET', `/v2/${repo}/tags/list`)).body.toString()) as { tags: string[] };
      const expected = jobs.filter((j) => j.repo === repo).map((j) => j.tag);
      if (repo === 'storm/app') expected.push('main');
      expect(tags.tags.sort()).toEqual(expected.sort());
    }

    // No server errors or cut connections anywhere.
    const bad = daemon.logLines().filter((l) => typeof l.status === 'number' && (l.status >= 500 || l.status === 0));
    expect(bad).toEqual([]);

    // On disk: exactly the expected digests, one file each, content verified; nothing left in tmp or uploads.
    const expected = new Set<string>();
    for (const j of jobs) for (const b of [...j.layers, j.cacheConfig, j.index]) expected.add(sha256(b));
    const tree = await blobTree(daemon.dataDir);
    expect(tree.strays).toEqual([]);
    expect([...tree.blobs.keys()].sort()).toEqual([...expected].sort());
    expect(await corruptBlobs(tree)).toEqual([]);
    expect(await listDir(join(daemon.dataDir, 'tmp'))).toEqual([]);
    expect(await listDir(join(daemon.dataDir, 'uploads'))).toEqual([]);
  }, 120_000);
});
