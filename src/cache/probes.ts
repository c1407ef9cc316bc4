import { nowSeconds } from './clock.js';

/**
 * Blobs that answered a HEAD or a mount, each protected from eviction for the grace window after: the client may
 * push a manifest referencing the blob without uploading it. Expired entries go on lookup and on `sweep`.
 */
export class ProbeWindow {
  private readonly until = new Map<string, number>();

  constructor(private readonly graceSeconds: number) {}

  protect(digest: string, now = nowSeconds()): void {
    this.until.set(digest, now + this.graceSeconds);
  }

  has(digest: string, now = nowSeconds()): boolean {
    const until = this.until.get(digest);
    if (until === undefined) return false;
    if (until >= now) return true;
    this.until.delete(digest);
    return false;
  }

  forget(digest: string): void {
    this.until.delete(digest);
  }

  sweep(now = nowSeconds()): void {
    for (const [d, until] of this.until) if (until < now) this.until.delete(d);
  }
}
