import type { CacheHooks } from '../registry/registry.js';
import type { Evictor } from './evictor.js';
import type { Recency } from './recency.js';

/** Feeds registry traffic into recency (what to evict last) and the evictor (when to evict). */
export class CacheTracker implements CacheHooks {
  constructor(
    readonly recency: Recency,
    readonly evictor: Evictor,
  ) {}

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
}
