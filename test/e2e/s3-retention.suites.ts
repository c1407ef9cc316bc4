/**
 * Issue 10, the bucket's own bound, end to end: real daemons (one of them with `--workers 2`) on one bucket (s3rver
 * in s3-retention.test.ts, Ceph radosgw in s3-radosgw.test.ts) with a retention of a few seconds. Last use is shared through touch objects, so a reference pulled on one daemon
 * survives another's sweep; what nobody used expires from the bucket (tags, then manifests, then blobs no live
 * manifest lists) and from the daemons that held it; a reference expired under a daemon still using it is put back.
 * Also: a client's blob DELETE reaches the bucket.
 */
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { writeFileSync } from 'node:fs';
import { cleanup, servingPids, sleep } from '../helpers/daemon.js';
import { sha256 } from '../helpers/registry-client.js';
import { KiB, admin, manifestStatus, pullRef, pushRef, putBlob, randomLayers, type CacheDaemon, type PushedRef } from '../helpers/cache-helpers.js';
import { drained, expectInBucket, hex, startTierDaemon } from '../helpers/tier-daemon.js';
import type { S3Server } from '../helpers/s3.js';


interface RetentionJson {
  dryRun: boolean;
  touched: number;
  tags: number;
  manifests: number;
  blobs: number;
  bytes: number;
  reuploaded: number;
  droppedLocally: number;
}

const RETENTION_S = 5;
/** Sweeps run only when a test asks (the interval is far beyond a test's length). */
const s3Yaml = `    retentionDays: ${RETENTION_S / 86_400}\n    touchInterval: 1h\n`;
const sweep = (d: CacheDaemon, dryRun = false) => admin<RetentionJson>(d.url, 'POST', `/admin/v1/tier/retention${dryRun ? '?dryRun=1' : ''}`);

async function bucketHas(s3: S3Server, digest: string): Promise<boolean> {
  return (await s3.getObject(`bc/blobs/sha256/${hex(digest)}`)) !== undefined;
}

/** The bucket bound's suites, on whichever store `startStore` gives each test (its own bucket, empty). */
export function retentionSuites(startStore: () => Promise<S3Server>): void {
  afterEach(async () => {
    await cleanup();
  });

  describe('the bucket bound (retentionDays, touch objects) across daemons', () => {
    it('what no daemon used expires everywhere; a reference pulled on another daemon stays; one expired under a daemon still using it comes back', async () => {
      const s3 = await startStore();
      const a = await startTierDaemon(s3, { workers: 2, s3Yaml });
      const b = await startTierDaemon(s3, { workers: 1, s3Yaml });
      onTestFailed(() => writeFileSync('/tmp/s3-retention.log', `A\n${a.logs()}${a.stderr()}\nB\n${b.logs()}${b.stderr()}`));
      const shared = randomLayers([96 * KiB])[0]!;
      const old = await pushRef(a.client, 'ret/app', 'old', [shared, ...randomLayers([64 * KiB])]);
      const hot = await pushRef(a.client, 'ret/app', 'hot', [shared, ...randomLayers([80 * KiB])]);
      const busy = await pushRef(a.client, 'ret/app', 'busy', randomLayers([72 * KiB]));
      await drained(a);
      for (const ref of [old, hot, busy]) await expectInBucket(s3, ref);

      await sleep((RETENTION_S + 1.5) * 1000);
      // Past the bound. `hot` is used on B (read through from the bucket), `busy` on A — which has not swept yet.
      expect((await pullRef(b.client, 'ret/app', 'hot')).status).toBe('ok');
      expect((await pullRef(a.client, 'ret/app', 'busy')).status).toBe('ok');
      expect((await pullRef(a.client, 'ret/app', 'busy')).status).toBe('ok');
      expect((await servingPids(a, 'ret/app')).size).toBe(2);
      await sleep(300); // the workers' usage signals reach A's primary

      // A dry run counts and changes nothing.
      const dry = await sweep(b, true);
      expect(dry).toMatchObject({ dryRun: true, touched: 1, tags: 2, manifests: 2 });
      await expectInBucket(s3, old);

      // B's sweep: touches `hot`, expires `old` and `busy` (B knows nothing of A's pulls), their records and the
      // blobs only they listed; the layer `old` shares with `hot` stays.
      const exclusive = (ref: PushedRef) => [...ref.blobs.keys(), ref.digest].filter((d) => d !== sha256(shared));
      const byB = await sweep(b);
      expect(byB).toMatchObject({ dryRun: false, touched: 1, tags: 2, manifests: 2, blobs: exclusive(old).length + exclusive(busy).length });
      expect(await s3.getObject('bc/repositories/ret/app/_touched/hot')).toBeDefined();
      expect(await s3.getObject('bc/repositories/ret/app/_tags/old')).toBeUndefined();
      expect(await s3.getObject(`bc/repositories/ret/app/_manifests/sha256/${hex(old.digest)}.json`)).toBeUndefined();
      for (const d of exclusive(old)) expect(await bucketHas(s3, d), `blob ${d} of old`).toBe(false);
      await expectInBucket(s3, hot);

      // A's sweep: `hot` is live through B's touch; `old`, unused here too, goes from A's disk; `busy`, pulled here a
      // moment ago, is uploaded again, blobs first.
      const byA = await sweep(a);
      expect(byA.tags).toBe(0);
      expect(byA.droppedLocally).toBeGreaterThanOrEqual(1);
      expect(byA.reuploaded).toBeGreaterThanOrEqual(1 + exclusive(busy).length);
      await drained(a);
      await expectInBucket(s3, busy);
      await expectInBucket(s3, hot);
      expect(await manifestStatus(a.client, 'ret/app', 'old')).toBe(404);
      expect((await pullRef(a.client, 'ret/app', 'hot')).status).toBe('ok');

      // A third daemon on the bucket sees exactly that: hot and busy whole, old gone.
      const c = await startTierDaemon(s3, { workers: 1, s3Yaml });
      for (const ref of [hot, busy]) {
        const pulled = await pullRef(c.client, 'ret/app', ref.tag);
        expect(pulled.status).toBe('ok');
        expect(pulled.digest).toBe(ref.digest);
      }
      expect(await manifestStatus(c.client, 'ret/app', 'old')).toBe(404);
    }, 90_000);

    it("a client's blob DELETE reaches the bucket; a push of the same bytes afterwards lands there again", async () => {
      const s3 = await startStore();
      const a = await startTierDaemon(s3, { workers: 2, s3Yaml: '    retentionDays: 0\n' });
      const data = randomLayers([50 * KiB])[0]!;
      const d = sha256(data);
      await putBlob(a.client, 'del/app', data);
      await drained(a);
      expect((await s3.getObject(`bc/blobs/sha256/${hex(d)}`))?.equals(data)).toBe(true);
      expect((await a.client.req('DELETE', `/v2/del/app/blobs/${d}`)).status).toBe(202);
      await drained(a);
      expect(await s3.getObject(`bc/blobs/sha256/${hex(d)}`)).toBeUndefined();
      expect((await a.client.req('HEAD', `/v2/del/app/blobs/${d}`)).status).toBe(404);
      // Without a bound, the admin call says so.
      await expect(sweep(a)).rejects.toThrow(/405|retentionDays/);
      await putBlob(a.client, 'del/app', data);
      await drained(a);
      expect((await s3.getObject(`bc/blobs/sha256/${hex(d)}`))?.equals(data)).toBe(true);
    }, 60_000);
  });
}
