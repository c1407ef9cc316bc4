import { describe, expect, it } from 'vitest';
import { BUCKET_SECONDS, HitRing, WINDOW_BUCKETS, hitTotals, type HitSeries } from '../../src/cache/hit-history.js';
import { hitColumns } from '../../src/http/status-page.js';

const MIN = 60_000;
/** A whole minute, so that bucket boundaries fall where the test says. */
const T0 = Date.UTC(2026, 0, 1, 12, 0);

describe('HitRing', () => {
  it('sums the counts of one bucket and keeps buckets apart, oldest first', () => {
    const r = new HitRing(MIN, 10);
    r.add(T0 + 1_000, 1, 0);
    r.add(T0 + 59_999, 2, 1);
    r.add(T0 + MIN, 0, 4);
    r.add(T0 + 3 * MIN + 5, 7, 0);
    expect(r.buckets(T0 + 3 * MIN + 10)).toEqual([
      { start: T0, hits: 3, misses: 1 },
      { start: T0 + MIN, hits: 0, misses: 4 },
      { start: T0 + 3 * MIN, hits: 7, misses: 0 },
    ]);
  });

  it('covers the last `size` buckets up to now: older ones drop out, and their slot is reused', () => {
    const r = new HitRing(MIN, 3);
    r.add(T0, 1, 0);
    r.add(T0 + MIN, 2, 0);
    r.add(T0 + 2 * MIN, 3, 0);
    expect(r.buckets(T0 + 2 * MIN).map((b) => b.hits)).toEqual([1, 2, 3]);
    // Later, T0's bucket is out of the window though still in its slot.
    expect(r.buckets(T0 + 3 * MIN).map((b) => b.hits)).toEqual([2, 3]);
    // T0 + 3 min takes T0's slot (same slot, 3 buckets later) and starts from zero.
    r.add(T0 + 3 * MIN, 0, 5);
    expect(r.buckets(T0 + 3 * MIN)).toEqual([
      { start: T0 + MIN, hits: 2, misses: 0 },
      { start: T0 + 2 * MIN, hits: 3, misses: 0 },
      { start: T0 + 3 * MIN, hits: 0, misses: 5 },
    ]);
    // A late count for T0 (its slot now holds a newer bucket) is out of the window: dropped, not mixed in.
    r.add(T0 + 30_000, 9, 9);
    expect(r.buckets(T0 + 3 * MIN).find((b) => b.start === T0 + 3 * MIN)).toEqual({ start: T0 + 3 * MIN, hits: 0, misses: 5 });
  });

  it('leaves out empty buckets and buckets after now', () => {
    const r = new HitRing(MIN, 5);
    r.add(T0, 0, 0);
    r.add(T0 + 2 * MIN, 1, 1);
    expect(r.buckets(T0 + MIN)).toEqual([]);
    expect(r.buckets(T0 + 2 * MIN)).toEqual([{ start: T0 + 2 * MIN, hits: 1, misses: 1 }]);
  });

  it('returns copies: a caller cannot change the counts', () => {
    const r = new HitRing(MIN, 5);
    r.add(T0, 1, 0);
    r.buckets(T0)[0]!.hits = 100;
    expect(r.buckets(T0)[0]!.hits).toBe(1);
  });
});

const series = (until: number, points: Array<[number, number, number]>): HitSeries => ({
  bucketSeconds: BUCKET_SECONDS,
  windowSeconds: BUCKET_SECONDS * WINDOW_BUCKETS,
  until: new Date(until).toISOString(),
  points: points.map(([at, hits, misses]) => ({ at: new Date(at).toISOString(), hits, misses })),
});

describe('hitTotals', () => {
  it('sums a series and gives the share found, or null without lookups', () => {
    expect(hitTotals(series(T0, [[T0 - MIN, 3, 1], [T0, 1, 3]]))).toEqual({ hits: 4, misses: 4, rate: 0.5 });
    expect(hitTotals(series(T0, []))).toEqual({ hits: 0, misses: 0, rate: null });
  });
});

describe('hitColumns (the status page chart)', () => {
  it('sums the minutes into equal columns over the day, the newest in the last column', () => {
    const until = T0 + 24 * 60 * MIN;
    const cols = hitColumns(series(until, [[T0 + MIN, 1, 0], [T0 + 14 * MIN, 2, 1], [T0 + 15 * MIN, 0, 1], [until, 5, 0]]), 96);
    expect(cols).toHaveLength(96);
    expect(cols[0]).toEqual({ start: T0, hits: 3, misses: 1 });
    expect(cols[1]).toEqual({ start: T0 + 15 * MIN, hits: 0, misses: 1 });
    expect(cols[95]).toEqual({ start: T0 + 95 * 15 * MIN, hits: 5, misses: 0 });
    expect(cols.slice(2, 95).every((c) => c.hits + c.misses === 0)).toBe(true);
  });
});
