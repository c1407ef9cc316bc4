/**
 * planEviction (src/cache/policy.ts): the pure eviction planner. Every plan produced here is also replayed by
 * `checkPlan`, which asserts the safety invariants of DESIGN.md §5 step by step: a tag step removes a live tag, a
 * manifest step removes a record that no remaining tag or same-repository index still keeps, and a blob step
 * removes a blob that no remaining manifest (in any repository) is or references, and that is not protected.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { planEviction, type BlobInfo, type CacheSnapshot, type EvictionPlan, type EvictionStep, type ManifestInfo, type TagInfo } from '../../src/cache/policy.js';

const NOW = 1_000_000;
const GRACE = 60;
/** Well before the grace window. */
const OLD = NOW - 10_000;

/** A digest per fixture name (names are unique within a fixture). */
const d = (name: string) => `sha256:${createHash('sha256').update(name).digest('hex')}`;

interface Fixture {
  blobs: Map<string, BlobInfo>;
  manifests: ManifestInfo[];
  tags: TagInfo[];
  protectedSet: Set<string>;
}

function fixture(): Fixture {
  return { blobs: new Map(), manifests: [], tags: [], protectedSet: new Set() };
}

function blob(f: Fixture, name: string, size: number, lastUsed = OLD): string {
  f.blobs.set(d(name), { size, lastUsed });
  return d(name);
}

/** A manifest record whose own bytes are a blob too (as in the daemon), referencing `refs`. */
function manifest(f: Fixture, repo: string, name: string, refs: string[], lastUsed = OLD, size = 100): string {
  const digest = blob(f, name, size, lastUsed);
  f.manifests.push({ repo, digest, references: refs, lastUsed });
  return digest;
}

function tag(f: Fixture, repo: string, t: string, digest: string, lastUsed: number): void {
  f.tags.push({ repo, tag: t, digest, lastUsed });
}

/** A cache reference repo:t → image manifest → config + layers, all blobs with the given sizes. */
function reference(f: Fixture, repo: string, t: string, lastUsed: number, layerSizes: number[], shared: string[] = []) {
  const config = blob(f, `${repo}:${t}/config`, 10, lastUsed);
  const layers = layerSizes.map((s, i) => blob(f, `${repo}:${t}/layer${i}`, s, lastUsed));
  const m = manifest(f, repo, `${repo}:${t}/manifest`, [config, ...layers, ...shared], lastUsed);
  tag(f, repo, t, m, lastUsed);
  return { manifest: m, config, layers, own: [m, config, ...layers] };
}

function snapshot(f: Fixture, now = NOW, graceSeconds = GRACE): CacheSnapshot {
  return { now, graceSeconds, blobs: f.blobs, manifests: f.manifests, tags: f.tags, isProtected: (x) => f.protectedSet.has(x) };
}

/** Replays a plan against the fixture and fails on the first step that would break a §5 invariant. */
function checkPlan(f: Fixture, plan: EvictionPlan): void {
  const tags = new Map(f.tags.map((t) => [`${t.repo} ${t.tag}`, t.digest]));
  const records = new Map(f.manifests.map((m) => [`${m.repo} ${m.digest}`, m]));
  const blobs = new Set(f.blobs.keys());
  const seen = new Set<string>();
  let bytes = 0;
  for (const [i, s] of plan.steps.entries()) {
    const where = `step ${i} ${JSON.stringify(s)}`;
    const id = s.kind === 'blob' ? `b ${s.digest}` : s.kind === 'tag' ? `t ${s.repo} ${s.tag}` : `m ${s.repo} ${s.digest}`;
    expect(seen.has(id), `${where}: planned twice`).toBe(false);
    seen.add(id);
    if (s.kind === 'tag') {
      expect(tags.get(`${s.repo} ${s.tag}`), `${where}: tag not live`).toBe(s.digest);
      tags.delete(`${s.repo} ${s.tag}`);
    } else if (s.kind === 'manifest') {
      expect(records.has(`${s.repo} ${s.digest}`), `${where}: manifest not live`).toBe(true);
      for (const [k, target] of tags) expect(k.startsWith(`${s.repo} `) && target === s.digest, `${where}: still tagged by ${k}`).toBe(false);
      for (const m of records.values()) {
        expect(m.repo === s.repo && m.references.includes(s.digest), `${where}: still listed by index ${m.digest}`).toBe(false);
      }
      records.delete(`${s.repo} ${s.digest}`);
    } else {
      expect(blobs.has(s.digest), `${where}: blob not present`).toBe(true);
      expect(f.protectedSet.has(s.digest), `${where}: blob is protected`).toBe(false);
      for (const m of records.values()) {
        expect(m.digest === s.digest || m.references.includes(s.digest), `${where}: blob still needed by ${m.repo}@${m.digest}`).toBe(false);
      }
      expect(s.size).toBe(f.blobs.get(s.digest)!.size);
      blobs.delete(s.digest);
      bytes += s.size;
    }
  }
  expect(plan.bytes, 'plan.bytes is the sum of the planned blob sizes').toBe(bytes);
}

