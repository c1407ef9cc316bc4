import { describe, expect, it } from 'vitest';
import { backoffMs, cancelledLine, compactJournal, doneLine, itemKey, parseJournal, queuedLine, type Item } from '../../src/tiers/journal.js';
import { prefixed, tierKeys } from '../../src/tiers/tier.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

describe('tier key layout', () => {
  it('mirrors the data directory under the prefix', () => {
    const d = { algorithm: 'sha256' as const, hex: 'a'.repeat(64) };
    expect(tierKeys.blob(d)).toBe(`blobs/sha256/${'a'.repeat(64)}`);
    expect(tierKeys.manifest('org/app', d)).toBe(`repositories/org/app/_manifests/sha256/${'a'.repeat(64)}.json`);
    expect(tierKeys.tag('org/app', 'main')).toBe('repositories/org/app/_tags/main');
    expect(prefixed('', 'blobs/x')).toBe('blobs/x');
    expect(prefixed('ci/cache', 'blobs/x')).toBe('ci/cache/blobs/x');
  });
});

describe('write-back journal', () => {
  const blob: Item = { kind: 'b', digest: A };
  const manifest: Item = { kind: 'm', repo: 'org/app', digest: B };
  const tag: Item = { kind: 't', repo: 'org/app', tag: 'main' };

  it('replays queued items as pending until done, with sizes and tag targets', () => {
    const s = parseJournal(queuedLine(blob) + queuedLine(manifest) + queuedLine(tag) + doneLine(blob, 42) + doneLine(tag, B));
    expect([...s.pending.keys()]).toEqual([itemKey(manifest)]);
    expect(s.blobs.get(A)).toBe(42);
    expect(s.tags.get('org/app main')).toBe(B);
    expect(s.lines).toBe(5);
  });

  it('skips a line cut short by a crash and anything malformed', () => {
    const s = parseJournal(`${queuedLine(blob)}q b sha256:zz\nd b ${A} notasize\nbogus\nd b ${B} 7`);
    expect([...s.pending.keys()]).toEqual([itemKey(blob)]);
    expect(s.blobs.has(B)).toBe(false); // the unterminated last line never counted
    expect(s.blobs.has(A)).toBe(false);
  });

  it('queues again what changed after it was done, and forgets deleted tags and manifests', () => {
    const s = parseJournal(
      doneLine(tag, A) + queuedLine(tag) + doneLine(manifest) + doneLine({ kind: 'y', repo: 'org/app', digest: B }) + doneLine({ kind: 'x', repo: 'org/app', tag: 'main' }),
    );
    expect(s.pending.has(itemKey(tag))).toBe(true);
    expect(s.tags.has('org/app main')).toBe(false);
    expect(s.manifests.size).toBe(0);
  });

  it('cancels an item that went away locally', () => {
    const s = parseJournal(queuedLine(blob) + cancelledLine(blob));
    expect(s.pending.size).toBe(0);
    expect(s.blobs.size).toBe(0);
  });

  it('compacts to a journal that replays to the same state', () => {
    const s = parseJournal(queuedLine(blob) + doneLine(blob, 42) + queuedLine(manifest) + doneLine(tag, B) + queuedLine({ kind: 'x', repo: 'r', tag: 'old' }));
    const again = parseJournal(compactJournal(s));
    expect([...again.pending.keys()]).toEqual([...s.pending.keys()]);
    expect([...again.blobs]).toEqual([...s.blobs]);
    expect([...again.tags]).toEqual([...s.tags]);
    expect(again.lines).toBe(4);
  });
});

describe('retry backoff', () => {
  it('doubles from the base up to the cap, jittered over the upper half', () => {
    expect(backoffMs(1, 0)).toBe(250);
    expect(backoffMs(1, 0.5)).toBe(375);
    expect(backoffMs(3, 0)).toBe(1000);
    expect(backoffMs(3, 0.5)).toBe(1500);
    expect(backoffMs(30, 0.5)).toBe(11_250);
    expect(backoffMs(30, 0)).toBe(7_500);
  });
});
