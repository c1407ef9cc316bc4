/**
 * Issue 3: concurrent pushes, pulls and eviction under a tight budget, against the daemon as shipped on a
 * 2-core box (two HTTP workers and a primary that owns recency and the evictor). Default 20 s of traffic
 * (STORM_SECONDS overrides).
 *
 * What is asserted, and why:
 * - Every byte read is verified: a manifest body hashes to its Docker-Content-Digest and is exactly what a pusher
 *   pushed; a blob body hashes to the digest it was asked for. Zero corrupt or cut-off reads.
 * - Pushes are BuildKit-like (HEAD every blob, upload only the missing ones, then PUT the manifest) and must all
 *   succeed: a blob that answered HEAD 200 or was uploaded moments ago is inside the push grace window, so
 *   eviction must not take it before the manifest arrives (a 400 MANIFEST_BLOB_UNKNOWN is a failure).
 * - A pull may legitimately find no manifest (404: never pushed yet, or evicted). A pull that got a manifest can
 *   still race with eviction of that very reference: the daemon removes the tag, then the manifest, then the
 *   blobs, so a blob GET may 404 after a successful manifest GET. That is allowed only when the reference is
 *   really gone: the same manifest by digest must then be 404 too. A blob that 404s while the manifest that
 *   references it is still served is the failure the eviction order exists to prevent.
 * - The budget is hard: usage never passes it. When what fills it cannot be evicted (every blob pushed or probed
 *   within the grace window, which with 4 pushers outgrows 4 MiB), a write is refused with 507 saying so; that is
 *   counted, it is not a failure. Disk use is sampled all along and must stay within the budget.
 * - No other status and no network error, on any request (there is no real disk limit here, so any other 507 is a
 *   failure).
 * - Eviction really ran (tags and bytes reclaimed), and after the storm (past the grace window) a gc brings usage
 *   under the high watermark; the store on disk is consistent and every remaining tag pulls whole.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, sleep } from '../helpers/daemon.js';
import { MT, RegistryClient, sha256, type StreamedResponse } from '../helpers/registry-client.js';
import { KiB, adminRequest, checkStore, gc, makeRef, manifestBlobs, startCache, status, type PushedRef } from '../helpers/cache-helpers.js';
import { budgetedBytes, listDir } from '../helpers/store.js';

/** STORM_SECONDS (default 20) and STORM_WORKERS (default 2) tune the run. */
const STORM_MS = Number(process.env.STORM_SECONDS ?? 20) * 1000;
const BUDGET = 4 * 1024 * KiB;
const GRACE = 3;
const REPOS = ['storm/a', 'storm/b', 'storm/c', 'storm/team/d', 'storm/team/e', 'storm/f'];
const TAGS = ['cache', 'cache-max'];
const PUSHERS = 4;
const PULLERS = 4;
const WORKERS = Number(process.env.STORM_WORKERS ?? 2);

afterAll(async () => {
  await cleanup();
});

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