function plan(f: Fixture, bytesToFree: number, filter?: Parameters<typeof planEviction>[2], now = NOW, grace = GRACE): EvictionPlan {
  const p = planEviction(snapshot(f, now, grace), bytesToFree, filter);
  checkPlan(f, p);
  return p;
}

const kinds = (steps: EvictionStep[]) => steps.map((s) => s.kind);
const blobSteps = (steps: EvictionStep[]) => steps.filter((s): s is Extract<EvictionStep, { kind: 'blob' }> => s.kind === 'blob');
const tagSteps = (steps: EvictionStep[]) => steps.filter((s): s is Extract<EvictionStep, { kind: 'tag' }> => s.kind === 'tag');
const manifestSteps = (steps: EvictionStep[]) => steps.filter((s): s is Extract<EvictionStep, { kind: 'manifest' }> => s.kind === 'manifest');
const indexOf = (steps: EvictionStep[], pred: (s: EvictionStep) => boolean) => {
  const i = steps.findIndex(pred);
  expect(i, 'expected step not planned').toBeGreaterThanOrEqual(0);
  return i;
};
const isBlob = (digest: string) => (s: EvictionStep) => s.kind === 'blob' && s.digest === digest;
const isManifest = (digest: string) => (s: EvictionStep) => s.kind === 'manifest' && s.digest === digest;
const isTag = (repo: string, t: string) => (s: EvictionStep) => s.kind === 'tag' && s.repo === repo && s.tag === t;

