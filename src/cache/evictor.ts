import type { Logger } from '../observability/logger.js';
import { parseDigest } from '../core/digest.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import type { UploadStore } from '../storage/upload-store.js';
import type { WriteLedger } from './write-ledger.js';
import { planEviction, type BlobInfo, type EvictionStep, type PlanFilter } from './policy.js';
import { nowSeconds } from './clock.js';
import type { Recency } from './recency.js';
import { DirSyncs } from '../storage/fs-util.js';

/** Steps per batch: large enough to share fsyncs, small enough that the first space frees quickly. */
const BATCH = 64;

export interface Budget {
  /** Bytes the store may use; undefined means unbounded (only disk-full and explicit runs evict). */
  maxBytes: number | undefined;
  high: number;
  low: number;
  graceSeconds: number;
}

export interface Usage {
  blobBytes: number;
  uploadBytes: number;
  total: number;
}

export interface EvictionReport {
  dryRun: boolean;
  reason: string;
  requestedBytes: number;
  reclaimedBytes: number;
  removed: { uploads: number; tags: number; manifests: number; blobs: number };
  /** Steps planned but skipped because the item was used or re-referenced after planning. */
  skipped: number;
  steps: EvictionStep[];
}

const RECENT_RUNS = 10;

export interface RecentRun {
  at: string;
  reason: string;
  reclaimedBytes: number;
  removed: EvictionReport['removed'];
}

export interface EvictionTotals {
  runs: number;
  tags: number;
  manifests: number;
  blobs: number;
  uploads: number;
  bytesReclaimed: number;
  lastRun?: { at: string; reason: string; reclaimedBytes: number };
}

/**
 * Keeps the store under its budget: whenever usage crosses the high watermark (checked after writes, on a timer
 * and at start) it evicts down to the low one, one run at a time. Plans come from the pure policy; each step is
 * re-checked against the live stores right before it runs, so whatever was used, tagged or referenced since the
 * plan was made is left alone.
 */
export class Evictor {
  readonly totals: EvictionTotals = { runs: 0, tags: 0, manifests: 0, blobs: 0, uploads: 0, bytesReclaimed: 0 };
  /** The last runs that removed something, newest first (the status page's "recent evictions"). */
  readonly recentRuns: RecentRun[] = [];
  private running: Promise<unknown> | undefined;
  private lastCheck = 0;
  private pendingCheck: NodeJS.Timeout | undefined;

  constructor(
    private readonly blobs: BlobStore,
    private readonly uploads: UploadStore,
    private readonly ledger: WriteLedger,
    private readonly repos: RepositoryStore,
    private readonly recency: Recency,
    readonly budget: Budget,
    private readonly log: Logger,
    /** With a tier below: whether it holds a blob (uploaded and confirmed), so the local copy may go. */
    private readonly inTier?: (digest: string) => boolean,
  ) {}

  /** From the write ledger's running totals: no scan of the upload sessions. */
  usage(): Usage {
    const blobBytes = this.blobs.bytes;
    const total = this.ledger.usage();
    return { blobBytes, uploadBytes: total - blobBytes, total };
  }

  /** Cheap enough to call after every write: at most one usage check per second (a check asked for meanwhile
   *  runs when the second is up), eviction in the background. */
  check(): void {
    if (this.budget.maxBytes === undefined || this.pendingCheck) return;
    const wait = Math.max(0, this.lastCheck + 1000 - Date.now());
    this.pendingCheck = setTimeout(() => {
      this.pendingCheck = undefined;
      this.lastCheck = Date.now();
      void this.evictIfOver('high watermark').catch((err: unknown) => this.log.error({ err }, 'eviction failed'));
    }, wait);
    this.pendingCheck.unref();
  }

  /** Bytes to free to get back to the low watermark, or 0 while usage is not above the high one. */
  excess(): number {
    const max = this.budget.maxBytes;
    if (max === undefined) return 0;
    const { total } = this.usage();
    return total > max * this.budget.high ? total - Math.floor(max * this.budget.low) : 0;
  }

  async evictIfOver(reason: string): Promise<EvictionReport | undefined> {
    const targetBytes = this.excess();
    return targetBytes > 0 ? this.run({ targetBytes, reason }) : undefined;
  }

  /** A write failed for lack of space: free at least a slice of the store, whatever the budget says. */
  onDiskFull(): void {
    if (this.running) return;
    void (async () => {
      const { total } = this.usage();
      const max = this.budget.maxBytes ?? total;
      const target = Math.max(total - Math.floor(max * this.budget.low), Math.ceil(total * 0.05));
      await this.run({ targetBytes: target, reason: 'disk full' });
    })().catch((err: unknown) => this.log.error({ err }, 'eviction after disk full failed'));
  }

  /** Removes the upload sessions past their age or idle limit (as of `now`). */
  async expireUploads(now = Date.now()): Promise<number> {
    return this.uploads.expire(this.ledger.expired(now));
  }

  /** Room for a write of `bytes` that does not fit the budget now: evicts down to the low watermark after it. */
  async makeRoom(bytes: number): Promise<void> {
    const max = this.budget.maxBytes;
    if (max === undefined) return;
    const targetBytes = this.usage().total + bytes - Math.floor(max * this.budget.low);
    if (targetBytes > 0) await this.run({ targetBytes, reason: 'room for a write' });
  }

  /** One run at a time: a request while one is in progress waits for it, then runs its own. */
  run(opts: { targetBytes: number; reason: string; dryRun?: boolean; filter?: PlanFilter }): Promise<EvictionReport> {
    return this.exclusive(() => this.execute(opts));
  }

