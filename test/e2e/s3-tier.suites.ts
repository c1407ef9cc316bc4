/**
 * Issue 10, end to end: the real daemon (one process and `--workers 2`) over a real S3-compatible server (s3rver in
 * s3-tier.test.ts, Ceph radosgw in s3-radosgw.test.ts, both started by the tests on loopback), with a loopback proxy in front of it where a test must count the store's requests or
 * have it return corrupt bytes. Objects are read back with the AWS SDK.
 */
import { appendFile } from 'node:fs/promises';
import http from 'node:http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { writeFileSync } from 'node:fs';
import { MiB } from '../helpers/content.js';
import { cleanup, makeTempDir, runDaemonExpectingFailure, servingPids, sleep } from '../helpers/daemon.js';
import { request, sha256, type RegistryClient } from '../helpers/registry-client.js';
import { KiB, admin, pullRef, pushRef, randomLayers, status, waitFor, writeCacheConfig, type PushedRef } from '../helpers/cache-helpers.js';
import { drained, expectInBucket, hex, startTierDaemon, tierOf } from '../helpers/tier-daemon.js';
import { S3_ENV, startS3Proxy, tierConfig, type S3Server } from '../helpers/s3.js';
import { hashFile, readOciLayout, writeOciLayout } from '../helpers/oci-image.js';
import { containersEnv, runOk } from '../helpers/tools.js';
import { haveTool, requireTools } from '../helpers/daemon.js';


async function getBlob(c: RegistryClient, repo: string, digest: string): Promise<{ status: number; body: Buffer }> {
  const r = await c.req('GET', `/v2/${repo}/blobs/${digest}`);
  return { status: r.status, body: r.body };
}

/** The tier's suites, on whichever store `startStore` gives each test (its own bucket, empty). */
const skopeoMissing = !haveTool('skopeo') && process.env.CI !== 'true';