describe('planEviction: phases', () => {
  /** An orphan blob, an overwritten (untagged) manifest and three tagged caches, all old enough. */
  function mixed() {
    const f = fixture();
    const orphan = blob(f, 'orphan', 1000, OLD + 500); // newer than everything else, still past the grace window
    const a = reference(f, 'ci/app', 'cache-a', OLD + 30, [2000]);
    const b = reference(f, 'ci/app', 'cache-b', OLD + 10, [2000]);
    const c = reference(f, 'ci/app', 'cache-c', OLD + 20, [2000]);
    // The previous push of cache-a: same repository, no tag points to it any more.
    const oldLayer = blob(f, 'ci/app:cache-a/previous-layer', 3000, OLD);
    const untagged = manifest(f, 'ci/app', 'ci/app:cache-a/previous-manifest', [a.config, oldLayer], OLD + 1);
    return { f, orphan, a, b, c, oldLayer, untagged };
  }

  it('plans unreferenced blobs, then untagged manifests, then tagged references least recently used first', () => {
    const { f, orphan, a, b, c, oldLayer, untagged } = mixed();
    const p = plan(f, Infinity);
    const iOrphan = indexOf(p.steps, isBlob(orphan));
    const iUntagged = indexOf(p.steps, isManifest(untagged));
    const iOldLayer = indexOf(p.steps, isBlob(oldLayer));
    const iB = indexOf(p.steps, isTag('ci/app', 'cache-b'));
    const iC = indexOf(p.steps, isTag('ci/app', 'cache-c'));
    const iA = indexOf(p.steps, isTag('ci/app', 'cache-a'));
    expect(iOrphan).toBe(0);
    expect(p.steps[0]).toMatchObject({ kind: 'blob', reason: 'unreferenced' });
    expect(iUntagged).toBeGreaterThan(iOrphan);
    expect(iOldLayer).toBeGreaterThan(iUntagged);
    expect(iB).toBeGreaterThan(iOldLayer);
    expect([iB, iC, iA]).toEqual([...[iB, iC, iA]].sort((x, y) => x - y));
    // Everything goes when asked for everything, and the shared config goes only with its last holder (cache-a).
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(f.blobs.keys()));
    expect(indexOf(p.steps, isBlob(a.config))).toBeGreaterThan(iA);
    for (const r of [a, b, c]) expect(indexOf(p.steps, isManifest(r.manifest))).toBeGreaterThan(indexOf(p.steps, isTag('ci/app', r === a ? 'cache-a' : r === b ? 'cache-b' : 'cache-c')));
  });

  it('stops as soon as enough bytes are planned, after whole references only', () => {
    const { f, orphan, untagged, oldLayer, b } = mixed();
    // The garbage (orphan 1000 + untagged manifest 100 + its layer 3000) is not enough: one reference follows, whole.
    const p = plan(f, 4200);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['cache-b']);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set([orphan, untagged, oldLayer, ...b.own]));
    expect(p.bytes).toBeGreaterThanOrEqual(4200);
    // Only the orphan is needed for 500 bytes: nothing else is touched.
    expect(plan(f, 500).steps).toEqual([{ kind: 'blob', digest: orphan, size: 1000, lastUsed: OLD + 500, reason: 'unreferenced' }]);
    // Nothing asked, nothing planned.
    expect(plan(f, 0)).toEqual({ steps: [], bytes: 0 });
  });

  it('orders unreferenced blobs and untagged manifests oldest first', () => {
    const f = fixture();
    const young = blob(f, 'o-young', 10, OLD + 3);
    const old = blob(f, 'o-old', 10, OLD + 1);
    const mid = blob(f, 'o-mid', 10, OLD + 2);
    const m2 = manifest(f, 'r', 'm-new', [], OLD + 20);
    const m1 = manifest(f, 'r', 'm-old', [], OLD + 10);
    const p = plan(f, Infinity);
    expect(p.steps.map((s) => (s.kind === 'blob' ? s.digest : `${s.kind}:${'digest' in s ? s.digest : ''}`))).toEqual([
      old,
      mid,
      young,
      `manifest:${m1}`,
      m1,
      `manifest:${m2}`,
      m2,
    ]);
  });

  it('keeps unreferenced blobs and untagged manifests inside the push grace window', () => {
    const f = fixture();
    const fresh = blob(f, 'just-uploaded', 5000, NOW - GRACE + 1); // a layer whose manifest is not pushed yet
    const edge = blob(f, 'at-the-edge', 5000, NOW - GRACE); // exactly grace seconds old: not yet "older than"
    const freshManifest = manifest(f, 'r', 'fresh-untagged', [], NOW - 5);
    const p = plan(f, Infinity);
    expect(p.steps).toEqual([]);
    // Once the window has passed they are garbage.
    const later = plan(f, Infinity, undefined, NOW + GRACE + 10);
    expect(new Set(blobSteps(later.steps).map((s) => s.digest))).toEqual(new Set([fresh, edge, freshManifest]));
    expect(manifestSteps(later.steps).map((s) => s.digest)).toEqual([freshManifest]);
  });

  it('evicts tagged references by last use even inside the grace window (LRU, not age)', () => {
    const f = fixture();
    const older = reference(f, 'r', 'older', NOW - 5, [100]);
    reference(f, 'r', 'newer', NOW - 1, [100]);
    const p = plan(f, 1);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['older']);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(older.own));
  });
});

