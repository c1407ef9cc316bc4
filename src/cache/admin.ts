import { OciError } from '../core/errors.js';
import { nowSeconds } from './clock.js';
import type { EvictionReport, Evictor, RecentRun } from './evictor.js';
import { listReferences, type ReferenceInfo } from './inventory.js';
import type { Recency } from './recency.js';
import type { ReferenceStats } from './reference-stats.js';
import type { HitHistory, HitSeries } from './hit-history.js';
import { referenceReports, type ReferenceReport } from './reference-report.js';
import { verifyStore, type VerifyReport } from './verify.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { Layout } from '../storage/layout.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import type { TierStats } from '../tiers/write-back.js';
import type { RetentionReport } from '../tiers/retention.js';

export interface Status {
  bytesUsed: number;
  blobBytes: number;
  uploadBytes: number;
  budgetBytes: number | null;
  highWatermark: number;
  lowWatermark: number;
  pushGraceSeconds: number;
  blobCount: number;
  references: ReferenceInfo[];
  evictions: Evictor['totals'];
  /** Missing tags answered by a fallback rule since start, by repository. */
  fallbacks: Record<string, number>;
  recentEvictions: RecentRun[];
  /** Cache lookups (blob HEAD/GET, manifest GET/HEAD) found or not, per minute over the last day. */
  hitRate: HitSeries;
  /** With a tier below the local disk: its upload backlog, totals and last error. */
  tier?: TierStats & { degraded: boolean };
}

/** The admin operations, served in-process or (from a worker process) forwarded to the store's owner. */
export interface AdminApi {
  status(): Promise<Status>;
  du(repoPrefix?: string): Promise<ReferenceInfo[]>;
  gc(dryRun: boolean): Promise<EvictionReport>;
  prune(olderThanMs: number, repoPrefix: string | undefined, dryRun: boolean): Promise<EvictionReport>;
  verify(repair: boolean): Promise<VerifyReport>;
  /** The references with their own/shared bytes and analytics (pushes, imports, saved uploads, warnings). */
  references(repoPrefix?: string): Promise<ReferenceReport[]>;
  /** One sweep of the S3 tier's own bound now (it also runs every tier.s3.touchInterval). */
  tierRetention(dryRun: boolean): Promise<RetentionReport>;
}

/** `--repo org/` (as one writes a prefix) means `org`: prefixes match whole path components. */
const normalisePrefix = (prefix: string | undefined) => prefix?.replace(/\/+$/, '') || undefined;

/**
 * The operator's view and levers — status, du, gc, prune, verify — over one opened store. The daemon serves it on
 * /admin/v1; the CLI calls the daemon when one runs, or opens the store itself when none does.
 */
export class Admin implements AdminApi {
  constructor(
    private readonly layout: Layout,
    private readonly blobs: BlobStore,
    private readonly repos: RepositoryStore,
    private readonly recency: Recency,
    private readonly evictor: Evictor,
    private readonly stats: ReferenceStats,
    private readonly hits: HitHistory,
    private readonly fallbacks: ReadonlyMap<string, number> = new Map(),
    private readonly tier?: {
      status(): TierStats;
      degraded(): boolean;
      present(digest: string): Promise<boolean>;
      retention?: (dryRun: boolean) => Promise<RetentionReport>;
    },
  ) {}

  async tierRetention(dryRun: boolean): Promise<RetentionReport> {
    if (!this.tier?.retention) throw new OciError('UNSUPPORTED', 'no bucket bound to run: configure tier.s3 with retentionDays above 0');
    return this.tier.retention(dryRun);
  }

  async status(): Promise<Status> {
    const usage = this.evictor.usage();
    const b = this.evictor.budget;
    return {
      bytesUsed: usage.total,
      blobBytes: usage.blobBytes,
      uploadBytes: usage.uploadBytes,
      budgetBytes: b.maxBytes ?? null,
      highWatermark: b.high,
      lowWatermark: b.low,
      pushGraceSeconds: b.graceSeconds,
      blobCount: this.blobs.count,
      references: await this.du(),
      evictions: this.evictor.totals,
      fallbacks: Object.fromEntries([...this.fallbacks].sort(([a], [b]) => (a < b ? -1 : 1))),
      recentEvictions: this.evictor.recentRuns,
      hitRate: this.hits.series(),
      ...(this.tier ? { tier: { ...this.tier.status(), degraded: this.tier.degraded() } } : {}),
    };
  }

  async du(repoPrefix?: string): Promise<ReferenceInfo[]> {
    return listReferences(this.repos, this.blobs, this.recency, normalisePrefix(repoPrefix));
  }

  async references(repoPrefix?: string): Promise<ReferenceReport[]> {
    return referenceReports(this.repos, this.blobs, this.recency, this.stats, nowSeconds(), normalisePrefix(repoPrefix));
  }

  /** Collects garbage now (unreferenced blobs, untagged manifests past the grace window), and evicts down to the
   *  low watermark if usage is above the high one. */
  async gc(dryRun: boolean): Promise<EvictionReport> {
    const targetBytes = this.evictor.excess();
    return this.evictor.run({ targetBytes, reason: 'gc', dryRun, filter: { allGarbage: true } });
  }

  /** Removes references (and what only they keep) not used for `olderThanMs`, optionally under a repo prefix. */
  prune(olderThanMs: number, repoPrefix: string | undefined, dryRun: boolean): Promise<EvictionReport> {
    const before = nowSeconds() - Math.floor(olderThanMs / 1000);
    return this.evictor.run({ targetBytes: Infinity, reason: 'prune', dryRun, filter: { before, repoPrefix: normalisePrefix(repoPrefix) } });
  }

  /** Re-hashes every blob and checks every manifest and tag; with `repair`, removes or quarantines what is wrong. */
  verify(repair: boolean): Promise<VerifyReport> {
    return verifyStore(this.layout, this.blobs, this.repos, this.recency, this.evictor, repair, this.tier && ((d) => this.tier!.present(d)));
  }
}
