import { join } from 'node:path';
import type { BlobStore } from '../storage/blob-store.js';
import { readJsonState, writeFileAtomic } from '../storage/fs-util.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import { nowSeconds } from './clock.js';
import { reachable } from './inventory.js';

/** What one request did to a cache reference, as the HTTP layer saw it (see http/activity.ts); `at`: when its
 *  answer ended (epoch ms, stamped by the process that served it). */
export type ReferenceActivity = { at: number } & (
  /** A manifest PUT under a tag (a BuildKit export); the cache config blob's size when the manifest lists one. */
  | { kind: 'push'; repo: string; tag: string; cacheConfigBytes?: number }
  /** A manifest GET by tag (a BuildKit import). */
  | { kind: 'pull'; repo: string; tag: string }
  /** A blob HEAD: found (the upload it would have been is skipped) or not. */
  | { kind: 'probe'; repo: string; digest: string; hit: boolean }
  /** Blob bytes sent by a GET. */
  | { kind: 'served'; repo: string; digest: string; bytes: number }
);

/** The running figures of one repo:tag. Times in epoch seconds. */
export interface ReferenceCounters {
  pushes: number;
  pulls: number;
  /** Blobs of its exports that a HEAD found already stored, so that BuildKit did not upload them. */
  uploadsSkipped: number;
  /** Their bytes: what the cache saved the exporters from sending. */
  savedBytes: number;
  /** Blobs of its exports that a HEAD did not find (uploaded). */
  uploaded: number;
  blobsServed: number;
  servedBytes: number;
  lastPush?: number;
  lastImport?: number;
  /** Size of the cache config blob at the last push, when the manifest listed one. */
  cacheConfigBytes?: number;
}

/** BuildKit's importer refuses a cache config blob larger than this. */
export const MAX_CACHE_CONFIG_BYTES = 1024 * 1024;
/** An import whose layers were never fetched is only worth a warning once the importer had time to fetch them. */
export const FETCH_GRACE_SECONDS = 600;

export type ReferenceWarning = 'cache-config-too-large' | 'imported-layers-never-fetched';

/** The warnings that matter to a BuildKit user, from a reference's figures. Pure. */
export function referenceWarnings(c: ReferenceCounters, now: number): ReferenceWarning[] {
  const out: ReferenceWarning[] = [];
  if ((c.cacheConfigBytes ?? 0) > MAX_CACHE_CONFIG_BYTES) out.push('cache-config-too-large');
  if (c.pulls > 0 && c.blobsServed === 0 && c.lastImport !== undefined && now - c.lastImport >= FETCH_GRACE_SECONDS) {
    out.push('imported-layers-never-fetched');
  }
  return out;
}

/** Share of its exported blobs the cache already had (skipped uploads), or null before any export was seen. */
export function hitRate(c: ReferenceCounters): number | null {
  const seen = c.uploadsSkipped + c.uploaded;
  return seen === 0 ? null : c.uploadsSkipped / seen;
}

export const emptyCounters = (): ReferenceCounters => ({ pushes: 0, pulls: 0, uploadsSkipped: 0, savedBytes: 0, uploaded: 0, blobsServed: 0, servedBytes: 0 });
const recency = (c: ReferenceCounters) => Math.max(c.lastPush ?? 0, c.lastImport ?? 0);

/** Probes remembered per repository until the manifest that explains them arrives. */
const MAX_PENDING_PER_REPO = 20_000;

export interface Probe {
  digest: string;
  hit: boolean;
  /** Epoch ms. */
  at: number;
}

/**
 * A repository's probes in arrival order, bounded. The oldest are dropped by moving a start index and cut off the
 * array in one go once they are half of it, so that adding costs O(1) amortised even at the cap (a splice per
 * probe copies the whole list each time: ~100 µs at 20 000, on every HEAD).
 */
