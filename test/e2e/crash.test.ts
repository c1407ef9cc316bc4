/**
 * kill -9 at awkward instants (DESIGN.md §4): committed blobs, manifests and tags stay intact; a partial upload is
 * never visible as a blob; DATA/tmp holds nothing after a restart; pushing again works.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BigBlob, MiB } from '../helpers/content.js';
import { alive, cleanup, sleep, startDaemon, waitGone } from '../helpers/daemon.js';
import {
  buildkitCacheConfig,
  buildkitCacheIndex,
  imageManifest,
  MT,
  RegistryClient,
  request,
  sha256,
  streamingRequest,
  type StreamingRequest,
} from '../helpers/registry-client.js';
import { blobTree, corruptBlobs, listDir } from '../helpers/store.js';

/** The lock of a kill -9'd daemon may only go stale after a while; restarts in the data tests wait it out, the
 *  first test checks that they should not have to. */
const RESTART_WAIT_MS = 45_000;

async function writeAll(s: StreamingRequest, pieces: Iterable<Buffer>): Promise<void> {
  for (const p of pieces) await s.write(p);
}

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Range `0-N` of an upload status response → bytes received (N+1); `0-0` is ambiguous and means 0 or 1. */
function uploadedBytes(range: string | string[] | undefined): number {
  const m = /^0-(\d+)$/.exec(String(range));
  if (!m) throw new Error(`bad Range header "${String(range)}"`);
  return Number(m[1]) + 1;
}

/** Everything a test committed, checked again after the restart. */
interface Committed {
  blobs: Map<string, Buffer>;
  manifests: Array<{ repo: string; tag: string; digest: string; bytes: Buffer }>;
}

async function pushCommittedState(c: RegistryClient, repo: string): Promise<Committed> {
  const layers = [randomBytes(3 * MiB), randomBytes(2 * MiB), randomBytes(1000)];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l)) } }));
  const cacheConfig = buildkitCacheConfig(layers, repo);
  await c.pushBlob(repo, layers[0]!, 'monolithic-post');
  await c.pushBlob(repo, layers[1]!, 'patch-chunked-te-put', 512 * 1024);
  await c.pushBlob(repo, layers[2]!, 'patch-chunks-put', 300);
  await c.pushBlob(repo, config, 'post-put');
  await c.pushBlob(repo, cacheConfig, 'monolithic-post');
  const image = imageManifest(config, layers);
  const index = buildkitCacheIndex(layers, cacheConfig);
  const manifests = [
    { repo, tag: 'v1', digest: sha256(image), bytes: image, mediaType: MT.OCI_MANIFEST },
    { repo, tag: 'cache', digest: sha256(index), bytes: index, mediaType: MT.OCI_INDEX },
  ];
  for (const m of manifests) {
    const r = await c.putManifest(repo, m.tag, m.bytes, m.mediaType);
    expect(r.status).toBe(201);
    expect(r.headers['docker-content-digest']).toBe(m.digest);
  }
  const blobs = new Map<string, Buffer>([...layers, config, cacheConfig, image, index].map((b) => [sha256(b), b]));
  return { blobs, manifests };
}

async function expectCommittedIntact(c: RegistryClient, s: Committed): Promise<void> {
  for (const [digest, content] of s.blobs) {
    const head = await c.headBlob('crash/app', digest);
    expect(head.status, `HEAD ${digest}`).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(content.length);
    const get = await c.getBlobDigest('crash/app', digest);
    expect(get.status).toBe(200);
    expect(get.digest).toBe(digest);
  }
  for (const m of s.manifests) {
    for (const ref of [m.tag, m.digest]) {
      const r = await c.getManifest(m.repo, ref);
      expect(r.status, `${m.repo}:${ref}`).toBe(200);
      expect(r.headers['docker-content-digest']).toBe(m.digest);
      expect(r.body.equals(m.bytes)).toBe(true);
    }
  }
  const tags = JSON.parse((await c.req('GET', `/v2/${s.manifests[0]!.repo}/tags/list`)).body.toString()) as { tags: string[] };
  expect(tags.tags.sort()).toEqual(s.manifests.map((m) => m.tag).sort());
}

