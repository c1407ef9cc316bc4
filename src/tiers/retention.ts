import { growingLru } from '../core/growing-lru.js';
import PQueue from 'p-queue';
import { parseDigest } from '../core/digest.js';
import { OciError } from '../core/errors.js';
import type { Recency } from '../cache/recency.js';
import type { Logger } from '../observability/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ManifestRecordData, RepositoryStore } from '../storage/repository-store.js';
import { MAX_RECORD_BYTES, readAll } from './read-through.js';
import { planRetention, refKey, type BucketManifest, type BucketTag } from './retention-plan.js';
import { parseTierKey, tierKeys, type Tier } from './tier.js';
import type { WriteBack } from './write-back.js';

export const DAY_MS = 86_400_000;
/** Objects read at once while a sweep learns what tags point to and what records list. */
const READS_AT_ONCE = 8;

export interface RetentionReport {
  dryRun: boolean;
  /** Touch objects written (tags used here since the bucket last heard of them). */
  touched: number;
  /** Expired from the bucket. */
  tags: number;
  manifests: number;
  blobs: number;
  bytes: number;
  /** What this daemon still uses but the bucket had lost (expired elsewhere a moment before a use): sent again. */
  reuploaded: number;
  /** Local tags and manifests removed because the bucket's bound expired them (their blobs may be gone). */
  droppedLocally: number;
  ms: number;
}

/**
 * The bucket's own bound, run by the data directory's owner every `touchInterval`: it writes touch objects for the
 * tags used here, then expires from the bucket what no daemon used for `retentionDays` (see retention-plan.ts for
 * the rule), and brings this daemon's own view in line with the bucket — what another daemon expired is forgotten
 * (and dropped here too when unused here), what it expired while this daemon was using it is uploaded again.
 * Several daemons may sweep one bucket at once: every step is idempotent, and a tag is checked once more just
 * before it is removed.
 */
export class BucketRetention {
  private running: Promise<RetentionReport> | undefined;
  /** Tag objects read: key → what it held when it had this modification time. */
  private readonly targets = growingLru<string, { modified: number; target: string }>(200_000);
  /** Manifest records read (immutable under their key): what they list. */
  private readonly records = growingLru<string, readonly string[]>(100_000);

  constructor(
    private readonly tier: Tier,
    private readonly writeBack: WriteBack,
    private readonly blobs: BlobStore,
    private readonly repos: RepositoryStore,
    private readonly recency: Recency,
    private readonly retentionMs: number,
    private readonly log: Logger,
  ) {}

  /** One sweep (joined when one runs). A failed listing or read fails the sweep: nothing is expired on a partial view. */
  run(dryRun = false): Promise<RetentionReport> {
    if (!this.running) {
      this.running = this.sweep(dryRun).finally(() => (this.running = undefined));
    }
    return this.running;
  }

