/**
 * The eviction policy, as a pure function of a snapshot of the cache: what to remove, in which order, to free a
 * number of bytes. The evictor executes the plan and re-checks every step against the live store, so a plan made
 * a moment ago never removes something that became referenced or used since.
 */

export interface BlobInfo {
  size: number;
  lastUsed: number;
}

export interface ManifestInfo {
  repo: string;
  digest: string;
  references: readonly string[];
  lastUsed: number;
}

export interface TagInfo {
  repo: string;
  tag: string;
  digest: string;
  lastUsed: number;
}

/** Times are in seconds (see Recency). */
export interface CacheSnapshot {
  now: number;
  graceSeconds: number;
  blobs: ReadonlyMap<string, BlobInfo>;
  manifests: readonly ManifestInfo[];
  tags: readonly TagInfo[];
  /** Blobs that answered a HEAD or mount within the grace window: a push may be about to reference them. */
  isProtected(digest: string): boolean;
  /** With a tier below: whether the tier holds this blob, so its local copy may go while references keep it. */
  inTier?(digest: string): boolean;
}

/** Each step carries the last-use time it was planned with, so the evictor can skip anything used since. */
export type EvictionStep =
  | { kind: 'tag'; repo: string; tag: string; digest: string; lastUsed: number }
  | { kind: 'manifest'; repo: string; digest: string; lastUsed: number }
  | { kind: 'blob'; digest: string; size: number; lastUsed: number; reason: 'unreferenced' | 'released' | 'offloaded' };

/** Restricts a plan to old references, for `prune`: only tags and manifests last used before `before`, in
 *  repositories under `repoPrefix`; unreferenced blobs are only considered without a prefix. */
export interface PlanFilter {
  before?: number;
  repoPrefix?: string;
  /** Collect every unreferenced blob and untagged manifest past the grace window, whatever bytesToFree says. */
  allGarbage?: boolean;
}

export interface EvictionPlan {
  steps: EvictionStep[];
  bytes: number;
}

const key = (repo: string, digest: string) => `${repo}\u0000${digest}`;

/** The records and digests that dropping a manifest would release, computed without changing anything. */
interface Release {
  /** The manifest, then the same-repository children only it kept alive (depth first). */
  manifests: ManifestInfo[];
  /** Digests whose reference count would reach 0, in the order they would. */
  digests: string[];
  /** The reference and parent counts after the drop, for every key it touches. */
  refs: Map<string, number>;
  parents: Map<string, number>;
}

/**
 * Plans eviction in the order that costs least: unreferenced blobs past the grace window; then manifests no tag
 * points to any more (an overwritten `mode=max` cache) past the grace window; then whole cache references, least
 * recently used first. Every reference removal lists its tag, then the manifests only it kept alive, then the blobs
 * only those referenced — so a reader never finds a manifest whose blobs are gone. A blob referenced by a manifest
 * that stays is never planned.
 *
 * A reference is skipped (kept whole, and the next one tried) when a blob its removal would release is protected:
 * a push in progress just probed it, so its bytes could not be freed now, and removing the tag alone would lose
 * the cache while reclaiming almost nothing. A tag that shares its manifest with another tag releases no blob
 * itself and goes as before; the bytes stay live under the other tag.
 */