  /** Runs `fn` in the slot of an eviction run: after the current run, and no run starts until `fn` is done
   *  (verify's repairs, which remove things too). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running) await this.running.catch(() => undefined);
    const p = fn();
    this.running = p;
    try {
      return await p;
    } finally {
      this.running = undefined;
    }
  }

  private async execute(opts: { targetBytes: number; reason: string; dryRun?: boolean; filter?: PlanFilter }): Promise<EvictionReport> {
    const started = performance.now();
    const dryRun = opts.dryRun ?? false;
    const uploads = dryRun ? 0 : await this.expireUploads();
    const now = nowSeconds();
    const plan = planEviction(this.snapshot(now), opts.targetBytes, opts.filter);
    const report: EvictionReport = {
      dryRun,
      reason: opts.reason,
      requestedBytes: opts.targetBytes,
      reclaimedBytes: dryRun ? plan.bytes : 0,
      removed: { uploads, tags: 0, manifests: 0, blobs: 0 },
      skipped: 0,
      steps: plan.steps,
    };
    if (!dryRun) {
      // Steps run in batches, kind by kind: the batch's tags, then (once those removals are durable) its
      // manifests, then its blobs — the plan's order where it matters, with one fsync per directory per kind (blob
      // unlinks need none: see BlobStore.delete).
      for (let i = 0; i < plan.steps.length; i += BATCH) {
        const batch = plan.steps.slice(i, i + BATCH);
        for (const kind of ['tag', 'manifest', 'blob'] as const) {
          const syncs = new DirSyncs();
          // Steps of one kind are independent (each re-check is synchronous, before its first await), so their
          // unlinks run concurrently.
          const applied = await Promise.all(batch.filter((s) => s.kind === kind).map(async (step) => [step, await this.apply(step, syncs)] as const));
          for (const [step, ok] of applied) {
            if (!ok) {
              report.skipped++;
              continue;
            }
            report.removed[`${step.kind}s`]++;
            if (step.kind === 'blob') report.reclaimedBytes += step.size;
          }
          await syncs.flush();
        }
      }
      this.totals.runs++;
      this.totals.uploads += uploads;
      this.totals.tags += report.removed.tags;
      this.totals.manifests += report.removed.manifests;
      this.totals.blobs += report.removed.blobs;
      this.totals.bytesReclaimed += report.reclaimedBytes;
      this.totals.lastRun = { at: new Date().toISOString(), reason: opts.reason, reclaimedBytes: report.reclaimedBytes };
      if (report.reclaimedBytes > 0 || uploads > 0) {
        this.recentRuns.unshift({ ...this.totals.lastRun, removed: { ...report.removed } });
        this.recentRuns.length = Math.min(this.recentRuns.length, RECENT_RUNS);
      }
    }
    const { steps: _steps, ...summary } = report;
    const ms = Math.round(performance.now() - started);
    this.log.info({ ...summary, planned: plan.steps.length, ms }, dryRun ? 'eviction planned (dry run)' : 'eviction finished');
    return report;
  }

  private snapshot(now: number) {
    const blobs = new Map<string, BlobInfo>();
    // A blob with no recorded use was committed a moment ago (its use is on its way): it counts as used now.
    for (const [d, size, used] of this.blobs.entries()) blobs.set(d, { size, lastUsed: used || now });
    const manifests = [...this.repos.allManifests()].map(([repo, m]) => ({
      repo,
      digest: m.digest,
      references: [...m.references],
      lastUsed: this.recency.manifestUsed(repo, m.digest),
    }));
    const tags = [...this.repos.allTags()].map((t) => ({ ...t, lastUsed: this.recency.tagUsed(t.repo, t.tag) }));
    return { now, graceSeconds: this.budget.graceSeconds, blobs, manifests, tags, isProtected: (d: string) => this.recency.isProtected(d, now), ...(this.inTier ? { inTier: this.inTier } : {}) };
  }

  /** Runs one step if it still holds; false when it no longer does (used, re-tagged or re-referenced since). */
  private async apply(step: EvictionStep, syncs: DirSyncs): Promise<boolean> {
    switch (step.kind) {
      case 'tag':
        if (this.repos.resolveTag(step.repo, step.tag) !== step.digest) return false;
        if (this.recency.tagUsed(step.repo, step.tag) !== step.lastUsed) return false;
        // Another worker may have re-pointed the tag since (its event on the way): only the planned target goes.
        if (!(await this.repos.deleteTagIf(step.repo, step.tag, step.digest, syncs))) return false;
        this.recency.forgetTag(step.repo, step.tag);
        return true;
      case 'manifest':
        if (!this.repos.manifest(step.repo, step.digest)) return false;
        if (this.repos.isTagged(step.repo, step.digest) || this.repos.hasParent(step.repo, step.digest)) return false;
        if (this.recency.manifestUsed(step.repo, step.digest) !== step.lastUsed) return false;
        await this.repos.deleteManifest(step.repo, step.digest, syncs, true);
        this.recency.forgetManifest(step.repo, step.digest);
        return true;
      case 'blob':
        if (this.recency.isProtected(step.digest)) return false;
        // Offloading needs the tier's copy; anything else needs no manifest to reference the blob.
        if (step.reason === 'offloaded' ? !this.inTier?.(step.digest) : this.repos.referenceCount(step.digest) > 0) return false;
        if ((this.recency.blobUsed(step.digest) ?? -1) !== step.lastUsed) return false;
        if (!(await this.blobs.delete(parseDigest(step.digest), { eviction: true }))) return false;
        this.recency.forgetBlob(step.digest);
        return true;
    }
  }
}
