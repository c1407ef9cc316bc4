import type { BlobStore } from '../storage/blob-store.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import { listReferences, reachable, type ReferenceInfo } from './inventory.js';
import type { Recency } from './recency.js';
import { emptyCounters, hitRate, referenceWarnings, type ReferenceCounters, type ReferenceStats, type ReferenceWarning } from './reference-stats.js';

/** A cache reference with its size split and its analytics: what `du` and GET /admin/v1/references show. */
export interface ReferenceReport extends ReferenceInfo, Omit<ReferenceCounters, 'lastPush' | 'lastImport'> {
  /** Bytes of blobs no other reference (in any repository) keeps alive: what removing it alone would free. */
  ownBytes: number;
  /** Bytes of blobs it shares with other references. */
  sharedBytes: number;
  lastPush?: string;
  lastImport?: string;
  /** uploadsSkipped / (uploadsSkipped + uploaded): how much of its exports the cache already had. */
  hitRate: number | null;
  warnings: ReferenceWarning[];
}

const iso = (s: number | undefined) => (s === undefined ? undefined : new Date(s * 1000).toISOString());

/** Every reference (under `repoPrefix`) with its own/shared bytes and, for tags, the analytics recorded. */
export function referenceReports(
  repos: RepositoryStore,
  blobs: BlobStore,
  recency: Recency,
  stats: ReferenceStats,
  now: number,
  repoPrefix?: string,
): ReferenceReport[] {
  const all = listReferences(repos, blobs, recency);
  const reach = all.map((r) => reachable(repos, r.repo, r.digest));
  const holders = new Map<string, number>();
  for (const set of reach) for (const d of set) holders.set(d, (holders.get(d) ?? 0) + 1);
  const inScope = (repo: string) => !repoPrefix || repo === repoPrefix || repo.startsWith(`${repoPrefix}/`);
  const out: ReferenceReport[] = [];
  all.forEach((info, i) => {
    if (!inScope(info.repo)) return;
    let ownBytes = 0;
    for (const d of reach[i]!) if (holders.get(d) === 1) ownBytes += blobs.size(d) ?? 0;
    const c = (info.tag !== undefined && stats.get(info.repo, info.tag)) || undefined;
    const { lastPush, lastImport, ...counters } = c ?? emptyCounters();
    const push = iso(lastPush);
    const pull = iso(lastImport);
    out.push({
      ...info,
      ownBytes,
      sharedBytes: info.bytes - ownBytes,
      ...counters,
      ...(push ? { lastPush: push } : {}),
      ...(pull ? { lastImport: pull } : {}),
      hitRate: c ? hitRate(c) : null,
      warnings: c ? referenceWarnings(c, now) : [],
    });
  });
  return out;
}