export function planEviction(s: CacheSnapshot, bytesToFree: number, filter: PlanFilter = {}): EvictionPlan {
  const steps: EvictionStep[] = [];
  let bytes = 0;
  const cutoff = s.now - s.graceSeconds;
  const refCutoff = Math.min(cutoff, filter.before ?? Infinity);
  const prefix = filter.repoPrefix;
  const inScope = (repo: string) => prefix === undefined || repo === prefix || repo.startsWith(`${prefix}/`);

  // Live reference counts: each manifest record references its own bytes and every descriptor it lists.
  const refs = new Map<string, number>();
  const bump = (d: string, by: number) => refs.set(d, (refs.get(d) ?? 0) + by);
  const records = new Map<string, ManifestInfo>();
  for (const m of s.manifests) {
    records.set(key(m.repo, m.digest), m);
    bump(m.digest, 1);
    for (const r of m.references) bump(r, 1);
  }
  const tagsOf = new Map<string, number>();
  for (const t of s.tags) tagsOf.set(key(t.repo, t.digest), (tagsOf.get(key(t.repo, t.digest)) ?? 0) + 1);
  // Same-repository parents (an index keeps its child manifests alive).
  const parents = new Map<string, number>();
  for (const m of s.manifests) for (const r of m.references) if (records.has(key(m.repo, r))) parents.set(key(m.repo, r), (parents.get(key(m.repo, r)) ?? 0) + 1);

  const planned = new Set<string>();
  const done = () => bytes >= bytesToFree;
  const garbageDone = () => done() && !filter.allGarbage;

  const releaseBlob = (digest: string, reason: 'unreferenced' | 'released') => {
    const b = s.blobs.get(digest);
    if (!b || planned.has(digest) || (refs.get(digest) ?? 0) > 0 || s.isProtected(digest)) return;
    planned.add(digest);
    steps.push({ kind: 'blob', digest, size: b.size, lastUsed: b.lastUsed, reason });
    bytes += b.size;
  };

  /** A dry walk of dropping `root`: its references lose one holder each; a same-repository child that loses its
   *  last parent and has no tag goes too. Counts are read through the walk's own overlay. */
  const release = (root: ManifestInfo): Release => {
    const r: Release = { manifests: [], digests: [], refs: new Map(), parents: new Map() };
    const visited = new Set<string>();
    const unref = (d: string) => {
      const left = (r.refs.get(d) ?? refs.get(d) ?? 0) - 1;
      r.refs.set(d, left);
      if (left === 0) r.digests.push(d);
    };
    const visit = (m: ManifestInfo) => {
      visited.add(key(m.repo, m.digest));
      r.manifests.push(m);
      unref(m.digest);
      for (const d of m.references) unref(d);
      for (const c of m.references) {
        const ck = key(m.repo, c);
        const child = records.get(ck);
        if (!child || visited.has(ck)) continue;
        const left = (r.parents.get(ck) ?? parents.get(ck) ?? 1) - 1;
        r.parents.set(ck, left);
        if (left <= 0 && (tagsOf.get(ck) ?? 0) === 0) visit(child);
      }
    };
    visit(root);
    return r;
  };

  /** Plans a walk's drops: its manifests, in order, then the blobs nothing references any more. */
  const commit = (r: Release) => {
    for (const [d, n] of r.refs) refs.set(d, n);
    for (const [k, n] of r.parents) parents.set(k, n);
    for (const m of r.manifests) {
      records.delete(key(m.repo, m.digest));
      steps.push({ kind: 'manifest', repo: m.repo, digest: m.digest, lastUsed: m.lastUsed });
    }
    for (const d of r.digests) releaseBlob(d, 'released');
  };

  // 1. Blobs no manifest references, untouched for the grace window (abandoned pushes, dropped caches).
  const orphans = prefix !== undefined ? [] : [...s.blobs].filter(([d, b]) => (refs.get(d) ?? 0) === 0 && b.lastUsed < cutoff);
  orphans.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
  for (const [d] of orphans) {
    if (garbageDone()) return { steps, bytes };
    releaseBlob(d, 'unreferenced');
  }

  // 2. Manifests that no tag and no parent index keep alive, past the grace window (overwritten cache tags).
  const untagged = s.manifests.filter(
    (m) =>
      inScope(m.repo) &&
      (tagsOf.get(key(m.repo, m.digest)) ?? 0) === 0 &&
      (parents.get(key(m.repo, m.digest)) ?? 0) === 0 &&
      m.lastUsed < refCutoff,
  );
  untagged.sort((a, b) => a.lastUsed - b.lastUsed);
  for (const m of untagged) {
    if (garbageDone()) return { steps, bytes };
    if (records.has(key(m.repo, m.digest))) commit(release(m));
  }

  // 3. With a tier: local copies of blobs the tier holds, least recently used first. Their references stay live
  // (a read comes back through the tier), so the budget bounds the disk, not the cache. Not for prune, which is
  // about references.
  if (s.inTier && filter.before === undefined && prefix === undefined) {
    const offload = [...s.blobs].filter(([d]) => !planned.has(d) && (refs.get(d) ?? 0) > 0 && !s.isProtected(d) && s.inTier!(d));
    offload.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [digest, b] of offload) {
      if (done()) return { steps, bytes };
      planned.add(digest);
      steps.push({ kind: 'blob', digest, size: b.size, lastUsed: b.lastUsed, reason: 'offloaded' });
      bytes += b.size;
    }
  }

  // 4. Whole cache references, least recently used first; those whose bytes are pinned stay whole.
  const tags = s.tags.filter((t) => inScope(t.repo) && t.lastUsed < (filter.before ?? Infinity));
  tags.sort((a, b) => a.lastUsed - b.lastUsed);
  for (const t of tags) {
    if (done()) break;
    const k = key(t.repo, t.digest);
    const m = records.get(k);
    const last = m !== undefined && (tagsOf.get(k) ?? 0) === 1 && (parents.get(k) ?? 0) === 0;
    const freed = last ? release(m) : undefined;
    if (freed?.digests.some((d) => s.blobs.has(d) && s.isProtected(d))) continue;
    steps.push({ kind: 'tag', repo: t.repo, tag: t.tag, digest: t.digest, lastUsed: t.lastUsed });
    tagsOf.set(k, (tagsOf.get(k) ?? 1) - 1);
    if (freed) commit(freed);
  }
  return { steps, bytes };
}
