/**
 * Issue 10, end to end: the real daemon (one process and `--workers 2`) over a real S3-compatible server (s3rver,
 * started here on loopback), with a loopback proxy in front of it where a test must count the store's requests or
 * have it return corrupt bytes. Objects are read back with the AWS SDK.
 */
import { appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { writeFileSync } from 'node:fs';
import { MiB } from '../helpers/content.js';
import { cleanup, makeTempDir, runDaemonExpectingFailure, servingPids, sleep, type DaemonOptions } from '../helpers/daemon.js';
import { request, sha256, type RegistryClient } from '../helpers/registry-client.js';
import { KiB, pullRef, pushRef, randomLayers, startCache, status, waitFor, writeCacheConfig, type CacheDaemon, type PushedRef, type StatusJson } from '../helpers/cache-helpers.js';
import { S3_ENV, startS3, startS3Proxy, tierConfig, type S3Server } from '../helpers/s3.js';

afterEach(async () => {
  await cleanup();
});

const hex = (digest: string) => digest.slice('sha256:'.length);

interface TierDaemonOptions {
  workers: number;
  maxBytes?: number | string;
  pushGraceSeconds?: number;
  dataDir?: string;
  /** Where the daemon finds the store: the server itself, or a proxy in front of it. */
  endpoint?: string;
}

async function startTierDaemon(s3: S3Server, o: TierDaemonOptions, extra: DaemonOptions = {}): Promise<CacheDaemon> {
  const configPath = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), {
    maxBytes: o.maxBytes ?? '1GiB',
    pushGraceSeconds: o.pushGraceSeconds ?? 900,
    workers: o.workers,
  });
  await appendFile(configPath, tierConfig(o.endpoint ?? s3.endpoint, s3.bucket));
  return startCache({ maxBytes: 0, pushGraceSeconds: 0, configPath, ...(o.dataDir ? { dataDir: o.dataDir } : {}) }, { ...extra, env: { ...S3_ENV, ...extra.env } });
}

type TierJson = NonNullable<StatusJson['tier']>;
const tierOf = async (d: CacheDaemon): Promise<TierJson> => (await status(d.url)).tier!;

async function drained(d: CacheDaemon, timeoutMs = 30_000): Promise<void> {
  await waitFor('the write-back queue to drain', async () => (await tierOf(d)).backlog === 0, timeoutMs, 100);
}

/** Every blob, the manifest record and the tag of `ref` are in the bucket, byte for byte. */
async function expectInBucket(s3: S3Server, ref: PushedRef): Promise<void> {
  for (const [d, data] of [...ref.blobs, [ref.digest, ref.manifest] as const]) {
    const got = await s3.getObject(`bc/blobs/sha256/${hex(d)}`);
    expect(got?.equals(data), `blob ${d} in the bucket`).toBe(true);
  }
  const record = await s3.getObject(`bc/repositories/${ref.repo}/_manifests/sha256/${hex(ref.digest)}.json`);
  const parsed = JSON.parse(record!.toString('utf8')) as { digest: string; references: string[] };
  expect(parsed.digest).toBe(ref.digest);
  expect([...parsed.references].sort()).toEqual([...ref.blobs.keys()].sort());
  expect((await s3.getObject(`bc/repositories/${ref.repo}/_tags/${ref.tag}`))?.toString()).toBe(ref.digest);
}

async function getBlob(c: RegistryClient, repo: string, digest: string): Promise<{ status: number; body: Buffer }> {
  const r = await c.req('GET', `/v2/${repo}/blobs/${digest}`);
  return { status: r.status, body: r.body };
}

describe.each([1, 2])('S3 tier with --workers %i', (workers) => {
  it('write-back: a push is answered locally, then lands in the bucket byte for byte', async () => {
    const s3 = await startS3();
    const d = await startTierDaemon(s3, { workers });
    const ref = await pushRef(d.client, 'wb/app', 'main', randomLayers([300 * KiB, 2 * MiB + 17]));
    await drained(d);
    await expectInBucket(s3, ref);
    const t = await tierOf(d);
    expect(t).toMatchObject({ backlog: 0, failed: 0, lastError: null, degraded: false });
    expect(t.uploaded).toBeGreaterThanOrEqual(ref.blobs.size + 3);
    expect(JSON.stringify(t)).not.toMatch(/S3RVER/); // no credential ever shows
    if (workers > 1) expect(servingPids(d, 'wb').size).toBe(2);
  }, 60_000);

  it('evict to S3: uploaded blobs leave the disk, the reference stays live, and read-through brings them back byte-exact', async () => {
    const s3 = await startS3();
    // 4 MiB budget: eviction above 3.6 MiB, down to 3.2 MiB.
    const d = await startTierDaemon(s3, { workers, maxBytes: 4 * MiB, pushGraceSeconds: 1 });
    onTestFailed(() => writeFileSync(`/tmp/s3-evict-${workers}.log`, d.logs() + d.stderr()));
    const a = await pushRef(d.client, 'evict/a', 'cache', randomLayers([MiB, MiB]));
    await drained(d);
    await sleep(1100); // past the HEAD grace of a's push
    const b = await pushRef(d.client, 'evict/b', 'cache', randomLayers([MiB, MiB]));
    await waitFor('an eviction that offloads blobs', async () => (await status(d.url)).evictions.blobs > 0, 10_000, 100);
    const s = await status(d.url);
    expect(s.bytesUsed).toBeLessThanOrEqual(4 * MiB);
    // Nothing lost: both references are still there, a's layers are in the bucket only.
    expect(s.references.map((r) => `${r.repo}:${r.tag}`).sort()).toEqual(['evict/a:cache', 'evict/b:cache']);
    const gone = a.layers.filter((l) => !existsSync(join(d.dataDir, 'blobs', 'sha256', hex(sha256(l)).slice(0, 2), hex(sha256(l)))));
    expect(gone.length).toBeGreaterThan(0);
    // HEAD of an offloaded blob: from the daemon's own index, with its size.
    for (const l of gone) {
      const h = await d.client.headBlob('evict/a', sha256(l));
      expect(h.status).toBe(200);
      expect(h.headers['content-length']).toBe(String(l.length));
    }
    // Read-through: byte for byte. Room for it comes from offloading b's blobs once they are uploaded.
    await drained(d);
    await sleep(1100);
    for (const l of gone) {
      const got = await getBlob(d.client, 'evict/a', sha256(l));
      expect(got.status, d.logs().slice(-3000)).toBe(200);
      expect(got.body.equals(l)).toBe(true);
    }
    expect((await pullRef(d.client, 'evict/a', 'cache')).status).toBe('ok');
    // b stays whole too, wherever its bytes are now.
    for (const l of b.layers) expect((await d.client.headBlob('evict/b', sha256(l))).status).toBe(200);
    const t = await tierOf(d);
    expect(t.readThroughBytes).toBeGreaterThanOrEqual(gone.reduce((n, l) => n + l.length, 0));
  }, 90_000);
});