describe('planEviction: within a reference', () => {
  it('lists the tag, then the manifest, then its blobs, with the times it was planned with', () => {
    const f = fixture();
    const r = reference(f, 'team/svc', 'main', OLD + 7, [300, 400]);
    const p = plan(f, 1);
    expect(kinds(p.steps)).toEqual(['tag', 'manifest', 'blob', 'blob', 'blob', 'blob']);
    expect(p.steps[0]).toEqual({ kind: 'tag', repo: 'team/svc', tag: 'main', digest: r.manifest, lastUsed: OLD + 7 });
    expect(p.steps[1]).toEqual({ kind: 'manifest', repo: 'team/svc', digest: r.manifest, lastUsed: OLD + 7 });
    for (const s of blobSteps(p.steps)) expect(s).toMatchObject({ reason: 'released', lastUsed: OLD + 7 });
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(r.own));
    expect(p.bytes).toBe(100 + 10 + 300 + 400);
  });

  it('drops a manifest only with the last tag that points to it', () => {
    const f = fixture();
    const r = reference(f, 'r', 'v1', OLD + 1, [100]);
    tag(f, 'r', 'latest', r.manifest, OLD + 5);
    const other = reference(f, 'r', 'other', OLD + 3, [100]);
    const p = plan(f, Infinity);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['v1', 'other', 'latest']);
    const iLatest = indexOf(p.steps, isTag('r', 'latest'));
    expect(indexOf(p.steps, isManifest(r.manifest))).toBe(iLatest + 1);
    expect(indexOf(p.steps, isManifest(other.manifest))).toBeLessThan(iLatest);
    // Freeing one byte removes only the v1 tag: the manifest stays (still tagged latest), so nothing is reclaimed
    // and the plan moves on to the next reference.
    const small = plan(f, 1);
    expect(kinds(small.steps).slice(0, 2)).toEqual(['tag', 'tag']);
    expect(tagSteps(small.steps).map((t) => t.tag)).toEqual(['v1', 'other']);
    expect(manifestSteps(small.steps).map((m) => m.digest)).toEqual([other.manifest]);
  });

  it('never plans a blob that a surviving manifest references, in any repository', () => {
    const f = fixture();
    const base = blob(f, 'shared-base-layer', 10_000);
    const a = reference(f, 'team-a/app', 'cache', OLD + 1, [500], [base]);
    const b = reference(f, 'team-b/app', 'cache', OLD + 2, [500], [base]);
    const p = plan(f, 1);
    expect(tagSteps(p.steps).map((t) => t.repo)).toEqual(['team-a/app']);
    expect(blobSteps(p.steps).map((s) => s.digest)).not.toContain(base);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(a.own));
    // Asking for more than a's own bytes moves to b, and only then is the shared layer released, after b's manifest.
    const all = plan(f, Infinity);
    const iBase = indexOf(all.steps, isBlob(base));
    expect(iBase).toBeGreaterThan(indexOf(all.steps, isManifest(b.manifest)));
    expect(iBase).toBeGreaterThan(indexOf(all.steps, isManifest(a.manifest)));
  });

  it('never plans a blob shared with an untagged manifest that is inside the grace window', () => {
    const f = fixture();
    const layer = blob(f, 'layer-kept-by-fresh-untagged', 1000);
    const r = reference(f, 'r', 'old', OLD, [10], [layer]);
    manifest(f, 'r', 'fresh-untagged', [layer], NOW - 1);
    const p = plan(f, Infinity);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['old']);
    expect(blobSteps(p.steps).map((s) => s.digest)).not.toContain(layer);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(r.own));
  });

  it('never plans a protected blob (answered HEAD or mount), as garbage or as released', () => {
    const f = fixture();
    const probed = blob(f, 'probed-orphan', 1000, OLD);
    const orphan = blob(f, 'plain-orphan', 1000, OLD);
    const oldLayer = blob(f, 'old-layer', 500);
    const untagged = manifest(f, 'r', 'untagged', [oldLayer], OLD);
    f.protectedSet.add(probed);
    f.protectedSet.add(oldLayer);
    const p = plan(f, Infinity);
    const planned = blobSteps(p.steps).map((s) => s.digest);
    expect(planned).not.toContain(probed);
    expect(planned).toContain(orphan);
    // An untagged manifest is garbage: it goes, and only its protected blob stays.
    expect(manifestSteps(p.steps).map((m) => m.digest)).toEqual([untagged]);
    expect(planned).not.toContain(oldLayer);
    expect(p.bytes).toBe(1000 + 100);
  });
});

