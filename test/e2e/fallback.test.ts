/**
 * Branch fallback end to end, with `--workers 2` and BuildKit-shaped traffic: an export of the cache to
 * app:main (HEAD every blob, push what is missing, PUT the cache index), then the first build of a new branch
 * imports app:feature-x — served main's index, whose blobs it then fetches — exports its own cache to
 * app:feature-x, and its next import reads its own. The fallbacks served are counted across workers in `status`.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admin, type StatusJson, waitFor } from '../helpers/cache-helpers.js';
import { cleanup, makeTempDir, servingPids, startDaemon, type Daemon } from '../helpers/daemon.js';
import { MT, RegistryClient, buildkitCacheConfig, buildkitCacheIndex, sha256 } from '../helpers/registry-client.js';

const REPO = 'cache/app';

/** What BuildKit's exporter does: HEAD each blob, upload the missing ones (POST + PUT), PUT the cache index. */
async function exportCache(c: RegistryClient, tag: string, layers: Buffer[]): Promise<{ index: Buffer; skipped: number }> {
  const config = buildkitCacheConfig(layers, randomBytes(4).toString('hex'));
  let skipped = 0;
  for (const blob of [...layers, config]) {
    if ((await c.headBlob(REPO, sha256(blob))).status === 200) skipped++;
    else expect((await c.pushBlob(REPO, blob, 'post-put')).status).toBe(201);
  }
  const index = buildkitCacheIndex(layers, config);
  expect((await c.putManifest(REPO, tag, index, MT.OCI_INDEX)).status).toBe(201);
  return { index, skipped };
}

/** What BuildKit's importer does: GET the index by tag, then every blob it lists (verified). */
async function importCache(c: RegistryClient, tag: string): Promise<{ digest: string; fallback?: string }> {
  const m = await c.getManifest(REPO, tag, MT.OCI_INDEX);
  expect(m.status).toBe(200);
  const doc = JSON.parse(m.body.toString()) as { manifests: Array<{ digest: string }> };
  for (const { digest } of doc.manifests) {
    const b = await c.getBlobDigest(REPO, digest);
    expect(b.status).toBe(200);
    expect(b.digest).toBe(digest);
  }
  const fallback = m.headers['buildcached-fallback'];
  return { digest: sha256(m.body), ...(typeof fallback === 'string' ? { fallback } : {}) };
}

describe('branch fallback with --workers 2', () => {
  let daemon: Daemon;
  let c: RegistryClient;

  beforeAll(async () => {
    const dir = await makeTempDir('buildcached-fallback-');
    const config = join(dir, 'config.yaml');
    await writeFile(config, 'registry:\n  fallback:\n    - repositories: ["cache/**"]\n      tags: ["feature-*", "pr-*"]\n      to: [main, "@recent"]\n');
    daemon = await startDaemon({ args: ['--config', config, '--workers', '2'] });
    c = new RegistryClient(daemon.url);
  }, 60_000);
  afterAll(cleanup);

  it('a new branch imports main\'s cache, then exports and imports its own', async () => {
    const layers = [randomBytes(300_000), randomBytes(120_000), randomBytes(50_000)];
    const main = await exportCache(c, 'main', layers);

    const first = await importCache(c, 'feature-x');
    expect(first).toEqual({ digest: sha256(main.index), fallback: 'main' });

    // The branch changes one layer: the export skips the two it shares (found by HEAD), pushes the new one.
    const own = await exportCache(c, 'feature-x', [layers[0]!, layers[1]!, randomBytes(70_000)]);
    expect(own.skipped).toBe(2);
    const second = await importCache(c, 'feature-x');
    expect(second).toEqual({ digest: sha256(own.index) });

    // Other new branches fall back too, on either worker; status counts them for the whole daemon.
    for (let i = 0; i < 6; i++) expect((await c.getManifest(REPO, `pr-${i}`)).headers['buildcached-fallback']).toBe('main');
    await waitFor('fallbacks counted', async () => (await admin<StatusJson>(daemon.url, 'GET', '/admin/v1/status')).fallbacks[REPO] === 7);
    const lines = daemon.logLines().filter((l) => l.fallback === 'main');
    expect(lines).toHaveLength(7);
    expect(new Set(lines.map((l) => l.pid)).size).toBe(2);
    expect(servingPids(daemon, REPO).size).toBe(2);
  });

  it('@recent agrees across workers: the tag pushed last through one worker answers through the other', async () => {
    const other = 'cache/other';
    const fresh = () => new RegistryClient(daemon.url, new http.Agent({ keepAlive: false }));
    const blob = randomBytes(1000);
    expect((await fresh().pushBlob(other, blob, 'post-put')).status).toBe(201);
    const config = buildkitCacheConfig([blob], 'recent');
    expect((await fresh().pushBlob(other, config, 'post-put')).status).toBe(201);
    const index = buildkitCacheIndex([blob], config);
    expect((await fresh().putManifest(other, 'a', index, MT.OCI_INDEX)).status).toBe(201);
    await new Promise((r) => setTimeout(r, 20));
    const second = buildkitCacheIndex([blob, blob], config);
    expect((await fresh().putManifest(other, 'b', second, MT.OCI_INDEX)).status).toBe(201);
    // Each lookup on its own connection, so they spread over both workers.
    for (let i = 0; i < 6; i++) {
      const m = await fresh().getManifest(other, `pr-${i}`);
      expect(m.headers['buildcached-fallback']).toBe('b');
    }
    expect(servingPids(daemon, other).size).toBe(2);
  });
});
