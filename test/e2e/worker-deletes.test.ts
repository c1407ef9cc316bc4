/**
 * Deletions with two worker processes (issue 8, item 2): once a DELETE of a tag or of a manifest digest is
 * answered, no worker serves what it removed — not the manifest, not the tag in tags/list — and the primary's
 * status no longer lists the reference. Every check goes over a fresh connection, so the cluster spreads them
 * over both workers (the test asserts that both answered).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, servingPids } from '../helpers/daemon.js';
import { request } from '../helpers/registry-client.js';
import { KiB, pushRef, randomLayers, startCache, status, type CacheDaemon } from '../helpers/cache-helpers.js';

afterEach(async () => {
  await cleanup();
});

const GETS = 40;

/** GETs `path` GETS times, each on a new connection; returns the statuses seen. */
async function statuses(d: CacheDaemon, path: string): Promise<number[]> {
  const seen: number[] = [];
  for (let i = 0; i < GETS; i++) seen.push((await request('GET', `${d.url}${path}`)).status);
  return seen;
}

async function tagLists(d: CacheDaemon, repo: string): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < GETS; i++) {
    const res = await request('GET', `${d.url}/v2/${repo}/tags/list`);
    expect(res.status).toBe(200);
    out.push((JSON.parse(res.body.toString('utf8')) as { tags: string[] }).tags);
  }
  return out;
}

/** Both workers have served the repository's manifest (so each holds it in memory before the delete). */
async function warmBothWorkers(d: CacheDaemon, repo: string, ref: string): Promise<void> {
  for (let i = 0; i < 200 && servingPids(d, repo).size < 2; i++) {
    expect((await request('GET', `${d.url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: '*/*' } })).status).toBe(200);
  }
  expect(servingPids(d, repo).size, 'requests reached both workers').toBe(2);
}

describe('deletes with two workers', () => {
  it('a deleted tag is gone on every worker and in the primary', async () => {
    const d = await startCache({ maxBytes: 64 * 1024 * KiB, pushGraceSeconds: 1, workers: 2 });
    const ref = await pushRef(d.client, 'org/app', 'main', randomLayers([16 * KiB, 8 * KiB]));
    await pushRef(d.client, 'org/app', 'other', randomLayers([8 * KiB]));
    await warmBothWorkers(d, 'org/app', 'main');

    expect((await request('DELETE', `${d.url}/v2/org/app/manifests/main`)).status).toBe(202);

    expect(await statuses(d, '/v2/org/app/manifests/main')).toEqual(Array(GETS).fill(404));
    for (const tags of await tagLists(d, 'org/app')) expect(tags).toEqual(['other']);
    // The manifest itself stays (only the tag went), by digest on every worker.
    expect(await statuses(d, `/v2/org/app/manifests/${ref.digest}`)).toEqual(Array(GETS).fill(200));
    const refs = (await status(d.url)).references.filter((r) => r.tag !== undefined).map((r) => `${r.repo}:${r.tag}`);
    expect(refs).toEqual(['org/app:other']);
  });

  it('a deleted manifest digest is gone on every worker, with its tags, and in the primary, even when read meanwhile', async () => {
    const d = await startCache({ maxBytes: 64 * 1024 * KiB, pushGraceSeconds: 1, workers: 2 });
    await pushRef(d.client, 'org/lib', 'other', randomLayers([8 * KiB]));
    // Several rounds, each with readers of the digest running while it is deleted: a worker that had already
    // dropped the record must not load it back from its file before the deleting worker removed that.
    for (let round = 0; round < 5; round++) {
      const ref = await pushRef(d.client, 'org/lib', 'main', randomLayers([16 * KiB, 8 * KiB]));
      await warmBothWorkers(d, 'org/lib', ref.digest);
      let deleting = true;
      const readers = Array.from({ length: 6 }, async () => {
        while (deleting) await request('GET', `${d.url}/v2/org/lib/manifests/${ref.digest}`);
      });
      expect((await request('DELETE', `${d.url}/v2/org/lib/manifests/${ref.digest}`)).status).toBe(202);
      deleting = false;
      await Promise.all(readers);

      expect(await statuses(d, `/v2/org/lib/manifests/${ref.digest}`), `round ${round}`).toEqual(Array(GETS).fill(404));
      expect(await statuses(d, '/v2/org/lib/manifests/main'), `round ${round}`).toEqual(Array(GETS).fill(404));
      for (const tags of await tagLists(d, 'org/lib')) expect(tags).toEqual(['other']);
      const refs = (await status(d.url)).references.map((r) => `${r.repo}:${r.tag ?? r.digest}`);
      expect(refs, `round ${round}`).toEqual(['org/lib:other']);
    }
  });
});