describe('planEviction: references whose blobs are protected', () => {
  it('keeps a reference whole when a blob its removal would release is protected', () => {
    const f = fixture();
    const r = reference(f, 'r', 't', OLD, [200, 300]);
    f.protectedSet.add(r.layers[0]!);
    const p = plan(f, Infinity);
    expect(p.steps).toEqual([]);
    // Once the protection ends, the reference goes whole.
    f.protectedSet.clear();
    expect(new Set(blobSteps(plan(f, Infinity).steps).map((s) => s.digest))).toEqual(new Set(r.own));
  });

  it('skips protected references and plans later ones instead, until the target is met', () => {
    // The reported case: 24 references, the layers of the 12 least recently used just probed by HEAD; freeing the
    // bytes of 10 references takes the 10 oldest unprobed ones, and 14 references stay.
    const f = fixture();
    const refs = Array.from({ length: 24 }, (_, i) => reference(f, `org/app${i}`, 'cache', OLD + i, [1000, 1000]));
    for (const r of refs.slice(0, 12)) for (const l of r.layers) f.protectedSet.add(l);
    const perRef = 100 + 10 + 2000;
    const p = plan(f, 10 * perRef);
    expect(tagSteps(p.steps).map((t) => t.repo)).toEqual(refs.slice(12, 22).map((_, i) => `org/app${12 + i}`));
    expect(p.bytes).toBe(10 * perRef);
    for (const r of refs.slice(0, 12)) for (const x of r.own) expect(p.steps.some((s) => s.digest === x), `probed ${x}`).toBe(false);
  });

  it('a blob shared with a reference that stays does not hold back the one that goes', () => {
    const f = fixture();
    const base = blob(f, 'shared-base', 5000);
    const a = reference(f, 'team-a/app', 'cache', OLD + 1, [500], [base]);
    const b = reference(f, 'team-b/app', 'cache', OLD + 2, [500], [base]);
    f.protectedSet.add(base);
    // a's removal releases only its own blobs (b still holds the base): a goes. b's would release the base: b stays.
    const p = plan(f, Infinity);
    expect(tagSteps(p.steps).map((t) => t.repo)).toEqual(['team-a/app']);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(a.own));
    expect(p.steps.some((s) => s.digest === b.manifest)).toBe(false);
  });

  it('a skipped reference keeps its blobs counted: a later reference sharing them does not release them', () => {
    const f = fixture();
    const shared = blob(f, 'shared', 4000);
    const a = reference(f, 'a', 'cache', OLD + 1, [500], [shared]);
    f.protectedSet.add(a.layers[0]!);
    const b = reference(f, 'b', 'cache', OLD + 2, [500], [shared]);
    const p = plan(f, Infinity); // checkPlan fails if the shared blob is planned while a's manifest stays
    expect(tagSteps(p.steps).map((t) => t.repo)).toEqual(['b']);
    expect(blobSteps(p.steps).map((s) => s.digest)).not.toContain(shared);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(b.own));
  });

  it('an index is kept whole when a child manifest it alone keeps has a protected blob', () => {
    const f = fixture();
    const amdLayer = blob(f, 'amd-layer', 1000);
    const armLayer = blob(f, 'arm-layer', 1000);
    const amd = manifest(f, 'img', 'amd', [amdLayer]);
    const arm = manifest(f, 'img', 'arm', [armLayer]);
    const idx = manifest(f, 'img', 'index', [amd, arm]);
    tag(f, 'img', 'multi', idx, OLD + 1);
    const next = reference(f, 'img', 'next', OLD + 2, [700]);
    f.protectedSet.add(armLayer);
    const p = plan(f, 1);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['next']);
    expect(manifestSteps(p.steps).map((m) => m.digest)).toEqual([next.manifest]);
    // With arm also tagged on its own, the index's removal no longer releases arm's layer: the index goes, with amd.
    tag(f, 'img', 'arm', arm, OLD + 5);
    const q = plan(f, 1);
    expect(tagSteps(q.steps).map((t) => t.tag)).toEqual(['multi']);
    expect(manifestSteps(q.steps).map((m) => m.digest)).toEqual([idx, amd]);
    expect(blobSteps(q.steps).map((s) => s.digest)).not.toContain(armLayer);
  });

  it('a tag that shares its manifest with another releases nothing itself and goes; the last one stays', () => {
    const f = fixture();
    const r = reference(f, 'r', 'v1', OLD + 1, [100]);
    tag(f, 'r', 'latest', r.manifest, OLD + 2);
    f.protectedSet.add(r.layers[0]!);
    const p = plan(f, Infinity);
    expect(p.steps).toEqual([{ kind: 'tag', repo: 'r', tag: 'v1', digest: r.manifest, lastUsed: OLD + 1 }]);
  });
});

