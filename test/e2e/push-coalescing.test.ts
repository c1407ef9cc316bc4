/**
 * Push coalescing across worker processes (push-claims.ts), on the real daemon with two workers: parallel jobs
 * that HEAD a layer another job is uploading to the same repository wait for that upload instead of sending the
 * layer again, whichever worker each request reaches; a writer that dies frees them. Jobs are told apart by
 * address: each "job" sends from an address of its own in 127.0.0.0/8, to the daemon on 127.0.0.1.
 */
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { readdir, readlink } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { cleanup, makeTempDir, requireTools, servingPids, skipWithoutTools, sleep } from '../helpers/daemon.js';
import { writeOciLayout } from '../helpers/oci-image.js';
import { containersEnv, runOk } from '../helpers/tools.js';
import { MiB } from '../helpers/content.js';
import { RegistryClient, request, sha256, streamingRequest } from '../helpers/registry-client.js';
import { startCache } from '../helpers/cache-helpers.js';
import { CLAIM_LAPSE_MS } from '../../src/registry/push-claims.js';
import { parseExposition, sampleValue } from '../helpers/prometheus-text.js';
import { blobTree, corruptBlobs } from '../helpers/store.js';

afterEach(cleanup);

/** The worker among `pids` that has a file of upload session `id` open. */
async function writerOf(pids: number[], id: string): Promise<number | undefined> {
  for (const pid of pids) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')).includes(id)) return pid;
    }
  }
  return undefined;
}

/** HEADs from jobs 2…n+1, each on a fresh connection (spread over the workers), settled with a status or a failure. */
const heads = (url: string, n: number) =>
  Array.from({ length: n }, (_, i) =>
    request('HEAD', url, { agent: new http.Agent({ localAddress: `127.0.0.${i + 2}` }) }).then(
      (r) => ({ status: r.status, length: r.headers['content-length'], at: performance.now() }),
      (e: Error) => ({ status: 0, error: e.message, length: undefined, at: performance.now() }),
    ),
  );

/** A layer of `size` random bytes for `repo`, and the URL its HEADs ask. */
function layer(d: { url: string }, repo: string, size: number) {
  const data = randomBytes(size);
  const digest = sha256(data);
  return { data, digest, blobUrl: `${d.url}/v2/${repo}/blobs/${digest}` };
}

/** A completing PUT ?digest= of `data` into session `location`, its body written by the test piece by piece. */
const streamingPut = (location: string, digest: string, length: number) =>
  streamingRequest('PUT', RegistryClient.withDigest(location, digest), { 'Content-Type': 'application/octet-stream', 'Content-Length': length });

