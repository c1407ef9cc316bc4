import type { BlobStore } from '../storage/blob-store.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import type { Recency } from './recency.js';

export interface ReferenceInfo {
  repo: string;
  /** Undefined for a manifest no tag points to. */
  tag?: string;
  digest: string;
  /** Bytes of every blob the reference keeps alive (manifest, configs, layers, child manifests), each once. */
  bytes: number;
  blobs: number;
  lastUsed: string;
}

/** Every blob a manifest keeps alive in its repository: itself, its configs and layers, its child manifests'. */
export function reachable(repos: RepositoryStore, repo: string, digest: string): Set<string> {
  const seen = new Set<string>();
  const walk = (d: string) => {
    if (seen.has(d)) return;
    seen.add(d);
    for (const r of repos.manifest(repo, d)?.references ?? []) walk(r);
  };
  walk(digest);
  return seen;
}

/** Manifests that are references of their own: no tag points to them and no index lists them. */
function* untaggedRoots(repos: RepositoryStore) {
  for (const [repo, m] of repos.allManifests()) if (!repos.isTagged(repo, m.digest) && !repos.hasParent(repo, m.digest)) yield [repo, m] as const;
}

/** How many references listReferences would list, without sizing them (for the metrics, at every scrape). */
export function countReferences(repos: RepositoryStore): number {
  let n = 0;
  for (const _ of repos.allTags()) n++;
  for (const _ of untaggedRoots(repos)) n++;
  return n;
}

/**
 * The cache references (repository:tag, and untagged manifests) with their size and last use: what `status`,
 * `du` and the admin API show operators.
 */
export function listReferences(repos: RepositoryStore, blobs: BlobStore, recency: Recency, repoPrefix?: string): ReferenceInfo[] {
  const out: ReferenceInfo[] = [];
  const inScope = (repo: string) => !repoPrefix || repo === repoPrefix || repo.startsWith(`${repoPrefix}/`);
  const reach = (repo: string, digest: string) => {
    const seen = reachable(repos, repo, digest);
    let bytes = 0;
    for (const d of seen) bytes += blobs.size(d) ?? 0;
    return { bytes, blobs: seen.size };
  };
  const iso = (s: number) => new Date(s * 1000).toISOString();
  for (const t of repos.allTags()) {
    if (!inScope(t.repo)) continue;
    out.push({ repo: t.repo, tag: t.tag, digest: t.digest, ...reach(t.repo, t.digest), lastUsed: iso(recency.tagUsed(t.repo, t.tag)) });
  }
  for (const [repo, m] of untaggedRoots(repos)) {
    if (!inScope(repo)) continue;
    out.push({ repo, digest: m.digest, ...reach(repo, m.digest), lastUsed: iso(recency.manifestUsed(repo, m.digest)) });
  }
  return out.sort((a, b) => b.bytes - a.bytes || a.repo.localeCompare(b.repo));
}