describe('planEviction: indexes', () => {
  /** repo:multi → index → two platform manifests (one also listed by a second, tagged index). */
  function indexed() {
    const f = fixture();
    const amdLayer = blob(f, 'amd-layer', 1000);
    const armLayer = blob(f, 'arm-layer', 1000);
    const amdCfg = blob(f, 'amd-cfg', 10);
    const armCfg = blob(f, 'arm-cfg', 10);
    const amd = manifest(f, 'img', 'amd-manifest', [amdCfg, amdLayer]);
    const arm = manifest(f, 'img', 'arm-manifest', [armCfg, armLayer]);
    const idx = manifest(f, 'img', 'index', [amd, arm]);
    tag(f, 'img', 'multi', idx, OLD + 1);
    return { f, amd, arm, idx, amdLayer, armLayer, amdCfg, armCfg };
  }

  it('cascades from an index to the child manifests only it kept, before their blobs', () => {
    const { f, amd, arm, idx, amdLayer, armLayer } = indexed();
    const p = plan(f, 1);
    expect(manifestSteps(p.steps).map((m) => m.digest)).toEqual([idx, amd, arm]);
    expect(indexOf(p.steps, isManifest(idx))).toBe(1);
    expect(indexOf(p.steps, isBlob(amdLayer))).toBeGreaterThan(indexOf(p.steps, isManifest(amd)));
    expect(indexOf(p.steps, isBlob(armLayer))).toBeGreaterThan(indexOf(p.steps, isManifest(arm)));
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set(f.blobs.keys()));
  });

  it('keeps a child manifest that another index or a tag still holds', () => {
    const { f, amd, arm, idx, amdLayer } = indexed();
    const idx2 = manifest(f, 'img', 'index-2', [amd]);
    tag(f, 'img', 'amd-only', idx2, OLD + 5);
    tag(f, 'img', 'arm', arm, OLD + 6);
    const p = plan(f, 1);
    expect(tagSteps(p.steps).map((t) => t.tag)).toEqual(['multi']);
    expect(manifestSteps(p.steps).map((m) => m.digest)).toEqual([idx]);
    const planned = blobSteps(p.steps).map((s) => s.digest);
    expect(planned).toEqual([idx]);
    expect(planned).not.toContain(amdLayer);
    // Everything: amd goes with index-2, arm with its own tag.
    const all = plan(f, Infinity);
    expect(manifestSteps(all.steps).map((m) => m.digest)).toEqual([idx, idx2, amd, arm]);
  });

  it('does not cascade into another repository: the child record there is its own reference', () => {
    const f = fixture();
    const layer = blob(f, 'layer', 1000);
    const childHere = manifest(f, 'a', 'child', [layer]);
    // The same child digest recorded (untagged) in repository b too, inside the grace window.
    f.manifests.push({ repo: 'b', digest: childHere, references: [layer], lastUsed: NOW });
    const idx = manifest(f, 'a', 'index', [childHere]);
    tag(f, 'a', 't', idx, OLD);
    const p = plan(f, Infinity);
    expect(manifestSteps(p.steps)).toEqual([
      { kind: 'manifest', repo: 'a', digest: idx, lastUsed: OLD },
      { kind: 'manifest', repo: 'a', digest: childHere, lastUsed: OLD },
    ]);
    const planned = blobSteps(p.steps).map((s) => s.digest);
    expect(planned).toEqual([idx]);
  });
});

