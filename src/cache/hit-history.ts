import { join } from 'node:path';
import { readJsonState, writeFileAtomic } from '../storage/fs-util.js';

/** One bucket of cache lookups (blob HEAD/GET, manifest GET/HEAD): `start` in epoch ms. */
export interface HitBucket {
  start: number;
  hits: number;
  misses: number;
}

/** The hit rate over time as the admin API answers it: the non-empty buckets of the window, oldest first. */
export interface HitSeries {
  bucketSeconds: number;
  windowSeconds: number;
  /** The end of the window (ISO time): the series covers [until − windowSeconds, until]. */
  until: string;
  points: Array<{ at: string; hits: number; misses: number }>;
}

/** The lookups of a whole series, and the share found (null without any). */
export function hitTotals(s: HitSeries): { hits: number; misses: number; rate: number | null } {
  let hits = 0;
  let misses = 0;
  for (const p of s.points) {
    hits += p.hits;
    misses += p.misses;
  }
  return { hits, misses, rate: hits + misses === 0 ? null : hits / (hits + misses) };
}

/** A minute per bucket, a day of them. */
export const BUCKET_SECONDS = 60;
export const WINDOW_BUCKETS = 24 * 60;

/**
 * Lookups counted per time bucket over the last `size` buckets: a fixed ring (slot = bucket number mod size), so
 * memory is bounded and counting is two additions; a slot still holding an older bucket is reused. Times are
 * passed in, so it is deterministic.
 */
export class HitRing {
  private readonly slots: Array<HitBucket | undefined>;

  constructor(
    readonly bucketMs: number,
    readonly size: number,
  ) {
    this.slots = new Array<HitBucket | undefined>(size);
  }

  add(atMs: number, hits: number, misses: number): void {
    const n = Math.floor(atMs / this.bucketMs);
    const i = n % this.size;
    let slot = this.slots[i];
    if (slot === undefined || slot.start !== n * this.bucketMs) {
      // A count for a bucket older than the one in its slot fell out of the window already.
      if (slot !== undefined && slot.start > n * this.bucketMs) return;
      slot = this.slots[i] = { start: n * this.bucketMs, hits: 0, misses: 0 };
    }
    slot.hits += hits;
    slot.misses += misses;
  }

  /** The non-empty buckets among the `size` up to and including `nowMs`'s, oldest first. */
  buckets(nowMs: number): HitBucket[] {
    const last = Math.floor(nowMs / this.bucketMs) * this.bucketMs;
    const first = last - (this.size - 1) * this.bucketMs;
    return this.slots
      .filter((s): s is HitBucket => s !== undefined && s.start >= first && s.start <= last && s.hits + s.misses > 0)
      .sort((a, b) => a.start - b.start)
      .map((s) => ({ ...s }));
  }
}

/**
 * The daemon's hit rate over the last day, summed over every process (workers report their counts to the owner
 * of the store, see process/worker.ts): in memory, saved to state/hit-rate.json on the analytics flush.
 */
export class HitHistory {
  private readonly ring = new HitRing(BUCKET_SECONDS * 1000, WINDOW_BUCKETS);
  private dirty = false;

  constructor(
    private readonly stateDir: string,
    private readonly tmpDir: string,
  ) {}

  private get path(): string {
    return join(this.stateDir, 'hit-rate.json');
  }

  async open(): Promise<void> {
    const saved = (await readJsonState(this.path)) as { bucketSeconds?: unknown; buckets?: unknown } | undefined;
    if (saved?.bucketSeconds !== BUCKET_SECONDS || !Array.isArray(saved.buckets)) return;
    for (const b of saved.buckets as Array<Partial<Record<keyof HitBucket, unknown>>>) {
      if (typeof b.start === 'number' && typeof b.hits === 'number' && typeof b.misses === 'number') this.ring.add(b.start, b.hits, b.misses);
    }
  }

  /** `hits` and `misses` lookups answered at `atMs`. */
  record(hits: number, misses: number, atMs = Date.now()): void {
    this.ring.add(atMs, hits, misses);
    this.dirty = true;
  }

  series(nowMs = Date.now()): HitSeries {
    return {
      bucketSeconds: BUCKET_SECONDS,
      windowSeconds: BUCKET_SECONDS * WINDOW_BUCKETS,
      until: new Date(nowMs).toISOString(),
      points: this.ring.buckets(nowMs).map((b) => ({ at: new Date(b.start).toISOString(), hits: b.hits, misses: b.misses })),
    };
  }

  async flush(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    await writeFileAtomic(this.path, JSON.stringify({ version: 1, bucketSeconds: BUCKET_SECONDS, buckets: this.ring.buckets(Date.now()) }), this.tmpDir);
  }
}
