/**
 * The bucket's own bound, as a pure decision: given what a listing of the bucket showed and what this daemon knows
 * locally, which references are touched and what expires. Last use is by reference (repo:tag) and shared between
 * daemons through the bucket: a tag's last use is the latest of its own upload, its touch object (written by any
 * daemon that used it) and this daemon's own record. What expires follows local eviction's order: tags idle past
 * the cutoff, then manifests no live tag (or live index) reaches and not written since the cutoff, then blobs no
 * live manifest lists and not written since the cutoff.
 */

export interface BucketTag {
  repo: string;
  tag: string;
  /** The digest the tag object holds. */
  target: string;
  modified: number;
}

export interface BucketManifest {
  repo: string;
  digest: string;
  references: readonly string[];
  modified: number;
}

export interface RetentionInput {
  /** Milliseconds: what was last used (or written) before this expires. */
  cutoff: number;
  tags: BucketTag[];
  /** `repo tag` → when its touch object was last written. */
  touches: Map<string, number>;
  manifests: BucketManifest[];
  /** Blob digest → when it was written. */
  blobs: Map<string, number>;
  /** This daemon's tags, with their last use here (ms) and the digest they point to locally. */
  localTags: Array<{ repo: string; tag: string; target: string; used: number }>;
  /** This daemon's manifests used here since the cutoff (a pull by digest): `repo digest`. */
  localManifests: Set<string>;
  /** What a manifest of this daemon lists (`repo digest`), for roots the bucket has no record of yet. */
  localReferences: (key: string) => readonly string[] | undefined;
  /** Blobs this daemon still has to upload: never expired under it. */
  pendingBlobs: Set<string>;
}

export interface RetentionPlan {
  /** Tags used here since their last touch in the bucket: their touch objects are written again. */
  touch: Array<{ repo: string; tag: string }>;
  tags: BucketTag[];
  manifests: BucketManifest[];
  blobs: string[];
  /** Touch objects whose tag is gone and that are past the cutoff themselves. */
  strayTouches: string[];
}

export const refKey = (repo: string, name: string) => `${repo} ${name}`;

export function planRetention(input: RetentionInput): RetentionPlan {
  const { cutoff } = input;
  const local = new Map(input.localTags.map((t) => [refKey(t.repo, t.tag), t]));
  const lastUse = (t: BucketTag) => Math.max(t.modified, input.touches.get(refKey(t.repo, t.tag)) ?? 0, local.get(refKey(t.repo, t.tag))?.used ?? 0);

  const touch: RetentionPlan['touch'] = [];
  const expiredTags: BucketTag[] = [];
  // Roots: every manifest a live tag names, in the bucket or here (a local tag not uploaded yet counts).
  const live = new Set<string>();
  const inBucket = new Set<string>();
  for (const t of input.tags) {
    const key = refKey(t.repo, t.tag);
    inBucket.add(key);
    const mine = local.get(key);
    const shared = Math.max(t.modified, input.touches.get(key) ?? 0);
    if (mine && mine.used > shared && mine.used >= cutoff) touch.push({ repo: t.repo, tag: t.tag });
    if (lastUse(t) < cutoff) expiredTags.push(t);
    else live.add(refKey(t.repo, t.target));
  }
  for (const t of input.localTags) if (t.used >= cutoff || !inBucket.has(refKey(t.repo, t.tag))) live.add(refKey(t.repo, t.target));
  for (const m of input.localManifests) live.add(m);

  // Reachability within a repository (an index lists its child manifests), from the roots and from every
  // manifest written since the cutoff (a push by digest, or one whose tag is on its way).
  const byKey = new Map(input.manifests.map((m) => [refKey(m.repo, m.digest), m]));
  const stack = [...live];
  for (const m of input.manifests) if (m.modified >= cutoff) stack.push(refKey(m.repo, m.digest));
  const reached = new Set<string>();
  while (stack.length > 0) {
    const key = stack.pop()!;
    if (reached.has(key)) continue;
    reached.add(key);
    const m = byKey.get(key);
    if (m) for (const r of m.references) if (byKey.has(refKey(m.repo, r))) stack.push(refKey(m.repo, r));
  }
  const neededBlobs = new Set(input.pendingBlobs);
  const expiredManifests: BucketManifest[] = [];
  for (const m of input.manifests) {
    if (reached.has(refKey(m.repo, m.digest))) {
      // A manifest's own bytes are a blob too.
      neededBlobs.add(m.digest);
      for (const r of m.references) neededBlobs.add(r);
    } else {
      expiredManifests.push(m);
    }
  }
  // A root the bucket has no record of (a local manifest on its way): its blobs are needed all the same.
  for (const key of live) {
    if (byKey.has(key)) continue;
    neededBlobs.add(key.slice(key.indexOf(' ') + 1));
    for (const r of input.localReferences(key) ?? []) neededBlobs.add(r);
  }
  const blobs: string[] = [];
  for (const [digest, modified] of input.blobs) if (modified < cutoff && !neededBlobs.has(digest)) blobs.push(digest);
  const strayTouches: string[] = [];
  for (const [key, modified] of input.touches) if (!inBucket.has(key) && modified < cutoff) strayTouches.push(key);
  return { touch, tags: expiredTags, manifests: expiredManifests, blobs, strayTouches };
}