export function tierSuites(startStore: () => Promise<S3Server>): void {
  afterEach(async () => {
    await cleanup();
  });

  describe.each([1, 2])('S3 tier with --workers %i', (workers) => {
    it('write-back: a push is answered locally, then lands in the bucket byte for byte (multipart past partSize)', async () => {
      const s3 = await startStore();
      const d = await startTierDaemon(s3, { workers, s3Yaml: '    partSize: 5MiB\n' });
      const ref = await pushRef(d.client, 'wb/app', 'main', randomLayers([300 * KiB, 2 * MiB + 17, 12 * MiB + 5]));
      await drained(d);
      await expectInBucket(s3, ref);
      const t = await tierOf(d);
      expect(t).toMatchObject({ backlog: 0, failed: 0, lastError: null, degraded: false });
      expect(t.uploaded).toBeGreaterThanOrEqual(ref.blobs.size + 3);
      expect(JSON.stringify(t)).not.toMatch(/S3RVER/); // no credential ever shows
      if (workers > 1) expect(servingPids(d, 'wb').size).toBe(2);

      // A client's delete reaches the bucket, and the bucket never brings the tag back meanwhile.
      expect((await d.client.req('DELETE', `/v2/wb/app/manifests/main`)).status).toBe(202);
      expect((await d.client.getManifest('wb/app', 'main')).status).toBe(404);
      await drained(d);
      expect(await s3.getObject(`bc/repositories/wb/app/_tags/main`)).toBeUndefined();
      expect((await d.client.getManifest('wb/app', 'main')).status).toBe(404);
      // The manifest itself is still there by digest.
      expect((await d.client.getManifest('wb/app', ref.digest)).status).toBe(200);
    }, 60_000);

    it('evict to S3: uploaded blobs leave the disk, the reference stays live, and read-through brings them back byte-exact', async () => {
      const s3 = await startStore();
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
      // verify counts what the tier holds as present: nothing to repair.
      const v = await admin<{ problems: unknown[] }>(d.url, 'POST', '/admin/v1/verify');
      expect(v.problems).toEqual([]);
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

  describe.each([1, 2])('several daemons on one bucket, reader with --workers %i', (workers) => {
    it('daemon B serves what A received; 20 concurrent misses of one blob make one S3 GET; Range is a range read', async () => {
      const s3 = await startStore();
      const proxy = await startS3Proxy(s3);
      const a = await startTierDaemon(s3, { workers: 1 });
      const b = await startTierDaemon(s3, { workers, endpoint: proxy.endpoint });
      const ref = await pushRef(a.client, 'share/app', 'main', randomLayers([4 * MiB + 3, 700 * KiB, 64 * KiB]));
      await drained(a);

      // A Range of a blob B lacks: a range read from the bucket, the exact bytes.
      const mid = ref.layers[1]!;
      const r = await b.client.req('GET', `/v2/share/app/blobs/${sha256(mid)}`, { headers: { Range: 'bytes=1000-1999' } });
      expect(r.status).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes 1000-1999/${mid.length}`);
      expect(r.body.equals(mid.subarray(1000, 2000))).toBe(true);
      expect(proxy.count('GET', `/bc/blobs/sha256/${hex(sha256(mid))}`)).toBe(1);

      // 20 clients at once, each on its own connection, for a blob B has never seen.
      const big = ref.layers[0]!;
      const key = `/bc/blobs/sha256/${hex(sha256(big))}`;
      const gets = await Promise.all(Array.from({ length: 20 }, () => request('GET', `${b.url}/v2/share/app/blobs/${sha256(big)}`, { agent: new http.Agent() })));
      for (const g of gets) {
        expect(g.status).toBe(200);
        expect(g.body.equals(big)).toBe(true);
      }
      expect(proxy.count('GET', key)).toBe(1);
      if (workers > 1) expect(servingPids(b, 'share').size).toBe(2);
      // Now local: more reads make no more S3 requests.
      expect((await getBlob(b.client, 'share/app', sha256(big))).body.equals(big)).toBe(true);
      expect(proxy.count('GET', key)).toBe(1);

      // The tag and manifest: a miss on B consults the bucket.
      const m = await b.client.getManifest('share/app', 'main');
      expect(m.status).toBe(200);
      expect(m.body.equals(ref.manifest)).toBe(true);
      expect(m.headers['docker-content-digest']).toBe(ref.digest);

      // And the whole reference pulls from B, verified.
      expect((await pullRef(b.client, 'share/app', 'main')).status).toBe('ok');
      // What B read through it does not upload again (one HEAD each, then skip).
      await drained(b);
      expect(proxy.count('PUT', '/bc/blobs/')).toBe(0);
    }, 90_000);

    it('tags/list and _catalog include the bucket; warm on manifest: a GET of a manifest whose blobs are only in the bucket fetches them in the background', async () => {
      const s3 = await startStore();
      const proxy = await startS3Proxy(s3);
      const a = await startTierDaemon(s3, { workers: 1 });
      const b = await startTierDaemon(s3, { workers, endpoint: proxy.endpoint });
      const ref = await pushRef(a.client, 'warm/app', 'main', randomLayers([3 * MiB, 1 * MiB, 500 * KiB]));
      await drained(a);
      // B has nothing of it yet, but lists what the bucket has.
      const tags = await b.client.req('GET', '/v2/warm/app/tags/list');
      expect(tags.status).toBe(200);
      expect(JSON.parse(tags.body.toString())).toEqual({ name: 'warm/app', tags: ['main'] });
      const catalog = await b.client.req('GET', '/v2/_catalog');
      expect(JSON.parse(catalog.body.toString())).toEqual({ repositories: ['warm/app'] });
      expect((await b.client.getManifest('warm/app', 'main')).status).toBe(200);
      const local = (data: Buffer) => join(b.dataDir, 'blobs', 'sha256', hex(sha256(data)).slice(0, 2), hex(sha256(data)));
      // No blob GET from any client yet: the daemon fetches them itself.
      await waitFor('every blob of the manifest on B\'s disk', () => [...ref.blobs.values()].every((data) => existsSync(local(data))), 15_000, 50);
      for (const [digest, data] of ref.blobs) {
        const got = await getBlob(b.client, 'warm/app', digest);
        expect(got.body.equals(data)).toBe(true);
        expect(proxy.count('GET', `/bc/blobs/sha256/${hex(digest)}`)).toBe(1);
      }
    }, 60_000);

    it('a store that returns flipped bytes: the read-through is refused, never committed, and other blobs keep being served', async () => {
      const s3 = await startStore();
      const proxy = await startS3Proxy(s3);
      const a = await startTierDaemon(s3, { workers: 1 });
      const b = await startTierDaemon(s3, { workers, endpoint: proxy.endpoint });
      const ref = await pushRef(a.client, 'flip/app', 'main', randomLayers([2 * MiB, 300 * KiB]));
      await drained(a);
      const [bad, good] = ref.layers as [Buffer, Buffer];
      proxy.flip(hex(sha256(bad)));
      const got = await request('GET', `${b.url}/v2/flip/app/blobs/${sha256(bad)}`).catch((e: Error) => e);
      // The response is cut before its last byte: the client never gets a complete, wrong blob.
      if (!(got instanceof Error)) {
        expect(got.status).toBe(200);
        expect(got.body.length).toBeLessThan(bad.length);
      }
      await waitFor('the refusal in the log', () => b.logs().includes('does not match its digest'), 5_000);
      const local = join(b.dataDir, 'blobs', 'sha256', hex(sha256(bad)).slice(0, 2), hex(sha256(bad)));
      expect(existsSync(local)).toBe(false);
      // Never served again by the daemon, through any worker, even once the store is sound: a clean 404 (or 503
      // from a worker that still knew its size).
      proxy.flip(undefined);
      for (let i = 0; i < 4; i++) expect([404, 503]).toContain((await request('GET', `${b.url}/v2/flip/app/blobs/${sha256(bad)}`, { agent: new http.Agent() })).status);
      // Another blob is read through fine.
      const ok = await getBlob(b.client, 'flip/app', sha256(good));
      expect(ok.status).toBe(200);
      expect(ok.body.equals(good)).toBe(true);
      expect((await tierOf(b)).readThroughFailures).toBeGreaterThan(0);
    }, 60_000);
  });

  describe('branch fallback through the bucket', () => {
    it('a new branch on daemon B falls back to main, which only daemon A received', async () => {
      const s3 = await startStore();
      const a = await startTierDaemon(s3, { workers: 1 });
      // A top-level key after the tier's lines.
      const fallback = 'registry:\n  fallback:\n    - repositories: ["**"]\n      tags: ["feature-*"]\n      to: [main]\n';
      const b = await startTierDaemon(s3, { workers: 2, s3Yaml: fallback });
      const ref = await pushRef(a.client, 'share/app', 'main', randomLayers([300 * KiB, 40 * KiB]));
      await drained(a);
      const m = await b.client.getManifest('share/app', 'feature-x');
      expect(m.status).toBe(200);
      expect(m.headers['buildcached-fallback']).toBe('main');
      expect(m.headers['docker-content-digest']).toBe(ref.digest);
      expect((await pullRef(b.client, 'share/app', 'feature-x')).status).toBe('ok');
    }, 90_000);
  });

  describe.skipIf(skopeoMissing)('skopeo through two daemons on one bucket', () => {
    it('an image pushed to A with skopeo is pulled from B byte for byte', async () => {
      requireTools({ skopeo: 'skopeo' });
      const s3 = await startStore();
      const a = await startTierDaemon(s3, { workers: 2 });
      const b = await startTierDaemon(s3, { workers: 2 });
      const ce = await containersEnv();
      const work = await makeTempDir('buildcached-s3-skopeo-');
      const img = await writeOciLayout(join(work, 'src'), { layerSizes: [3 * MiB + 5, 100_000], tag: 'v1', label: 's3' });
      const skopeo = (args: string[]) => runOk('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, ...args], { env: ce.env, timeoutMs: 120_000 });
      await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${img.dir}:v1`, `docker://${a.hostPort}/s3/skopeo:v1`]);
      await drained(a);
      const out = join(work, 'out');
      await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', `docker://${b.hostPort}/s3/skopeo:v1`, `oci:${out}:v1`]);
      const got = await readOciLayout(out, 'v1');
      expect(got.manifestBytes.equals(img.manifestBytes)).toBe(true);
      for (const [digest] of img.blobs) {
        expect(await hashFile(join(out, 'blobs', 'sha256', hex(digest)))).toBe(await hashFile(join(img.dir, 'blobs', 'sha256', hex(digest))));
      }
    }, 180_000);
  });

  describe.each([1, 2])('S3 outage with --workers %i', (workers) => {
    it('the store stopped during pushes and pulls: no local request fails, status and /readyz say degraded, the queue drains after it returns', async () => {
      const s3 = await startStore();
      const d = await startTierDaemon(s3, { workers });
      const reader = await startTierDaemon(s3, { workers: 1 });
      const before = await pushRef(d.client, 'outage/app', 'before', randomLayers([200 * KiB]));
      await drained(d);
      await s3.stop();

      const pushed: PushedRef[] = [];
      let failures = 0;
      const until = Date.now() + 6_000;
      for (let i = 0; Date.now() < until; i++) {
        try {
          pushed.push(await pushRef(d.client, 'outage/app', `t${i}`, randomLayers([64 * KiB + i, 8 * KiB])));
          if ((await pullRef(d.client, 'outage/app', 'before')).status !== 'ok') failures++;
        } catch {
          failures++;
        }
      }
      expect(failures).toBe(0);
      expect(pushed.length).toBeGreaterThan(3);
      if (workers > 1) expect(servingPids(d, 'outage').size).toBe(2);

      const t = await tierOf(d);
      expect(t.backlog).toBeGreaterThan(0);
      expect(t.failed).toBeGreaterThan(0);
      expect(t.lastError).toMatch(/S3 (HEAD|PUT)/);
      expect(t.degraded).toBe(true);
      const fresh = () => ({ agent: new http.Agent() });
      const ready = await request('GET', `${d.url}/readyz`, fresh());
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.body.toString())).toMatchObject({ status: 'degraded' });

      // A read-through during the outage is a clean answer, never a hang.
      const started = Date.now();
      // (Fresh connections: this daemon sat idle past its keep-alive timeout.)
      const miss = await request('GET', `${reader.url}/v2/outage/app/manifests/t0`, fresh());
      expect([404, 503]).toContain(miss.status);
      const blobMiss = await request('GET', `${reader.url}/v2/outage/app/blobs/${sha256(pushed[0]!.layers[0]!)}`, fresh());
      expect([404, 503]).toContain(blobMiss.status);
      expect(Date.now() - started).toBeLessThan(15_000);

      await s3.start();
      await drained(d, 60_000);
      for (const ref of [before, ...pushed]) await expectInBucket(s3, ref);
      expect((await tierOf(d)).degraded).toBe(false);
      expect(JSON.parse((await request('GET', `${d.url}/readyz`, fresh())).body.toString())).toMatchObject({ status: 'ready' });
      // The other daemon sees it all now (its negative answers last seconds only).
      await sleep(5_100);
      expect((await pullRef(reader.client, 'outage/app', 't0')).status).toBe('ok');
    }, 120_000);
  });

  describe('the write-back journal across kill -9', () => {
    it('a full queue killed with -9 is resumed and drained after the restart', async () => {
      const s3 = await startStore();
      const first = await startTierDaemon(s3, { workers: 2 });
      await s3.stop();
      const refs: PushedRef[] = [];
      for (let i = 0; i < 5; i++) refs.push(await pushRef(first.client, 'crash/app', `t${i}`, randomLayers([100 * KiB + i, 3 * KiB])));
      expect((await tierOf(first)).backlog).toBeGreaterThanOrEqual(5 * 3);
      const dataDir = first.dataDir;
      await first.kill9();
      await s3.start();
      const second = await startTierDaemon(s3, { workers: 2, dataDir }, { retryWhileLockedMs: 30_000 });
      await drained(second);
      for (const ref of refs) await expectInBucket(s3, ref);
    }, 120_000);
  });

  describe('start-up with a tier', () => {
    it('stops with a message saying which: a bucket that does not exist, credentials refused', async () => {
      const s3 = await startStore();
      const configPath = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), { maxBytes: '1GiB', pushGraceSeconds: 900 });
      await appendFile(configPath, tierConfig(s3.endpoint, 'no-such-bucket'));
      const missing = await runDaemonExpectingFailure({ args: ['--config', configPath], env: S3_ENV });
      expect(missing.listened).toBe(false);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/tier\.s3\.bucket: bucket "no-such-bucket" does not exist/);

      const good = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), { maxBytes: '1GiB', pushGraceSeconds: 900 });
      await appendFile(good, tierConfig(s3.endpoint, s3.bucket));
      // An unknown access key is refused with 403 (s3rver checks the key alone, radosgw the signature too).
      const secret = 'not-the-secret-0123456789';
      const refused = await runDaemonExpectingFailure({ args: ['--config', good], env: { ...S3_ENV, AWS_ACCESS_KEY_ID: 'AKIDNOBODY', AWS_SECRET_ACCESS_KEY: secret } });
      expect(refused.listened, refused.stdout + refused.stderr).toBe(false);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(new RegExp(`credentials were refused for bucket "${s3.bucket}"`));
      expect(refused.stderr + refused.stdout).not.toContain(secret);
    }, 60_000);
  });

  describe('one tag pushed on two daemons', () => {
    it('a newer push elsewhere wins within tagStaleness; two pushes of one tag end on one winner, both readable', async () => {
      const s3 = await startStore();
      const fast = '    tagStaleness: 1s\n';
      const a = await startTierDaemon(s3, { workers: 2, s3Yaml: fast });
      const b = await startTierDaemon(s3, { workers: 1, s3Yaml: fast });
      onTestFailed(() => writeFileSync('/tmp/s3-race.log', `A\n${a.logs()}${a.stderr()}\nB\n${b.logs()}${b.stderr()}`));
      const first = await pushRef(a.client, 'race/app', 'main', randomLayers([100 * KiB]));
      await drained(a);
      expect((await b.client.getManifest('race/app', 'main')).headers['docker-content-digest']).toBe(first.digest);

      // A pushes again: B, which already has the tag, takes the newer push once its look is stale.
      const second = await pushRef(a.client, 'race/app', 'main', randomLayers([120 * KiB]));
      await drained(a);
      await waitFor('B to serve the newer push', async () => (await b.client.getManifest('race/app', 'main')).headers['docker-content-digest'] === second.digest, 15_000, 300);
      expect((await pullRef(b.client, 'race/app', 'main')).digest).toBe(second.digest);

      // Both push the tag at once: the bucket ends with one of them, both daemons converge on it, both stay readable.
      const [pa, pb] = await Promise.all([
        pushRef(a.client, 'race/app', 'both', randomLayers([64 * KiB])),
        pushRef(b.client, 'race/app', 'both', randomLayers([64 * KiB])),
      ]);
      await Promise.all([drained(a), drained(b)]);
      const winner = (await s3.getObject('bc/repositories/race/app/_tags/both'))!.toString();
      expect([pa.digest, pb.digest]).toContain(winner);
      for (const d of [a, b]) {
        await waitFor('the daemons to agree on the winner', async () => (await d.client.getManifest('race/app', 'both')).headers['docker-content-digest'] === winner, 15_000, 300);
        for (const ref of [pa, pb]) expect((await pullRef(d.client, 'race/app', ref.digest)).status).toBe('ok');
      }
    }, 90_000);
  });
}