describe('kill -9 leaves a consistent store', () => {
  afterEach(cleanup);

  it('a daemon restarted right after kill -9 starts (the dead holder of the data-dir lock does not block it)', async () => {
    const d1 = await startDaemon();
    const dead = d1.pid;
    await d1.kill9();
    let refusal = '';
    try {
      const d2 = await startDaemon({ dataDir: d1.dataDir, startTimeoutMs: 10_000 });
      expect((await request('GET', `${d2.url}/v2/`)).status).toBe(200);
    } catch (e) {
      refusal = (e as Error).message;
    }
    expect(refusal, `restart refused although pid ${dead} is dead (systemd Restart= would crash-loop)`).toBe('');
  }, 30_000);

  it('during large streaming uploads: committed data intact, partial blobs invisible, tmp cleaned, pushes succeed again', async () => {
    const d1 = await startDaemon();
    const c1 = new RegistryClient(d1.url);
    const committed = await pushCommittedState(c1, 'crash/app');

    // Two uploads of 200+ MiB in flight at the kill: a chunked PATCH into a session, and a monolithic
    // POST ?digest= (BuildKit-like single request), each stopped at 100 MiB and left open.
    const big = new BigBlob(256);
    const mono = new BigBlob(224);
    const loc = await c1.startUpload('crash/big');
    const patch = streamingRequest('PATCH', loc, { 'Content-Type': 'application/octet-stream' });
    const post = streamingRequest('POST', `${d1.url}/v2/crash/big/blobs/uploads/?digest=${mono.digest}`, {
      'Content-Type': 'application/octet-stream',
    });
    const SENT = 100 * MiB;
    await Promise.all([writeAll(patch, big.range(0, SENT)), writeAll(post, mono.range(0, SENT))]);
    await waitFor('the daemon to receive 100 MiB of the PATCH', async () => {
      const s = await request('GET', loc);
      return s.status === 204 && uploadedBytes(s.headers.range) === SENT;
    });
    await waitFor('the monolithic upload to be half written in DATA/tmp', async () => {
      const names = await listDir(join(d1.dataDir, 'tmp'));
      const sizes = await Promise.all(names.map((n) => stat(join(d1.dataDir, 'tmp', n)).then((s) => s.size, () => 0)));
      return sizes.some((s) => s >= SENT);
    });
    await d1.kill9();
    await expect(patch.response).rejects.toThrow();
    await expect(post.response).rejects.toThrow();

    const d2 = await startDaemon({ dataDir: d1.dataDir, retryWhileLockedMs: RESTART_WAIT_MS });
    const c2 = new RegistryClient(d2.url);
    await expectCommittedIntact(c2, committed);
    for (const d of [big.digest, mono.digest, big.prefixDigest(SENT), mono.prefixDigest(SENT)]) {
      expect((await c2.headBlob('crash/big', d)).status, `partial upload visible as ${d}`).toBe(404);
    }
    expect(await listDir(join(d2.dataDir, 'tmp'))).toEqual([]);
    const tree = await blobTree(d2.dataDir);
    expect(tree.strays).toEqual([]);
    expect([...tree.blobs.keys()].sort()).toEqual([...committed.blobs.keys()].sort());
    expect(await corruptBlobs(tree)).toEqual([]);

    // The session either survived with an exact prefix of what was sent (then it resumes to the right blob),
    // or is gone (then the client starts over). It never holds anything else. (Same path, new port.)
    const loc2 = new URL(new URL(loc).pathname, d2.url).toString();
    const status = await request('GET', loc2);
    if (status.status === 204) {
      const have = uploadedBytes(status.headers.range);
      expect(have).toBeLessThanOrEqual(SENT);
      const rest = streamingRequest('PATCH', loc2, { 'Content-Type': 'application/octet-stream', 'Content-Range': `${have}-${big.size - 1}`, 'Content-Length': big.size - have });
      await writeAll(rest, big.range(have));
      rest.end();
      const r = await rest.response;
      expect(r.status, r.body.toString()).toBe(202);
      expect(r.headers.range).toBe(`0-${big.size - 1}`);
      const put = await request('PUT', RegistryClient.withDigest(new URL(r.headers.location ?? loc2, d2.url).toString(), big.digest));
      expect(put.status, put.body.toString()).toBe(201);
    } else {
      expect(status.status).toBe(404);
    }

    // Pushing again from scratch succeeds: the chunked-PATCH blob and the monolithic one.
    const again = streamingRequest('PATCH', await c2.startUpload('crash/big'), { 'Content-Type': 'application/octet-stream' });
    await writeAll(again, big.range());
    again.end();
    const patched = await again.response;
    expect(patched.status, patched.body.toString()).toBe(202);
    const fin = await request('PUT', RegistryClient.withDigest(new URL(patched.headers.location!, d2.url).toString(), big.digest));
    expect(fin.status, fin.body.toString()).toBe(201);
    expect(fin.headers['docker-content-digest']).toBe(big.digest);

    const post2 = streamingRequest('POST', `${d2.url}/v2/crash/big/blobs/uploads/?digest=${mono.digest}`, { 'Content-Type': 'application/octet-stream' });
    await writeAll(post2, mono.range());
    post2.end();
    const posted = await post2.response;
    expect(posted.status, posted.body.toString()).toBe(201);

    for (const b of [big, mono]) {
      const head = await c2.headBlob('crash/big', b.digest);
      expect(head.status).toBe(200);
      expect(Number(head.headers['content-length'])).toBe(b.size);
      const get = await c2.getBlobDigest('crash/big', b.digest);
      expect(get.digest).toBe(b.digest);
      expect(get.length).toBe(b.size);
    }
    expect(await listDir(join(d2.dataDir, 'tmp'))).toEqual([]);
    expect(await listDir(join(d2.dataDir, 'uploads'))).toEqual([]);
    const after = await blobTree(d2.dataDir);
    expect(after.strays).toEqual([]);
    expect([...after.blobs.keys()].sort()).toEqual([...committed.blobs.keys(), big.digest, mono.digest].sort());
    expect(await d2.stop()).toEqual({ code: 0, signal: null });
  }, 150_000);

  it('during and just after manifest PUTs: every acknowledged manifest and tag survives, nothing half-written', async () => {
    const d1 = await startDaemon();
    const c1 = new RegistryClient(d1.url);
    const committed = await pushCommittedState(c1, 'crash/app');
    const repo = 'crash/manifests';
    const layers = [randomBytes(4096), randomBytes(100)];
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
    for (const b of [...layers, config]) await c1.pushBlob(repo, b, 'monolithic-post');

    // Stream A: unique tags m<i>, 4 at a time. Stream B: one tag "hot" rewritten sequentially (last writer wins).
    const N = 400;
    const unique = Array.from({ length: N }, (_, i) => imageManifest(config, layers, { 'e2e.n': String(i), pad: 'x'.repeat(i * 7) }));
    const hot = Array.from({ length: N }, (_, j) => imageManifest(config, layers, { 'e2e.hot': String(j) }));
    const acked = new Set<number>();
    let lastHotAcked = -1;
    let killed = false;
    let killing: Promise<unknown> = Promise.resolve();
    const KILL_AFTER = 150;
    const kill = () => {
      if (!killed) {
        killed = true;
        killing = d1.kill9();
      }
    };
    let next = 0;
    const worker = async () => {
      while (!killed && next < N) {
        const i = next++;
        try {
          const r = await c1.putManifest(repo, `m${i}`, unique[i]!, MT.OCI_MANIFEST);
          if (r.status !== 201) throw new Error(`PUT m${i}: ${r.status} ${r.body.toString()}`);
          acked.add(i);
          // "Just after": the kill follows the 150th acknowledgement at once, with other PUTs in flight.
          if (acked.size >= KILL_AFTER) kill();
        } catch (e) {
          if (!killed) throw e;
        }
      }
    };
    const hotWriter = async () => {
      for (let j = 0; j < N && !killed; j++) {
        try {
          const r = await c1.putManifest(repo, 'hot', hot[j]!, MT.OCI_MANIFEST);
          if (r.status !== 201) throw new Error(`PUT hot ${j}: ${r.status} ${r.body.toString()}`);
          lastHotAcked = j;
        } catch (e) {
          if (!killed) throw e;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker(), hotWriter()]);
    expect(killed).toBe(true);
    await killing;

    const d2 = await startDaemon({ dataDir: d1.dataDir, retryWhileLockedMs: RESTART_WAIT_MS });
    const c2 = new RegistryClient(d2.url);
    await expectCommittedIntact(c2, committed);

    for (let i = 0; i < N; i++) {
      const r = await c2.getManifest(repo, `m${i}`);
      if (acked.has(i)) expect(r.status, `acknowledged m${i} lost`).toBe(200);
      else expect([200, 404], `m${i}`).toContain(r.status);
      if (r.status === 200) {
        expect(r.body.equals(unique[i]!)).toBe(true);
        expect(r.headers['docker-content-digest']).toBe(sha256(unique[i]!));
        const byDigest = await c2.getManifest(repo, sha256(unique[i]!));
        expect(byDigest.status).toBe(200);
      }
    }
    const h = await c2.getManifest(repo, 'hot');
    const allowed = [lastHotAcked, lastHotAcked + 1].filter((j) => j >= 0).map((j) => sha256(hot[j]!));
    if (lastHotAcked < 0) expect([200, 404]).toContain(h.status);
    else expect(h.status).toBe(200);
    if (h.status === 200) {
      expect(allowed, `tag "hot" went back before the last acknowledged write ${lastHotAcked}`).toContain(h.headers['docker-content-digest']);
      expect(sha256(h.body)).toBe(h.headers['docker-content-digest']);
    }
    // Every listed tag resolves to intact content.
    const tags = JSON.parse((await c2.req('GET', `/v2/${repo}/tags/list`)).body.toString()) as { tags: string[] };
    expect(tags.tags.length).toBeGreaterThanOrEqual(acked.size);
    for (const t of tags.tags) {
      const r = await c2.getManifest(repo, t);
      expect(r.status, `listed tag ${t}`).toBe(200);
      expect(sha256(r.body)).toBe(r.headers['docker-content-digest']);
    }
    expect(await listDir(join(d2.dataDir, 'tmp'))).toEqual([]);
    const tree = await blobTree(d2.dataDir);
    expect(tree.strays).toEqual([]);
    expect(await corruptBlobs(tree)).toEqual([]);

    // Pushing everything again succeeds and leaves every tag pointing at its manifest.
    for (let i = 0; i < N; i++) {
      const r = await c2.putManifest(repo, `m${i}`, unique[i]!, MT.OCI_MANIFEST);
      expect(r.status, r.body.toString()).toBe(201);
    }
    expect((await c2.putManifest(repo, 'hot', hot[N - 1]!, MT.OCI_MANIFEST)).status).toBe(201);
    const final = JSON.parse((await c2.req('GET', `/v2/${repo}/tags/list`)).body.toString()) as { tags: string[] };
    expect(final.tags.length).toBe(N + 1);
    expect((await c2.getManifest(repo, 'hot')).headers['docker-content-digest']).toBe(sha256(hot[N - 1]!));
    expect(await d2.stop()).toEqual({ code: 0, signal: null });
  }, 120_000);

  /** The pids among `pids` that hold a file under `dir` open (read from /proc/<pid>/fd). */
  async function holdersOf(dir: string, pids: number[]): Promise<number[]> {
    const out: number[] = [];
    for (const pid of pids) {
      const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
      const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
      if (targets.some((t) => t.startsWith(`${dir}/`))) out.push(pid);
    }
    return out;
  }

  async function killWorkersMidUpload(which: 'the uploading one' | 'all'): Promise<void> {
    const d = await startDaemon({ args: ['--workers', '2'] });
    const c = new RegistryClient(d.url);
    const committed = await pushCommittedState(c, 'crash/app');
    const blob = new BigBlob(64);
    const post = streamingRequest('POST', `${d.url}/v2/crash/w/blobs/uploads/?digest=${blob.digest}`, { 'Content-Type': 'application/octet-stream' });
    await writeAll(post, blob.range(0, 32 * MiB));
    const tmp = join(d.dataDir, 'tmp');
    let uploader: number[] = [];
    await waitFor('a worker writing the upload into DATA/tmp', async () => (uploader = await holdersOf(tmp, d.workers())).length === 1);

    const workers = d.workers();
    expect(workers.length).toBe(2);
    const victims = which === 'all' ? workers : uploader;
    for (const pid of victims) process.kill(pid, 'SIGKILL');
    expect(await waitGone(victims)).toEqual([]);
    await expect(post.response).rejects.toThrow();
    // Past the primary's respawn delay: it must still be there (and serving through new workers), not have
    // exited quietly once no worker held its event loop open.
    await sleep(1500);
    expect(alive(d.pid), `the daemon exited with its workers (exit ${JSON.stringify(await Promise.race([d.exited, sleep(0)]))})`).toBe(true);

    // Replacement workers serve the same store.
    await waitFor('the daemon to serve again', async () => (await request('GET', `${d.url}/v2/`).catch(() => ({ status: 0 }))).status === 200, 15_000);
    await waitFor('the daemon to be back to 2 workers', async () => d.workers().length === 2, 10_000);
    await expectCommittedIntact(c, committed);
    expect((await c.headBlob('crash/w', blob.digest)).status).toBe(404);
    await waitFor("the dead worker's temp file to be removed", async () => (await listDir(tmp)).length === 0, 10_000);

    const again = streamingRequest('POST', `${d.url}/v2/crash/w/blobs/uploads/?digest=${blob.digest}`, { 'Content-Type': 'application/octet-stream' });
    await writeAll(again, blob.range());
    again.end();
    expect((await again.response).status).toBe(201);
    const got = await c.getBlobDigest('crash/w', blob.digest);
    expect(got.digest).toBe(blob.digest);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
  }

  it('kill -9 of the worker serving an upload: replaced, partial upload invisible, its temp file removed', async () => {
    await killWorkersMidUpload('the uploading one');
  }, 60_000);

  it('kill -9 of every worker at once: the daemon stays up, replaces them and serves again', async () => {
    await killWorkersMidUpload('all');
  }, 60_000);

  it('kill -9 of the primary alone: its workers stop serving the store at once', async () => {
    // (Restarting after a crash is covered by the tests above.)
    const d1 = await startDaemon({ args: ['--workers', '2'] });
    await pushCommittedState(new RegistryClient(d1.url), 'crash/app');
    const workers = d1.workers();
    expect(workers.length).toBe(2);
    process.kill(d1.pid, 'SIGKILL');
    await d1.exited;
    // A worker must not go on serving (and writing) a store that nobody owns any more.
    expect(await waitGone(workers, 5_000), 'workers outlived their primary').toEqual([]);
    await expect(request('GET', `${d1.url}/v2/`)).rejects.toThrow();
  }, 30_000);
});
