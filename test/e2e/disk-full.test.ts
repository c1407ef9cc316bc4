/**
 * Issue 3 §5, for real: the data directory on a 24 MiB tmpfs, with a budget (1 GiB) larger than the filesystem,
 * so only ENOSPC can trigger eviction. A write that hits ENOSPC must fail that request with a clear error (507,
 * OCI error JSON) and leave no partial blob; reads keep working; eviction frees space and pushes succeed again.
 *
 * How full the filesystem is, is controlled by the test where it matters: a filler file (outside the data dir)
 * takes all the space, then is cut back by an exact number of pages. tmpfs allocates whole pages, so a blob one
 * byte larger than the free pages runs out of space on its very last byte.
 *
 * Needs root to mount. Skipped (with a message) when not root or the mount fails, unless CI=true, where it runs
 * and fails loudly instead. Only the tmpfs mounted here is unmounted.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { appendFile, rm, stat, statfs, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB } from '../helpers/content.js';
import { cleanup, sleep } from '../helpers/daemon.js';
import { errno } from '../helpers/errors.js';
import { MT, RegistryClient, request, sha256, type StreamedResponse } from '../helpers/registry-client.js';
import {
  KiB,
  blobStatus,
  checkStore,
  corruptBlobFiles,
  makeRef,
  manifestStatus,
  pullRef,
  pushRef,
  putRefManifest,
  randomLayers,
  startCache,
  status,
  waitFor,
  type CacheDaemon,
  type PushedRef,
} from '../helpers/cache-helpers.js';
import { blobTree, listDir } from '../helpers/store.js';

const CI = process.env.CI === 'true';
const FS_SIZE = '24m';
const PAGE = 4096;

/** Mounts a tmpfs now (collection time), so the suite can be skipped when that is impossible outside CI. */
function mountTmpfs(): { dir?: string; why?: string } {
  if (process.platform !== 'linux') return { why: 'not Linux' };
  if (process.getuid?.() !== 0) return { why: 'not root (mount needs it)' };
  const dir = mkdtempSync(join(tmpdir(), 'buildcached-tmpfs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${FS_SIZE}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmdirSync(dir);
    return { why: `mount -t tmpfs failed: ${(r.stderr || r.error?.message || '').trim()}` };
  }
  return { dir };
}

const mount = mountTmpfs();
const skip = mount.dir === undefined && !CI;
if (skip) console.warn(`[e2e] skipping disk-full suite: ${mount.why} (set CI=true to make this an error)`);

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Appends to `path` until the filesystem has no page left. */
async function fillUp(path: string): Promise<void> {
  for (const size of [1 * MiB, 64 * KiB, PAGE, 1]) {
    const chunk = Buffer.alloc(size, 0x5a);
    for (;;) {
      try {
        await appendFile(path, chunk);
      } catch (e) {
        if (errno(e) !== 'ENOSPC') throw e;
        break;
      }
    }
  }
}

/** Fills the filesystem, then gives back exactly `pages` pages by cutting the filler. */
async function leaveFree(filler: string, pages: number): Promise<void> {
  await fillUp(filler);
  const used = Math.ceil((await stat(filler)).size / PAGE);
  await truncate(filler, Math.max(0, used - pages) * PAGE);
}

/** The error of a failed write: 507 with OCI error JSON whose message says the disk is full. */
function expectDiskFull(res: StreamedResponse, what: string): void {
  expect(res.status, `${what}: ${res.body.toString().slice(0, 300)}`).toBe(507);
  expect(String(res.headers['content-type'])).toMatch(/json/);
  const body = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
  expect(body.errors).toHaveLength(1);
  expect(typeof body.errors[0]!.code).toBe('string');
  expect(body.errors[0]!.message).toMatch(/full/i);
}

describe.skipIf(skip)('disk full (tmpfs)', () => {
  let d: CacheDaemon;
  let dataDir: string;
  let filler: string;
  /** Pushed before the disk filled up, oldest first; old enough to be evictable. */
  const before: PushedRef[] = [];
  let lastGood: PushedRef | undefined;
  /** Blobs found damaged by an earlier test (already reported there); later tests look past them. */
  const damaged = new Set<string>();
  const intact = (r: PushedRef) => ![...r.blobs.keys()].some((x) => damaged.has(x));

  beforeAll(async () => {
    if (!mount.dir) throw new Error(`disk-full suite cannot run: ${mount.why}`);
    dataDir = join(mount.dir, 'data');
    filler = join(mount.dir, 'filler');
    d = await startCache({ maxBytes: '1GiB', pushGraceSeconds: 1, dataDir });
    // 8 references of one 2 MiB layer each (16 of the 24 MiB), in distinct seconds-old pushes.
    for (let i = 0; i < 8; i++) before.push(await pushRef(d.client, `full/r${i}`, 'cache', randomLayers([2 * MiB])));
    await sleep(2100); // past the grace window: nothing protects these any more
  });

  afterAll(async () => {
    await cleanup();
    if (mount.dir) {
      const r = spawnSync('umount', [mount.dir], { encoding: 'utf8' });
      if (r.status !== 0) console.warn(`umount ${mount.dir} failed: ${r.stderr}`);
      else rmdirSync(mount.dir);
    }
  });

  const postBlob = (repo: string, data: Buffer) =>
    request('POST', `${d.url}/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });

  it('fails the push that runs out of space with 507 and an OCI error; nothing partial, nothing truncated', async () => {
    // 3 MiB left (the filler stays until the exact-fit tests): one more 2 MiB reference fits, the next does not.
    await leaveFree(filler, (3 * MiB) / PAGE);
    expect(await freeBytes(mount.dir!)).toBeGreaterThanOrEqual(3 * MiB - 2 * PAGE);

    let failed: { digest: string; res: StreamedResponse } | undefined;
    const accepted: string[] = [];
    for (let i = 0; i < 5 && !failed; i++) {
      const ref = makeRef(`full/new${i}`, 'cache', [randomBytes(2 * MiB)]);
      for (const [digest, data] of ref.blobs) {
        const res = await postBlob(ref.repo, data);
        if (res.status !== 201) {
          failed = { digest, res };
          break;
        }
        accepted.push(digest);
      }
      if (failed) break;
      await putRefManifest(d.client, ref);
      lastGood = ref;
    }
    expect(failed, 'no push failed on a full filesystem').toBeDefined();
    expectDiskFull(failed!.res, `push of ${failed!.digest}`);
    // The failure triggers an eviction run; let it finish before looking at the files.
    await waitFor('the disk-full eviction run', async () => (await status(d.url)).evictions.runs > 0, 5000);
    // Nothing of the failed write is visible or left behind.
    expect(await blobStatus(d.client, 'full/check', failed!.digest)).toBe(404);
    const tree = await blobTree(dataDir);
    expect(tree.blobs.has(failed!.digest)).toBe(false);
    expect(tree.strays).toEqual([]);
    expect(await listDir(join(dataDir, 'tmp'))).toEqual([]);
    expect(await listDir(join(dataDir, 'uploads'))).toEqual([]);
    // Every blob that was answered 201 is stored whole (a write cut short by ENOSPC must not be committed).
    const corrupt = await corruptBlobFiles(tree);
    for (const x of corrupt) damaged.add(x.split(' ')[0]!);
    expect(corrupt, 'blobs answered 201 whose file does not hash to their digest (truncated by ENOSPC)').toEqual([]);
    for (const digest of accepted) expect(tree.blobs.has(digest), `accepted blob ${digest} is on disk`).toBe(true);
  });

  it('keeps serving reads of existing blobs', async () => {
    // The newest references are not what a disk-full eviction takes first.
    for (const r of [before.at(-1)!, before.at(-2)!, ...(lastGood && intact(lastGood) ? [lastGood] : [])]) {
      expect((await pullRef(d.client, r.repo, r.tag)).status, `${r.repo}:${r.tag}`).toBe('ok');
    }
    expect((await request('GET', `${d.url}/v2/`)).status).toBe(200);
  });

  it('evicts on ENOSPC (least recently used first) and accepts pushes again', async () => {
    const next = makeRef('full/after', 'cache', [randomBytes(2 * MiB)]);
    await waitFor(
      'a push to succeed after eviction',
      async () => {
        for (const data of next.blobs.values()) {
          const res = await postBlob(next.repo, data);
          if (res.status === 507) return false;
          expect(res.status).toBe(201);
        }
        return true;
      },
      10_000,
      250,
    );
    await putRefManifest(d.client, next);
    const s = await status(d.url);
    expect(s.evictions.runs).toBeGreaterThanOrEqual(1);
    expect(s.evictions.bytesReclaimed).toBeGreaterThanOrEqual(2 * MiB);
    // The least recently used reference went; the most recent ones are whole.
    expect(await manifestStatus(d.client, before[0]!.repo, 'cache')).toBe(404);
    expect((await pullRef(d.client, next.repo, next.tag)).status).toBe('ok');
    expect((await pullRef(d.client, before.at(-1)!.repo, 'cache')).status).toBe('ok');
    await checkStore(dataDir, d.client, { ignoreCorrupt: damaged });
  });

  for (const style of ['monolithic POST', 'PATCH chunk'] as const) {
    it(`refuses a blob that is one byte too large for the free space (${style}): 507, never a truncated blob`, async () => {
      const pages = 64;
      const data = randomBytes(pages * PAGE + 1);
      const digest = sha256(data);
      await rm(filler, { force: true });
      await leaveFree(filler, pages);
      try {
        expect(await freeBytes(mount.dir!)).toBe(pages * PAGE);
        if (style === 'monolithic POST') {
          expectDiskFull(await postBlob('full/exact', data), 'a blob one byte larger than the free space');
        } else {
          const c = new RegistryClient(d.url);
          const loc = await c.startUpload('full/exact');
          const patch = await request('PATCH', loc, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });
          expectDiskFull(patch, 'a chunk one byte larger than the free space');
          // The session is as it was: nothing received.
          const st = await request('GET', loc);
          expect(st.status).toBe(204);
          expect(st.headers.range).toBe('0-0');
          const put = await request('PUT', RegistryClient.withDigest(loc, digest));
          expect(put.status).not.toBe(201);
        }
        expect(await blobStatus(d.client, 'full/exact', digest)).toBe(404);
        const tree = await blobTree(dataDir);
        expect(tree.blobs.has(digest), 'a truncated copy was committed under the full blob digest').toBe(false);
        expect((await corruptBlobFiles(tree)).filter((x) => !damaged.has(x.split(' ')[0]!))).toEqual([]);
        expect(await listDir(join(dataDir, 'tmp'))).toEqual([]);
      } finally {
        await rm(filler, { force: true });
        // Whatever happened, do not leave a damaged blob to the next tests.
        if ((await blobStatus(d.client, 'full/exact', digest)) === 200) await request('DELETE', `${d.url}/v2/full/exact/blobs/${digest}`);
      }
    });
  }

  it('answers 507 (not 500) to an upload POST on a full disk, and leaves no session behind', async () => {
    const sessionsBefore = await listDir(join(dataDir, 'uploads'));
    try {
      await leaveFree(filler, 0);
      const res = await request('POST', `${d.url}/v2/full/session/blobs/uploads/`);
      expectDiskFull(res, 'upload POST on a full disk');
      expect(await listDir(join(dataDir, 'uploads'))).toEqual(sessionsBefore);
    } finally {
      await rm(filler, { force: true });
    }
    const ok = await request('POST', `${d.url}/v2/full/session/blobs/uploads/`);
    expect(ok.status).toBe(202);
    expect((await request('DELETE', new URL(String(ok.headers.location), d.url).toString())).status).toBe(204);
  });

  it('answers 507 (not 500) when a manifest or tag write hits ENOSPC, and stores nothing partial', async () => {
    const existing = before.at(-1)!;
    try {
      // Fill the filesystem from outside the daemon: its eviction cannot free this.
      await leaveFree(filler, 0);
      // A new manifest over existing blobs: the manifest bytes cannot be written.
      const manifest = Buffer.from(JSON.stringify({ ...JSON.parse(existing.manifest.toString()), annotations: { pad: 'x'.repeat(2000) } }));
      const res = await request('PUT', `${d.url}/v2/${existing.repo}/manifests/fresh`, { body: manifest, headers: { 'Content-Type': MT.OCI_MANIFEST } });
      expectDiskFull(res, 'manifest PUT on a full disk');
      expect(await manifestStatus(d.client, existing.repo, 'fresh')).toBe(404);
      expect(await manifestStatus(d.client, existing.repo, sha256(manifest))).toBe(404);
      expect((await blobTree(dataDir)).blobs.has(sha256(manifest))).toBe(false);

      // Let the eviction that 507 triggered finish, then take whatever it freed.
      await sleep(500);
      await fillUp(filler);
      // The same manifest bytes under a second tag: only the tag file needs writing.
      const retag = await request('PUT', `${d.url}/v2/${existing.repo}/manifests/second-tag`, { body: existing.manifest, headers: { 'Content-Type': MT.OCI_MANIFEST } });
      expectDiskFull(retag, 'tag PUT (existing manifest, new tag) on a full disk');
      expect(await manifestStatus(d.client, existing.repo, 'second-tag')).toBe(404);
      expect(await listDir(join(dataDir, 'tmp'))).toEqual([]);
      // Reads still work while full.
      expect((await pullRef(d.client, existing.repo, existing.tag)).status).toBe('ok');
    } finally {
      await rm(filler, { force: true });
    }
    // Space is back: the same tag PUT now succeeds, and the daemon is still up.
    const ok = await request('PUT', `${d.url}/v2/${existing.repo}/manifests/second-tag`, { body: existing.manifest, headers: { 'Content-Type': MT.OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    expect((await pullRef(d.client, existing.repo, 'second-tag')).digest).toBe(existing.digest);
    expect(d.proc.exitCode).toBe(null);
    await checkStore(dataDir, d.client, { ignoreCorrupt: damaged });
  });
});
