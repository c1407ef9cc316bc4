/**
 * DigestTable (src/storage/digest-table.ts): the compact per-digest index (size, last use, reference count) in
 * typed arrays; DigestList (src/storage/digest-list.ts): a manifest's packed references. Checked against a plain
 * Map model under random operations, across growth, removals and rehashes.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DigestTable } from '../../src/storage/digest-table.js';
import { DigestList } from '../../src/storage/digest-list.js';

const sha256 = (i: number) => `sha256:${createHash('sha256').update(String(i)).digest('hex')}`;
const sha512 = (i: number) => `sha512:${createHash('sha512').update(String(i)).digest('hex')}`;

/** A tiny deterministic generator, so a failure replays. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Facts {
  size: number;
  used: number;
  refs: number;
}

function expectSame(t: DigestTable, model: Map<string, Facts>, universe: string[]): void {
  let blobs = 0;
  let bytes = 0;
  for (const d of universe) {
    const m = model.get(d) ?? { size: -1, used: 0, refs: 0 };
    expect(t.size(d)).toBe(m.size >= 0 ? m.size : undefined);
    expect(t.used(d)).toBe(m.used);
    expect(t.refs(d)).toBe(m.refs);
    if (m.size >= 0) {
      blobs++;
      bytes += m.size;
    }
  }
  expect(t.blobCount).toBe(blobs);
  expect(t.blobBytes).toBe(bytes);
  const listed = new Map([...t.blobEntries()].map(([d, size, used]) => [d, { size, used }]));
  expect(listed.size).toBe(blobs);
  for (const [d, m] of model) if (m.size >= 0) expect(listed.get(d)).toEqual({ size: m.size, used: m.used });
}

describe('DigestTable', () => {
  it('knows nothing of a digest it was not told about, and answers the same for any string', () => {
    const t = new DigestTable();
    for (const d of [sha256(1), sha512(1), 'sha256:ABC', '', 'x'.repeat(71)]) {
      expect(t.size(d)).toBeUndefined();
      expect(t.used(d)).toBe(0);
      expect(t.refs(d)).toBe(0);
    }
    expect([...t.blobEntries()]).toEqual([]);
  });

  it('keeps size, last use and references apart, and forgets a blob with its last use but not its references', () => {
    const t = new DigestTable();
    const d = sha256(7);
    t.setSize(d, 1234);
    t.setUsed(d, 99);
    t.addRefs(d, 2);
    expect([t.size(d), t.used(d), t.refs(d), t.blobCount, t.blobBytes]).toEqual([1234, 99, 2, 1, 1234]);
    t.deleteBlob(d);
    expect([t.size(d), t.used(d), t.refs(d), t.blobCount, t.blobBytes]).toEqual([undefined, 0, 2, 0, 0]);
    t.addRefs(d, -5);
    expect(t.refs(d)).toBe(0);
    // A zero-byte blob is present.
    t.setSize(d, 0);
    expect([t.size(d), t.blobCount]).toEqual([0, 1]);
  });

  it('handles sizes beyond 32 bits exactly', () => {
    const t = new DigestTable();
    t.setSize(sha256(1), 2 ** 40 + 3);
    expect(t.size(sha256(1))).toBe(2 ** 40 + 3);
    expect(t.blobBytes).toBe(2 ** 40 + 3);
  });

  it('agrees with a Map under 60 000 random operations over sha256 and sha512 digests', () => {
    const rnd = random(42);
    const universe = [...Array.from({ length: 6000 }, (_, i) => sha256(i)), ...Array.from({ length: 200 }, (_, i) => sha512(i))];
    const t = new DigestTable();
    const model = new Map<string, Facts>();
    const facts = (d: string) => model.get(d) ?? { size: -1, used: 0, refs: 0 };
    const store = (d: string, f: Facts) => (f.size < 0 && f.used === 0 && f.refs === 0 ? model.delete(d) : model.set(d, f));
    for (let i = 0; i < 60_000; i++) {
      const d = universe[Math.floor(rnd() * universe.length)]!;
      const f = { ...facts(d) };
      const op = rnd();
      if (op < 0.35) {
        f.size = Math.floor(rnd() * 1e6);
        t.setSize(d, f.size);
      } else if (op < 0.55) {
        f.size = -1;
        f.used = 0;
        t.deleteBlob(d);
      } else if (op < 0.75) {
        f.used = rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 1e9);
        t.setUsed(d, f.used);
      } else {
        const by = rnd() < 0.5 ? 1 : -1;
        f.refs = Math.max(0, f.refs + by);
        t.addRefs(d, by);
      }
      store(d, f);
      if (i % 15_000 === 0) expectSame(t, model, universe);
    }
    expectSame(t, model, universe);
  });

  it('grows to 200 000 digests and shrinks back to none', () => {
    const t = new DigestTable();
    const n = 200_000;
    for (let i = 0; i < n; i++) t.setSize(sha256(i), i);
    expect(t.blobCount).toBe(n);
    for (let i = 0; i < n; i += 997) expect(t.size(sha256(i))).toBe(i);
    for (let i = 0; i < n; i++) t.deleteBlob(sha256(i));
    expect([t.blobCount, t.blobBytes, [...t.blobEntries()].length]).toEqual([0, 0, 0]);
    // Rows and slots are reused after removals.
    for (let i = 0; i < 1000; i++) t.setSize(sha256(n + i), 1);
    expect(t.blobCount).toBe(1000);
  });

  it('writes present blobs to an index that a new table reads back, newer last uses winning', () => {
    const t = new DigestTable();
    for (let i = 0; i < 300; i++) {
      t.setSize(sha256(i), i * 10);
      t.setUsed(sha256(i), 1000 + i);
    }
    t.setSize(sha512(1), 5);
    t.setUsed(sha512(1), 7);
    t.addRefs(sha256(999), 1); // referenced, not present: not written
    const fresh = new DigestTable();
    fresh.setUsed(sha256(0), 5000);
    fresh.decode(t.encode());
    expect(fresh.blobCount).toBe(301);
    expect([fresh.size(sha256(5)), fresh.used(sha256(5))]).toEqual([50, 1005]);
    expect([fresh.size(sha256(0)), fresh.used(sha256(0))]).toEqual([0, 5000]);
    expect([fresh.size(sha512(1)), fresh.used(sha512(1))]).toEqual([5, 7]);
    expect(fresh.size(sha256(999))).toBeUndefined();
  });

  it('refuses, loading nothing, a file that is not a whole index', () => {
    expect(() => new DigestTable().decode(Buffer.from('recency snapshot'))).toThrow();
    const ok = new DigestTable();
    for (let i = 0; i < 3; i++) ok.setSize(sha256(i), 1000 + i);
    const file = ok.encode();
    const fresh = new DigestTable();
    expect(() => fresh.decode(file.subarray(0, file.length - 50))).toThrow();
    const flipped = Buffer.from(file);
    flipped[8 + 33] = (flipped[8 + 33] ?? 0) ^ 0x40; // a bit of the first record's size
    expect(() => fresh.decode(flipped)).toThrow();
    expect(fresh.blobCount).toBe(0);
    fresh.decode(file);
    expect(fresh.size(sha256(2))).toBe(1002);
  });

  it('drops, at the end of a sweep, the blobs not marked present', () => {
    const t = new DigestTable();
    for (let i = 0; i < 10; i++) t.setSize(sha256(i), 1);
    t.setSize(sha512(1), 1);
    t.setSize(sha512(2), 1);
    t.setUsed(sha256(50), 3); // a last use left by a log for a blob long gone
    t.beginSweep();
    for (let i = 0; i < 10; i += 2) expect(t.markPresent(sha256(i))).toBe(true);
    expect(t.markPresent(sha512(2))).toBe(true);
    expect(t.markPresent(sha256(77))).toBe(false); // on disk, unknown to the index
    expect(t.endSweep()).toBe(7);
    expect([...t.blobEntries()].map(([d]) => d).sort()).toEqual([0, 2, 4, 6, 8].map(sha256).concat(sha512(2)).sort());
    expect(t.used(sha256(50))).toBe(0);
  });
});

describe('DigestList', () => {
  it('iterates, serialises and searches packed sha256 digests in order', () => {
    const ds = [sha256(3), sha256(1), sha256(2)];
    const l = new DigestList(ds);
    expect(l.length).toBe(3);
    expect([...l]).toEqual(ds);
    expect(JSON.parse(JSON.stringify({ references: l }))).toEqual({ references: ds });
    expect(l.includes(sha256(1))).toBe(true);
    expect(l.includes(sha256(4))).toBe(false);
    expect(l.includes('sha256:nope')).toBe(false);
  });

  it('keeps a list with any other algorithm as it is', () => {
    const ds = [sha256(1), sha512(1)];
    const l = new DigestList(ds);
    expect([...l]).toEqual(ds);
    expect(l.includes(sha512(1))).toBe(true);
    expect(new DigestList([]).length).toBe(0);
  });
});