export class ProbeQueue {
  private items: Probe[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  /** Adds `p`, dropping the probes before `horizon` (epoch ms) and the oldest beyond `max`. */
  add(p: Probe, horizon: number, max: number): void {
    this.items.push(p);
    while (this.head < this.items.length && (this.items.length - this.head > max || this.items[this.head]!.at < horizon)) this.head++;
    if (this.head > 0 && 2 * this.head >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** Removes the probes `take` accepts and returns them, oldest first; the others stay in order. */
  take(take: (p: Probe) => boolean): Probe[] {
    const taken: Probe[] = [];
    const rest: Probe[] = [];
    for (let i = this.head; i < this.items.length; i++) (take(this.items[i]!) ? taken : rest).push(this.items[i]!);
    this.items = rest;
    this.head = 0;
    return taken;
  }
}

interface Tracked {
  repo: string;
  tag: string;
  counters: ReferenceCounters;
  /** The blobs of the manifest the tag pointed to when last looked at, for attributing blob reads. */
  reach?: { digest: string; blobs: Set<string> };
}

/**
 * Per-reference analytics, kept by the store's owner from every process's request activity: pushes, imports,
 * the uploads a HEAD hit saved, the bytes served. In memory, bounded (`maxReferences`; the least recently used
 * reference is dropped), saved to state/references.json on the recency flush.
 *
 * A HEAD cannot say which reference it is for; BuildKit HEADs each blob, uploads the missing ones, then PUTs the
 * manifest under its tag. So probes wait per repository (for `pendingSeconds`, the push grace window), and the
 * manifest PUT claims those of its own blobs: each hit a skipped upload, each miss an upload.
 */
export class ReferenceStats {
  /** By repository, then tag: a blob read is attributed among its repository's references only. */
  private readonly refs = new Map<string, Map<string, Tracked>>();
  private count = 0;
  /** Blob HEADs per repository, in arrival order, waiting for the manifest PUT that explains them. */
  private readonly pending = new Map<string, ProbeQueue>();
  private dirty = false;

  constructor(
    private readonly repos: RepositoryStore,
    private readonly blobs: BlobStore,
    private readonly stateDir: string,
    private readonly tmpDir: string,
    private readonly maxReferences: number,
    private readonly pendingSeconds: number,
    /** With several worker processes, a HEAD answered by one may be reported after the PUT another answered:
     *  a push claims the probes answered before it this much later, past the workers' batching of signals. */
    private readonly claimDelayMs = 0,
  ) {}

  private get path(): string {
    return join(this.stateDir, 'references.json');
  }

  async open(): Promise<void> {
    const list = ((await readJsonState(this.path)) as { references?: unknown } | undefined)?.references;
    if (!Array.isArray(list)) return;
    for (const r of list as Array<{ repo?: unknown; tag?: unknown; counters?: unknown }>) {
      if (typeof r.repo !== 'string' || typeof r.tag !== 'string' || typeof r.counters !== 'object' || r.counters === null) continue;
      this.tracked(r.repo, r.tag).counters = { ...emptyCounters(), ...(r.counters as Partial<ReferenceCounters>) };
    }
  }

  async flush(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    await writeFileAtomic(this.path, JSON.stringify({ version: 1, references: this.entries() }), this.tmpDir);
  }

  record(a: ReferenceActivity, now = nowSeconds()): void {
    this.dirty = true;
    switch (a.kind) {
      case 'probe':
        return this.probe(a.repo, a.digest, a.hit, a.at);
      case 'push':
        return this.push(a.repo, a.tag, a.cacheConfigBytes, now, a.at);
      case 'pull': {
        const c = this.tracked(a.repo, a.tag).counters;
        c.pulls++;
        c.lastImport = now;
        return;
      }
      case 'served':
        for (const t of this.refs.get(a.repo)?.values() ?? []) {
          if (!this.reachOf(t)?.has(a.digest)) continue;
          t.counters.blobsServed++;
          t.counters.servedBytes += a.bytes;
        }
    }
  }

  /** Every tracked reference with its figures. */
  entries(): Array<{ repo: string; tag: string; counters: ReferenceCounters }> {
    return [...this.refs.values()].flatMap((tags) => [...tags.values()].map(({ repo, tag, counters }) => ({ repo, tag, counters })));
  }

  /** The figures of repo:tag, if tracked. */
  get(repo: string, tag: string): ReferenceCounters | undefined {
    return this.refs.get(repo)?.get(tag)?.counters;
  }

  private probe(repo: string, digest: string, hit: boolean, at: number): void {
    let q = this.pending.get(repo);
    if (!q) this.pending.set(repo, (q = new ProbeQueue()));
    q.add({ digest, hit, at }, at - this.pendingSeconds * 1000, MAX_PENDING_PER_REPO);
  }

  private push(repo: string, tag: string, cacheConfigBytes: number | undefined, now: number, at: number): void {
    const t = this.tracked(repo, tag);
    const c = t.counters;
    c.pushes++;
    c.lastPush = now;
    if (cacheConfigBytes === undefined) delete c.cacheConfigBytes;
    else c.cacheConfigBytes = cacheConfigBytes;
    if (this.claimDelayMs === 0) this.claim(t, at);
    else setTimeout(() => this.claim(t, at), this.claimDelayMs).unref();
  }

  /**
   * Counts the probes of a push's own blobs answered before it (at `at`), the last one per blob: a hit is a
   * skipped upload, a miss an upload. Those probes are used up; later ones wait for the next push.
   */
  private claim(t: Tracked, at: number): void {
    this.dirty = true;
    const q = this.pending.get(t.repo);
    const reach = this.reachOf(t);
    if (!q || !reach) return;
    const last = new Map<string, boolean>();
    for (const p of q.take((p) => p.at <= at && reach.has(p.digest))) last.set(p.digest, p.hit);
    const c = t.counters;
    for (const [d, hit] of last) {
      if (hit) {
        c.uploadsSkipped++;
        c.savedBytes += this.blobs.size(d) ?? 0;
      } else {
        c.uploaded++;
      }
    }
    if (q.size === 0) this.pending.delete(t.repo);
  }

  /** The blobs of the manifest the tag points to now, recomputed only when the tag moved. */
  private reachOf(t: Tracked): Set<string> | undefined {
    const digest = this.repos.resolveTag(t.repo, t.tag);
    if (!digest) return undefined;
    if (t.reach?.digest !== digest) t.reach = { digest, blobs: reachable(this.repos, t.repo, digest) };
    return t.reach.blobs;
  }

  private tracked(repo: string, tag: string): Tracked {
    let tags = this.refs.get(repo);
    const found = tags?.get(tag);
    if (found) return found;
    if (this.count >= this.maxReferences) this.dropLeastRecent();
    if (!tags) this.refs.set(repo, (tags = new Map()));
    const t: Tracked = { repo, tag, counters: emptyCounters() };
    tags.set(tag, t);
    this.count++;
    return t;
  }

  private dropLeastRecent(): void {
    let oldest: Tracked | undefined;
    for (const tags of this.refs.values()) for (const t of tags.values()) if (!oldest || recency(t.counters) < recency(oldest.counters)) oldest = t;
    if (!oldest) return;
    const tags = this.refs.get(oldest.repo)!;
    tags.delete(oldest.tag);
    if (tags.size === 0) this.refs.delete(oldest.repo);
    this.count--;
  }
}
