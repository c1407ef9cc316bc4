import type { CacheHooks, Reservation } from '../registry/registry.js';
import { parseDigest } from '../core/digest.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { Evictor } from './evictor.js';
import type { Recency } from './recency.js';

/** Feeds registry traffic into recency (what to evict last) and the evictor (when to evict). */
export class CacheTracker implements CacheHooks {
  /** Fallbacks served since start, by repository (every worker's, relayed here). */
  readonly fallbacks = new Map<string, number>();

  constructor(
    private readonly blobs: BlobStore,
    readonly recency: Recency,
    readonly evictor: Evictor,
    /** A tier below: a blob it holds exists for a manifest, though not on the local disk. */
    private readonly tierSize?: (digest: string) => Promise<number | undefined>,
  ) {}

  /** Pins first (synchronously, so no eviction step can pass its re-check after this), then looks. */
  async reserve(digests: string[]): Promise<Reservation> {
    this.recency.pin(digests);
    const release = () => this.recency.unpin(digests);
    try {
      const sizes = await Promise.all(digests.map(async (d) => (await this.blobs.locate(parseDigest(d))) ?? (await this.tierSize?.(d))));
      for (const d of digests) this.recency.touchBlob(d);
      return { missing: digests.filter((_, i) => sizes[i] === undefined), release };
    } catch (e) {
      release();
      throw e;
    }
  }

  blobProbed(digest: string): void {
    this.recency.protectBlob(digest);
  }

  blobRead(digest: string): void {
    this.recency.touchBlob(digest);
  }

  written(digest: string): void {
    this.recency.touchBlob(digest);
    this.evictor.check();
  }

  manifestUsed(repo: string, digest: string, tag: string | undefined): void {
    this.recency.touchManifest(repo, digest);
    if (tag !== undefined) this.recency.touchTag(repo, tag);
  }

  storageFull(): void {
    this.evictor.onDiskFull();
  }

  fallbackServed(repo: string): void {
    this.fallbacks.set(repo, (this.fallbacks.get(repo) ?? 0) + 1);
  }
}