describe('push coalescing across workers', () => {
  it('holds HEADs on both workers while one job uploads the layer, then answers them all 200 with the committed blob', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    const repo = 'coalesce/app';
    const { data, digest, blobUrl } = layer(d, repo, 4 * MiB);
    // The first job's HEAD misses (and claims the layer); it starts its upload.
    expect((await d.client.headBlob(repo, digest)).status).toBe(404);
    const location = await d.client.startUpload(repo);
    const put = streamingPut(location, digest, data.length);
    await put.write(data.subarray(0, MiB));
    // Seven other jobs HEAD it while the upload streams; past the claim's lapse, the upload still holds them.
    const waiting = heads(blobUrl, 7);
    let answered = 0;
    for (const h of waiting) void h.then(() => answered++);
    await sleep(2_500);
    expect(answered, 'HEADs answered while the upload was still streaming').toBe(0);
    const finished = performance.now();
    await put.write(data.subarray(MiB));
    put.end();
    expect((await put.response).status).toBe(201);
    for (const h of await Promise.all(waiting)) {
      expect(h).toMatchObject({ status: 200, length: String(data.length) });
      expect(h.at).toBeGreaterThanOrEqual(finished);
    }
    expect(servingPids(d, repo).size, 'the HEADs reached both workers').toBe(2);
    // Counted where each HEAD was served, summed by the primary.
    const metrics = parseExposition((await request('GET', `${d.url}/metrics`)).body.toString());
    expect(sampleValue(metrics, 'buildcached_push_coalesced_total', { outcome: 'found' })).toBe(7);
    expect(d.logLines().filter((l) => l.method === 'HEAD' && l.coalesced === true)).toHaveLength(7);
    expect((await d.client.getBlobDigest(repo, digest)).digest).toBe(digest);
    const tree = await blobTree(d.dataDir);
    expect(await corruptBlobs(tree)).toEqual([]);
  });

  it("holds a chunked push's claim across workers while its PATCH streams, past the lapse, until its body-less PUT", async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    const repo = 'coalesce/chunked';
    const { data, digest, blobUrl } = layer(d, repo, 2 * MiB);
    // docker push / skopeo: HEAD (claims), POST, PATCH the bytes, PUT ?digest= with no body; each on a fresh
    // connection, so they land on either worker.
    expect((await d.client.headBlob(repo, digest)).status).toBe(404);
    const location = await d.client.startUpload(repo);
    const patch = streamingRequest('PATCH', location, { 'Content-Type': 'application/octet-stream' });
    await patch.write(data.subarray(0, MiB));
    const waiting = heads(blobUrl, 6);
    let answered = 0;
    for (const h of waiting) void h.then(() => answered++);
    await sleep(2_500); // past the claim's lapse: the streaming PATCH holds it
    expect(answered, 'HEADs answered while the PATCH was still streaming').toBe(0);
    await patch.write(data.subarray(MiB));
    patch.end();
    expect((await patch.response).status).toBe(202);
    const done = performance.now();
    expect((await request('PUT', RegistryClient.withDigest(location, digest))).status).toBe(201);
    for (const h of await Promise.all(waiting)) {
      expect(h).toMatchObject({ status: 200, length: String(data.length) });
      expect(h.at).toBeGreaterThanOrEqual(done);
    }
    expect(servingPids(d, repo).size, 'the requests reached both workers').toBe(2);
    expect(await corruptBlobs(await blobTree(d.dataDir))).toEqual([]);
  });

  it('frees the HEADs waiting on an upload whose worker is killed: they answer 404 and the next job uploads', async () => {
    const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    const repo = 'coalesce/crash';
    const { data, digest, blobUrl } = layer(d, repo, 2 * MiB);
    const location = await d.client.startUpload(repo);
    const put = streamingPut(location, digest, data.length);
    await put.write(data.subarray(0, MiB));
    await sleep(200);
    const writer = await writerOf(d.workers(), new URL(location).pathname.split('/').pop()!);
    expect(writer, 'the worker writing the session').toBeDefined();
    const waiting = heads(blobUrl, 8);
    await sleep(300);
    const killed = performance.now();
    process.kill(writer!, 'SIGKILL');
    await expect(put.response).rejects.toThrow();
    const settled = await Promise.all(waiting);
    // HEADs the killed worker held lost their connection; the survivor's were answered 404, long before the
    // 60 s they could have waited for an upload that was still alive.
    const survivors = settled.filter((h) => h.status !== 0);
    expect(survivors.length, JSON.stringify(settled)).toBeGreaterThan(0);
    for (const h of survivors) {
      expect(h.status).toBe(404);
      expect(h.at - killed).toBeLessThan(10_000);
    }
    // The next job pushes it whole, through the daemon's replacement worker or the survivor.
    expect((await d.client.pushBlob(repo, data, 'monolithic-post')).status).toBe(201);
    expect((await d.client.headBlob(repo, digest)).status).toBe(200);
    expect(await corruptBlobs(await blobTree(d.dataDir))).toEqual([]);
  });

  it.skipIf(skipWithoutTools('parallel skopeo copies', { skopeo: 'skopeo' }))(
    'skopeo, which HEADs each blob twice, never waits on its own claim; four copies at once all succeed',
    async () => {
      requireTools({ skopeo: 'skopeo' });
      const d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
      const work = await makeTempDir('buildcached-coalesce-');
      const image = await writeOciLayout(join(work, 'src'), { layerSizes: [24 * MiB, 8 * MiB, 3 * MiB], tag: 'v1' });
      // Each copy with its own containers config: no blob-info cache shared between them. All four send from
      // 127.0.0.1, as jobs behind one address: they do not wait for each other either.
      const copies = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const ce = await containersEnv();
          const args = ['--insecure-policy', '--registries.d', ce.registriesD, 'copy', '--preserve-digests', '--dest-tls-verify=false'];
          return () => runOk('skopeo', [...args, `oci:${image.dir}:v1`, `docker://${d.hostPort}/coalesce/skopeo:v1`], { env: ce.env, timeoutMs: 120_000 });
        }),
      );
      await Promise.all(copies.map((copy) => copy()));
      for (const [digest, size] of image.blobs) {
        const b = await d.client.getBlobDigest('coalesce/skopeo', digest);
        expect(b.status, digest).toBe(200);
        expect([b.digest, b.length]).toEqual([digest, size]);
      }
      const heads = d.logLines().filter((l) => l.repo === 'coalesce/skopeo' && l.method === 'HEAD');
      expect(heads.length).toBeGreaterThanOrEqual(2 * image.blobs.size);
      const slow = heads.filter((l) => Number(l.ms) >= CLAIM_LAPSE_MS / 2);
      expect(slow, 'HEADs that waited on a claim').toEqual([]);
      expect(await corruptBlobs(await blobTree(d.dataDir))).toEqual([]);
    },
  );
});