describe('planEviction: prune filter and allGarbage', () => {
  function repos() {
    const f = fixture();
    const orphan = blob(f, 'orphan', 50, OLD);
    const teamOld = reference(f, 'team', 'old', OLD, [100]);
    const teamSubOld = reference(f, 'team/sub', 'old', OLD + 1, [100]);
    const teamxOld = reference(f, 'teamx', 'old', OLD + 2, [100]);
    const teamNew = reference(f, 'team/sub', 'new', NOW - 100, [100]);
    const untaggedTeam = manifest(f, 'team', 'team-untagged', [], OLD);
    const untaggedOther = manifest(f, 'other', 'other-untagged', [], OLD);
    return { f, orphan, teamOld, teamSubOld, teamxOld, teamNew, untaggedTeam, untaggedOther };
  }

  it('`before` keeps references used since, whatever the target', () => {
    const { f, teamNew, orphan } = repos();
    const p = plan(f, Infinity, { before: NOW - 1000 });
    expect(tagSteps(p.steps).map((t) => `${t.repo}:${t.tag}`)).toEqual(['team:old', 'team/sub:old', 'teamx:old']);
    expect(blobSteps(p.steps).map((s) => s.digest)).not.toContain(teamNew.manifest);
    expect(blobSteps(p.steps).map((s) => s.digest)).toContain(orphan);
    // `before` also bounds untagged manifests: none are older than OLD - 1.
    const none = plan(f, Infinity, { before: OLD - 1 });
    expect(manifestSteps(none.steps)).toEqual([]);
    expect(tagSteps(none.steps)).toEqual([]);
  });

  it('`repoPrefix` matches the repository and its sub-paths only, and leaves unreferenced blobs alone', () => {
    const { f, orphan, untaggedTeam, untaggedOther } = repos();
    const p = plan(f, Infinity, { before: NOW - 1000, repoPrefix: 'team' });
    expect(tagSteps(p.steps).map((t) => `${t.repo}:${t.tag}`)).toEqual(['team:old', 'team/sub:old']);
    const manifests = manifestSteps(p.steps).map((m) => m.digest);
    expect(manifests).toContain(untaggedTeam);
    expect(manifests).not.toContain(untaggedOther);
    const planned = blobSteps(p.steps).map((s) => s.digest);
    expect(planned).not.toContain(orphan);
    for (const s of blobSteps(p.steps)) expect(s.reason).toBe('released');
  });

  it('`allGarbage` collects every unreferenced blob and untagged manifest past the grace window, and no reference', () => {
    const { f, orphan, untaggedTeam, untaggedOther } = repos();
    const fresh = blob(f, 'fresh-orphan', 50, NOW);
    expect(plan(f, 0).steps).toEqual([]);
    const p = plan(f, 0, { allGarbage: true });
    expect(tagSteps(p.steps)).toEqual([]);
    expect(new Set(blobSteps(p.steps).map((s) => s.digest))).toEqual(new Set([orphan, untaggedTeam, untaggedOther]));
    expect(blobSteps(p.steps).map((s) => s.digest)).not.toContain(fresh);
    // With a target as well, references follow the garbage until the target is met.
    // Garbage is 250 bytes; team:old adds 210 (460), team/sub:old another 210.
    const more = plan(f, 500, { allGarbage: true });
    expect(tagSteps(more.steps).map((t) => `${t.repo}:${t.tag}`)).toEqual(['team:old', 'team/sub:old']);
  });
});

