import { describe, expect, it } from 'vitest';
import { planRetention, type RetentionInput } from '../../src/tiers/retention-plan.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const DAY = 86_400_000;
const NOW = 100 * DAY;
const cutoff = NOW - 30 * DAY;
const OLD = cutoff - DAY;
const RECENT = NOW - DAY;

/** A bucket with two references in repo `r`: `keep` (manifest M1: blobs a, s) and `stale` (M2: blobs b, s). */
function bucket(over: Partial<RetentionInput> = {}): RetentionInput {
  return {
    cutoff,
    tags: [
      { repo: 'r', tag: 'keep', target: d('1'), modified: OLD },
      { repo: 'r', tag: 'stale', target: d('2'), modified: OLD },
    ],
    touches: new Map(),
    manifests: [
      { repo: 'r', digest: d('1'), references: [d('a'), d('s')], modified: OLD },
      { repo: 'r', digest: d('2'), references: [d('b'), d('s')], modified: OLD },
    ],
    blobs: new Map([d('1'), d('2'), d('a'), d('b'), d('s')].map((x) => [x, OLD])),
    localTags: [],
    localManifests: new Set(),
    localReferences: () => undefined,
    pendingBlobs: new Set(),
    ...over,
  };
}

describe('the bucket bound', () => {
  it('expires what nobody used since the cutoff: tags, then manifests, then blobs no live manifest lists', () => {
    const plan = planRetention(bucket());
    expect(plan.tags.map((t) => t.tag).sort()).toEqual(['keep', 'stale']);
    expect(plan.manifests).toHaveLength(2);
    expect(plan.blobs.sort()).toEqual([d('1'), d('2'), d('a'), d('b'), d('s')].sort());
    expect(plan.touch).toEqual([]);
  });

  it("a touch by any daemon keeps a reference live, with its manifest and blobs (shared ones too)", () => {
    const plan = planRetention(bucket({ touches: new Map([['r keep', RECENT]]) }));
    expect(plan.tags.map((t) => t.tag)).toEqual(['stale']);
    expect(plan.manifests.map((m) => m.digest)).toEqual([d('2')]);
    expect(plan.blobs.sort()).toEqual([d('2'), d('b')].sort());
  });

  it("this daemon's own use keeps it live and is written to the bucket as a touch — once, not while the bucket already knows", () => {
    const local = [{ repo: 'r', tag: 'keep', target: d('1'), used: RECENT }];
    const plan = planRetention(bucket({ localTags: local }));
    expect(plan.touch).toEqual([{ repo: 'r', tag: 'keep' }]);
    expect(plan.tags.map((t) => t.tag)).toEqual(['stale']);
    expect(planRetention(bucket({ localTags: local, touches: new Map([['r keep', RECENT]]) })).touch).toEqual([]);
    // A use older than the cutoff is no reason to touch, and keeps nothing.
    const idle = planRetention(bucket({ localTags: [{ repo: 'r', tag: 'keep', target: d('1'), used: OLD }] }));
    expect(idle.touch).toEqual([]);
    expect(idle.tags).toHaveLength(2);
  });

  it('keeps whatever was written since the cutoff, and what this daemon has yet to upload', () => {
    const blobs = new Map([d('1'), d('2'), d('a'), d('b'), d('s')].map((x) => [x, OLD]));
    blobs.set(d('b'), RECENT);
    const plan = planRetention(bucket({ blobs, pendingBlobs: new Set([d('a')]) }));
    expect(plan.blobs.sort()).toEqual([d('1'), d('2'), d('s')].sort());
    // A manifest pushed by digest since the cutoff keeps its blobs, though no tag names it.
    const byDigest = planRetention(bucket({ manifests: [{ repo: 'r', digest: d('2'), references: [d('b'), d('s')], modified: RECENT }] }));
    expect(byDigest.manifests).toEqual([]);
    expect(byDigest.blobs.sort()).toEqual([d('1'), d('a')].sort());
  });

  it('follows an index to the manifests it lists within its repository', () => {
    const plan = planRetention(
      bucket({
        tags: [{ repo: 'r', tag: 'multi', target: d('9'), modified: RECENT }],
        manifests: [
          { repo: 'r', digest: d('9'), references: [d('1')], modified: OLD },
          { repo: 'r', digest: d('1'), references: [d('a')], modified: OLD },
          { repo: 'other', digest: d('2'), references: [d('b')], modified: OLD },
        ],
      }),
    );
    expect(plan.manifests.map((m) => `${m.repo} ${m.digest}`)).toEqual([`other ${d('2')}`]);
    expect(plan.blobs.sort()).toEqual([d('2'), d('b'), d('s')].sort());
  });

  it("a local tag the bucket does not have yet keeps its manifest's blobs, from the local record", () => {
    const plan = planRetention(
      bucket({
        tags: [],
        manifests: [],
        localTags: [{ repo: 'r', tag: 'new', target: d('3'), used: OLD }],
        localReferences: (key) => (key === `r ${d('3')}` ? [d('a')] : undefined),
      }),
    );
    expect(plan.blobs.sort()).toEqual([d('1'), d('2'), d('b'), d('s')].sort());
  });

  it('removes touch objects whose tag is gone once they are past the cutoff themselves', () => {
    const plan = planRetention(bucket({ tags: [], touches: new Map([['r gone', OLD], ['r fresh', RECENT]]) }));
    expect(plan.strayTouches).toEqual(['r gone']);
  });
});
