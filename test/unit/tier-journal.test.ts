import { describe, expect, it } from 'vitest';
import { backoffMs, cancelledLine, compactJournal, doneLine, itemKey, parseJournal, queuedLine, type Item } from '../../src/tiers/journal.js';
import { parseTierKey, prefixed, tierKeys } from '../../src/tiers/tier.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

describe('tier key layout', () => {
  it('mirrors the data directory under the prefix', () => {
    const d = { algorithm: 'sha256' as const, hex: 'a'.repeat(64) };
    expect(tierKeys.blob(d)).toBe(`blobs/sha256/${'a'.repeat(64)}`);
    expect(tierKeys.manifest('org/app', d)).toBe(`repositories/org/app/_manifests/sha256/${'a'.repeat(64)}.json`);
    expect(tierKeys.tag('org/app', 'main')).toBe('repositories/org/app/_tags/main');
    expect(tierKeys.touch('org/app', 'main')).toBe('repositories/org/app/_touched/main');
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

  it("a blob's delete (queued by a client, or done by an expiry) forgets it, and a new upload brings it back", () => {
    const del: Item = { kind: 'z', digest: A };
    const s = parseJournal(doneLine(blob, 42) + queuedLine(del));
    expect([...s.pending.keys()]).toEqual([`z ${A}`]);
    expect(s.blobs.get(A)).toBe(42);
    const after = parseJournal(doneLine(blob, 42) + queuedLine(del) + doneLine(del) + queuedLine(blob) + doneLine(blob, 43));
    expect(after.pending.size).toBe(0);
    expect(after.blobs.get(A)).toBe(43);
    expect(parseJournal(doneLine(blob, 42) + doneLine(del)).blobs.has(A)).toBe(false);
    expect(parseJournal('q z sha256:zz\n').pending.size).toBe(0);
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

describe('tier keys read back', () => {
  it('names what each key of a listing is, and nothing else', () => {
    const d = { algorithm: 'sha256' as const, hex: 'a'.repeat(64) };
    expect(parseTierKey(tierKeys.blob(d))).toEqual({ kind: 'blob', digest: A });
    expect(parseTierKey(tierKeys.manifest('org/app', d))).toEqual({ kind: 'manifest', repo: 'org/app', digest: A });
    expect(parseTierKey(tierKeys.tag('org/team/app', 'v1.2'))).toEqual({ kind: 'tag', repo: 'org/team/app', tag: 'v1.2' });
    expect(parseTierKey(tierKeys.touch('org/app', 'main'))).toEqual({ kind: 'touch', repo: 'org/app', tag: 'main' });
    for (const other of ['blobs/sha256', 'blobs/sha256/XYZ', 'repositories/org/app/_tags/a/b', 'repositories/org/app/_manifests/sha256/aa', 'notes.txt']) {
      expect(parseTierKey(other), other).toBeUndefined();
    }
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