describe('cache storm', () => {
  it(`${STORM_MS / 1000} s of concurrent pushes, pulls and eviction under a tight budget: no corrupt read, no unexplained failure`, { timeout: STORM_MS + 30_000 }, async () => {
    const d = await startCache({ maxBytes: BUDGET, pushGraceSeconds: GRACE, workers: WORKERS });
    const agent = new http.Agent({ keepAlive: true, maxSockets: PUSHERS + PULLERS + 2 });
    const c = new RegistryClient(d.url, agent);
    const failures: string[] = [];
    const fail = (what: string) => {
      if (failures.length < 200) failures.push(what);
    };
    const stats = { refusedNoRoom: 0, pushes: 0, blobsUploaded: 0, blobsSkipped: 0, pulls: 0, pullsNoManifest: 0, blobReads: 0, bytesRead: 0, evictedAfterResolve: 0, gcRuns: 0 };
    /** Every manifest ever pushed: digest → bytes. */
    const manifests = new Map<string, Buffer>();
    /** Base layers shared by many references (as a base image's layers are). */
    const bases = Array.from({ length: 4 }, () => randomBytes(128 * KiB));

    /** One request with a deadline: a response that stalls (e.g. a body shorter than its Content-Length on a
     *  keep-alive connection) is a failure, not a hung test. */
    const timed = async (what: string, p: Promise<StreamedResponse>): Promise<StreamedResponse | undefined> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        return await Promise.race([
          p,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no complete response within 15 s')), 15_000);
          }),
        ]);
      } catch (e) {
        fail(`${what}: ${(e as Error).message}`);
        return undefined;
      } finally {
        clearTimeout(timer);
      }
    };

    const deadline = Date.now() + STORM_MS;
    /** A write refused because the budget holds only what cannot be evicted now: the hard budget working. */
    const noRoom = (res: { status: number; body: Buffer }) =>
      (res.status === 507 || (res.status === -1 && /got 507/.test(res.body.toString()))) && /cannot be evicted now/.test(res.body.toString());

    const pusher = async (n: number) => {
      let i = 0;
      while (Date.now() < deadline) {
        const repo = pick(REPOS);
        const tag = pick(TAGS);
        const layers = [pick(bases), randomBytes(32 * KiB + Math.floor(Math.random() * 224 * KiB)), randomBytes(16 * KiB)];
        const ref: PushedRef = makeRef(repo, tag, layers);
        /** How this push got each blob, for the failure message: answered HEAD 200 (upload skipped) or uploaded. */
        const how = new Map<string, { what: string; at: number }>();
        let ok = true;
        for (const [digest, data] of ref.blobs) {
          const head = await timed(`HEAD ${digest}`, c.req('HEAD', `/v2/${repo}/blobs/${digest}`));
          if (!head) {
            ok = false;
            break;
          }
          if (head.status === 200) {
            how.set(digest, { what: 'answered HEAD 200 (upload skipped)', at: Date.now() });
            stats.blobsSkipped++;
            continue;
          }
          if (head.status !== 404) {
            fail(`HEAD ${repo} ${digest}: ${head.status}`);
            ok = false;
            break;
          }
          // Alternate the two upload styles BuildKit and other clients use.
          const res =
            (n + i) % 2 === 0
              ? await timed(`POST ${digest}`, c.req('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } }))
              : await timed(`upload ${digest}`, c.pushBlob(repo, data, 'post-put').catch((e: Error) => ({ status: -1, body: Buffer.from(e.message) }) as StreamedResponse));
          if (res && noRoom(res)) stats.refusedNoRoom++;
          if (!res || res.status !== 201) {
            if (res && !noRoom(res)) fail(`upload ${repo} ${digest}: ${res.status} ${res.body.toString().slice(0, 200)}`);
            ok = false;
            break;
          }
          how.set(digest, { what: 'was uploaded (201)', at: Date.now() });
          stats.blobsUploaded++;
        }
        if (!ok) continue;
        manifests.set(ref.digest, ref.manifest);
        const put = await timed(`PUT ${repo}:${tag}`, c.putManifest(repo, tag, ref.manifest, MT.OCI_MANIFEST));
        if (put && noRoom(put)) stats.refusedNoRoom++;
        else if (put && put.status !== 201) {
          let missing: string[] = [];
          try {
            missing = (JSON.parse(put.body.toString()) as { errors: Array<{ detail?: { digests?: string[] } }> }).errors[0]?.detail?.digests ?? [];
          } catch {
            // not an OCI error body
          }
          const now = Date.now();
          const why = missing.map((m) => {
            const h = how.get(m);
            return `${m}${bases.some((b) => sha256(b) === m) ? ' (a shared base layer)' : ''} ${h ? `${h.what} ${now - h.at} ms before this PUT` : ''}`;
          });
          fail(`PUT manifest ${repo}:${tag}: ${put.status}${why.length ? `, blob gone: ${why.join('; ')}` : ` ${put.body.toString().slice(0, 300)}`}`);
        }
        else if (put) stats.pushes++;
        i++;
      }
    };

    const puller = async () => {
      while (Date.now() < deadline) {
        const repo = pick(REPOS);
        const tag = pick(TAGS);
        const m = await timed(`GET ${repo}:${tag}`, c.getManifest(repo, tag));
        if (!m) continue;
        if (m.status === 404) {
          stats.pullsNoManifest++;
          await sleep(5);
          continue;
        }
        if (m.status !== 200) {
          fail(`GET manifest ${repo}:${tag}: ${m.status} ${m.body.toString().slice(0, 200)}`);
          continue;
        }
        const digest = String(m.headers['docker-content-digest']);
        if (sha256(m.body) !== digest) fail(`CORRUPT manifest ${repo}:${tag}: body hashes to ${sha256(m.body)}, header says ${digest}`);
        const known = manifests.get(digest);
        if (!known) fail(`manifest ${repo}:${tag} is ${digest}, which nobody pushed`);
        else if (!known.equals(m.body)) fail(`CORRUPT manifest ${repo}:${tag}: bytes differ from what was pushed`);
        for (const blob of manifestBlobs(m.body)) {
          const b = await timed(`GET blob ${blob}`, c.req('GET', `/v2/${repo}/blobs/${blob}`, { keepBody: false }));
          if (!b) break;
          if (b.status === 200) {
            stats.blobReads++;
            stats.bytesRead += b.length;
            if (b.digest !== blob) fail(`CORRUPT blob ${blob} of ${repo}:${tag}: ${b.length} bytes hashing to ${b.digest}`);
            continue;
          }
          if (b.status === 404) {
            // Allowed only if the whole reference is gone: the manifest by digest must be unknown now.
            const again = await timed(`GET ${repo}@${digest}`, c.getManifest(repo, digest));
            if (again?.status === 404) {
              stats.evictedAfterResolve++;
            } else if (again) {
              fail(`blob ${blob} is gone while its manifest ${repo}@${digest} is still served (${again.status})`);
            }
            break;
          }
          fail(`GET blob ${blob} of ${repo}:${tag}: ${b.status} ${b.body.toString().slice(0, 200)}`);
          break;
        }
        stats.pulls++;
      }
    };

    const operator = async () => {
      while (Date.now() < deadline) {
        await sleep(2000);
        const r = await timed('POST gc', adminRequest(d.admin, 'POST', '/admin/v1/gc'));
        if (r && r.status !== 200) fail(`POST /admin/v1/gc: ${r.status} ${r.body.toString().slice(0, 200)}`);
        else if (r) stats.gcRuns++;
        const s = await timed('GET status', adminRequest(d.admin, 'GET', '/admin/v1/status'));
        if (s && s.status !== 200) fail(`GET /admin/v1/status: ${s.status}`);
        // What the budget bounds is the disk. (The reported figure counts a commit in flight twice, as its
        // upload and as its blob, for the moment between the two.)
        const used = await budgetedBytes(d.dataDir);
        if (used > BUDGET) fail(`disk use ${used} passed the ${BUDGET} budget`);
      }
    };

    await Promise.all([...Array.from({ length: PUSHERS }, (_, n) => pusher(n)), ...Array.from({ length: PULLERS }, () => puller()), operator()]);
    agent.destroy();

    const during = await status(d.url);
    console.info(`[cache-storm] ${JSON.stringify(stats)} evictions=${JSON.stringify(during.evictions)} bytesUsed=${during.bytesUsed} budget=${BUDGET}`);
    expect(failures, failures.slice(0, 20).join('\n')).toEqual([]);
    expect(stats.pushes).toBeGreaterThan(50);
    expect(during.bytesUsed).toBeLessThanOrEqual(BUDGET);
    expect(stats.blobReads).toBeGreaterThan(50);
    expect(during.evictions.tags, 'eviction of references ran during the storm').toBeGreaterThan(0);
    expect(during.evictions.bytesReclaimed).toBeGreaterThan(BUDGET);

    // Quiet now. Past the grace window, one gc brings usage under the high watermark.
    await sleep((GRACE + 1) * 1000);
    await gc(d.url);
    const after = await status(d.url);
    expect(after.bytesUsed, 'usage after a quiet gc').toBeLessThanOrEqual(0.9 * BUDGET);
    await checkStore(d.dataDir, new RegistryClient(d.url));
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    await checkStore(d.dataDir, undefined, { expectEmptyTmp: true });
    expect(await listDir(join(d.dataDir, 'uploads'))).toEqual([]);
  });
});