describe('planEviction: generated stores', () => {
  it('keeps every invariant on random stores, for any target', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 40; round++) {
      const f = fixture();
      const pool = Array.from({ length: 12 }, (_, i) => blob(f, `pool-${round}-${i}`, 1 + rnd(1000), OLD + rnd(20)));
      const repoNames = ['a', 'a/b', 'c'];
      const made: string[][] = repoNames.map(() => []);
      for (let m = 0; m < 10; m++) {
        const r = rnd(3);
        const repo = repoNames[r]!;
        const refs = pool.filter(() => rnd(4) === 0);
        // Sometimes an index over earlier manifests of the same repository.
        if (made[r]!.length > 0 && rnd(3) === 0) refs.push(made[r]![rnd(made[r]!.length)]!);
        const dg = manifest(f, repo, `m-${round}-${m}`, [...new Set(refs)], OLD + rnd(40) + (rnd(5) === 0 ? 9000 : 0));
        made[r]!.push(dg);
        if (rnd(2) === 0) tag(f, repo, `t${m}`, dg, OLD + rnd(50));
      }
      for (const x of pool) if (rnd(6) === 0) f.protectedSet.add(x);
      for (const target of [0, 1, 500, 3000, Infinity]) {
        plan(f, target);
        plan(f, target, { allGarbage: true });
        plan(f, target, { before: OLD + 25, repoPrefix: 'a' });
      }
    }
  });
});

describe('planEviction with a tier below (evict to S3)', () => {
  const withTier = (f: Fixture, inTier: Set<string>): CacheSnapshot => ({ ...snapshot(f), inTier: (x) => inTier.has(x) });

  it('takes local copies of blobs the tier holds, least recently used first, before any reference goes', () => {
    const f = fixture();
    const old = reference(f, 'ci/app', 'old', OLD, [3000, 4000]);
    const hot = reference(f, 'ci/app', 'hot', OLD + 100, [5000]);
    const p = planEviction(withTier(f, new Set([...old.layers, ...hot.layers])), 6000);
    expect(kinds(p.steps)).toEqual(['blob', 'blob']);
    expect(blobSteps(p.steps).map((s) => [s.digest, s.reason])).toEqual([
      [old.layers[0], 'offloaded'],
      [old.layers[1], 'offloaded'],
    ]);
    expect(p.bytes).toBe(7000);
  });

  it('never offloads what the tier does not hold or what is protected, and falls back to dropping references', () => {
    const f = fixture();
    const a = reference(f, 'ci/app', 'a', OLD, [3000, 4000]);
    f.protectedSet.add(a.layers[0]!);
    const p = planEviction(withTier(f, new Set([a.layers[0]!])), 2000);
    expect(blobSteps(p.steps).some((s) => s.reason === 'offloaded')).toBe(false);
    // Nothing could be offloaded: the reference would release a protected blob, so it is kept whole.
    expect(tagSteps(p.steps)).toEqual([]);
  });

  it('leaves prune (references older than, under a prefix) as it was', () => {
    const f = fixture();
    const a = reference(f, 'ci/app', 'a', OLD, [3000]);
    const p = planEviction(withTier(f, new Set(a.layers)), Infinity, { before: NOW });
    expect(blobSteps(p.steps).every((s) => s.reason !== 'offloaded')).toBe(true);
    expect(tagSteps(p.steps).map((s) => s.tag)).toEqual(['a']);
  });
});