  private async sweep(dryRun: boolean): Promise<RetentionReport> {
    const started = Date.now();
    const t0 = performance.now();
    const cutoff = started - this.retentionMs;
    const held = this.writeBack.held();
    const heldBlobs = held.blobs;
    const heldManifests = new Set(held.manifests);
    const heldTags = new Map(held.tags);
    const report: RetentionReport = { dryRun, touched: 0, tags: 0, manifests: 0, blobs: 0, bytes: 0, reuploaded: 0, droppedLocally: 0, ms: 0 };

    const tagObjects: Array<{ repo: string; tag: string; key: string; modified: number }> = [];
    const touches = new Map<string, number>();
    const recordObjects: Array<{ repo: string; digest: string; key: string; modified: number }> = [];
    const blobObjects = new Map<string, { modified: number; size: number }>();
    for await (const o of this.tier.list('')) {
      const k = parseTierKey(o.key);
      if (k?.kind === 'blob') blobObjects.set(k.digest, { modified: o.modified, size: o.size });
      else if (k?.kind === 'manifest') recordObjects.push({ repo: k.repo, digest: k.digest, key: o.key, modified: o.modified });
      else if (k?.kind === 'tag') tagObjects.push({ repo: k.repo, tag: k.tag, key: o.key, modified: o.modified });
      else if (k?.kind === 'touch') touches.set(refKey(k.repo, k.tag), o.modified);
    }
    const reads = new PQueue({ concurrency: READS_AT_ONCE });
    const tags = (await reads.addAll(tagObjects.map((t) => () => this.tagTarget(t)))).filter((t): t is BucketTag => t !== undefined);
    const manifests = (await reads.addAll(recordObjects.map((m) => () => this.record(m)))).filter((m): m is BucketManifest => m !== undefined);

    const used = (seconds: number) => seconds * 1000;
    const localTags = [...this.repos.allTags()].map((t) => ({ repo: t.repo, tag: t.tag, target: t.digest, used: used(this.recency.tagUsed(t.repo, t.tag)) }));
    const localManifests = new Set<string>();
    const localDigests = new Set<string>();
    for (const [repo, m] of this.repos.allManifests()) {
      localDigests.add(m.digest);
      if (used(this.recency.manifestUsed(repo, m.digest)) >= cutoff) localManifests.add(refKey(repo, m.digest));
    }
    const plan = planRetention({
      cutoff,
      tags,
      touches,
      manifests,
      blobs: new Map([...blobObjects].map(([d, b]) => [d, b.modified])),
      localTags,
      localManifests,
      localReferences: (key) => {
        const [repo, digest] = key.split(' ') as [string, string];
        const rec = this.repos.manifest(repo, digest);
        return rec && [...rec.references];
      },
      pendingBlobs: this.writeBack.pendingBlobs(),
    });
    report.touched = plan.touch.length;
    report.tags = plan.tags.length;
    report.manifests = plan.manifests.length;
    report.blobs = plan.blobs.length;
    report.bytes = plan.blobs.reduce((n, d) => n + (blobObjects.get(d)?.size ?? 0), 0);
    if (dryRun) return this.done(report, t0);

    const stamp = Buffer.from(new Date(started).toISOString());
    for (const t of plan.touch) await this.tier.put(tierKeys.touch(t.repo, t.tag), () => stamp, stamp.length);
    for (const t of plan.tags) {
      if (!(await this.stillIdle(t, cutoff))) {
        report.tags--;
        continue;
      }
      await this.tier.delete(tierKeys.touch(t.repo, t.tag));
      await this.tier.delete(tierKeys.tag(t.repo, t.tag));
      await this.writeBack.forget({ kind: 'x', repo: t.repo, tag: t.tag });
      heldTags.delete(refKey(t.repo, t.tag));
      if (await this.dropLocalTag(t.repo, t.tag, cutoff)) report.droppedLocally++;
    }
    for (const key of plan.strayTouches) {
      const [repo, tag] = key.split(' ') as [string, string];
      await this.tier.delete(tierKeys.touch(repo, tag));
    }
    for (const m of plan.manifests) {
      await this.tier.delete(tierKeys.manifest(m.repo, parseDigest(m.digest)));
      await this.writeBack.forget({ kind: 'y', repo: m.repo, digest: m.digest });
      heldManifests.delete(refKey(m.repo, m.digest));
      if (await this.dropLocalManifest(m.repo, m.digest, localManifests)) report.droppedLocally++;
    }
    for (const digest of plan.blobs) {
      await this.tier.delete(tierKeys.blob(parseDigest(digest)));
      await this.writeBack.forget({ kind: 'z', digest });
    }

    // What the journal says the bucket holds but the listing did not show (and was not confirmed since it began):
    // removed by another daemon.
    const listedTags = new Set(tagObjects.map((t) => refKey(t.repo, t.tag)));
    for (const [key] of heldTags) {
      if (listedTags.has(key)) continue;
      const [repo, tag] = key.split(' ') as [string, string];
      const target = this.repos.resolveTag(repo, tag);
      if (target && used(this.recency.tagUsed(repo, tag)) >= cutoff) {
        await this.writeBack.reupload({ kind: 't', repo, tag });
        report.reuploaded++;
      } else {
        await this.writeBack.forget({ kind: 'x', repo, tag });
        if (await this.dropLocalTag(repo, tag, cutoff)) report.droppedLocally++;
      }
    }
    const listedRecords = new Set(recordObjects.map((m) => refKey(m.repo, m.digest)));
    for (const key of heldManifests) {
      if (listedRecords.has(key)) continue;
      const [repo, digest] = key.split(' ') as [string, string];
      if (this.repos.manifest(repo, digest) && (this.repos.isTagged(repo, digest) || localManifests.has(key))) {
        await this.writeBack.reupload({ kind: 'm', repo, digest });
        report.reuploaded++;
      } else {
        await this.writeBack.forget({ kind: 'y', repo, digest });
        if (await this.dropLocalManifest(repo, digest, localManifests)) report.droppedLocally++;
      }
    }
    const pending = this.writeBack.pendingBlobs();
    for (const digest of heldBlobs) {
      if (blobObjects.has(digest) || pending.has(digest) || held.confirmedSince(digest, started)) continue;
      const needed = this.repos.referenceCount(digest) > 0 || localDigests.has(digest);
      if (needed && (await this.blobs.locate(parseDigest(digest))) !== undefined) {
        await this.writeBack.reupload({ kind: 'b', digest });
        report.reuploaded++;
      } else {
        await this.writeBack.forget({ kind: 'z', digest });
      }
    }
    return this.done(report, t0);
  }

  private done(report: RetentionReport, t0: number): RetentionReport {
    report.ms = Math.round(performance.now() - t0);
    const { dryRun, ...counts } = report;
    this.log.info({ ...counts, ...(dryRun ? { dryRun } : {}) }, 'bucket retention sweep');
    return report;
  }

  private async tagTarget(t: { repo: string; tag: string; key: string; modified: number }): Promise<BucketTag | undefined> {
    const cached = this.targets.get(t.key);
    if (cached?.modified === t.modified) return { repo: t.repo, tag: t.tag, target: cached.target, modified: t.modified };
    const got = await this.tier.get(tierKeys.tag(t.repo, t.tag));
    if (!got) return undefined; // deleted since the listing
    const target = (await readAll(got.body, 1024)).toString('utf8').trim();
    this.targets.set(t.key, { modified: t.modified, target });
    return { repo: t.repo, tag: t.tag, target, modified: t.modified };
  }

  private async record(m: { repo: string; digest: string; key: string; modified: number }): Promise<BucketManifest | undefined> {
    let references = this.records.get(m.key);
    if (!references) {
      const local = this.repos.manifest(m.repo, m.digest);
      if (local) references = [...local.references];
      else {
        const got = await this.tier.get(tierKeys.manifest(m.repo, parseDigest(m.digest)));
        if (!got) return undefined;
        const data = JSON.parse((await readAll(got.body, MAX_RECORD_BYTES)).toString('utf8')) as Partial<ManifestRecordData>;
        references = Array.isArray(data.references) ? data.references.filter((r) => typeof r === 'string') : [];
      }
      this.records.set(m.key, references);
    }
    return { repo: m.repo, digest: m.digest, references, modified: m.modified };
  }

  /** Just before a tag goes: its objects are looked at once more, since another daemon may have used it. */
  private async stillIdle(t: BucketTag, cutoff: number): Promise<boolean> {
    let latest = 0;
    for await (const o of this.tier.list(`repositories/${t.repo}/_t`)) {
      const k = parseTierKey(o.key);
      if ((k?.kind === 'tag' || k?.kind === 'touch') && k.repo === t.repo && k.tag === t.tag) latest = Math.max(latest, o.modified);
    }
    return latest < cutoff;
  }

  /** A tag the bucket no longer has is removed here too, unless it was used here since the cutoff. */
  private async dropLocalTag(repo: string, tag: string, cutoff: number): Promise<boolean> {
    const target = this.repos.resolveTag(repo, tag);
    if (!target || this.recency.tagUsed(repo, tag) * 1000 >= cutoff) return false;
    return this.repos.deleteTagIf(repo, tag, target);
  }

  /** A manifest record the bucket no longer has goes here too when nothing here still uses it: its blobs may only
   *  have been in the bucket. */
  private async dropLocalManifest(repo: string, digest: string, usedHere: Set<string>): Promise<boolean> {
    if (!this.repos.manifest(repo, digest) || this.repos.isTagged(repo, digest) || usedHere.has(refKey(repo, digest)) || this.repos.hasParent(repo, digest)) return false;
    try {
      await this.repos.deleteManifest(repo, digest, undefined, true);
      return true;
    } catch (e) {
      if (e instanceof OciError && e.code === 'MANIFEST_UNKNOWN') return false; // gone meanwhile
      throw e;
    }
  }
}
