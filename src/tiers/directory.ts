import { growingLru } from '../core/growing-lru.js';
import { parseDigest } from '../core/digest.js';
import type { TierDirectory } from './read-through.js';
import { tierKeys, type Tier } from './tier.js';
import type { WriteBack } from './write-back.js';

/** Content is immutable under its digest: a positive answer holds long (retention is days). */
const PRESENT_TTL_MS = 60 * 60_000;
/** Another daemon may upload it any moment. */
const ABSENT_TTL_MS = 5_000;

/**
 * The owner's answers about the tier, for itself and (over IPC) its workers: blob sizes from the write-back
 * journal for content this daemon uploaded — no request — and, for content another daemon wrote, a HEAD whose
 * answer is cached; one fetch per digest at a time in the whole daemon.
 */
export class OwnerDirectory implements TierDirectory {
  private readonly exists = growingLru<string, number>(100_000);
  /** HEADs in flight, shared by concurrent lookups of one digest. */
  private readonly heads = new Map<string, Promise<number | undefined>>();
  /** Blobs whose bytes in the tier did not match their digest: never read through again by this daemon. */
  private readonly corrupt = new Set<string>();
  private readonly fetches = new Map<string, { holder: string; waiters: Array<(v: 'done' | 'failed') => void> }>();

  constructor(
    private readonly tier: Tier,
    private readonly writeBack: WriteBack,
  ) {
    writeBack.onForget((digest) => this.exists.delete(digest));
  }

  knownSize(digest: string): number | undefined {
    if (this.corrupt.has(digest)) return undefined;
    const size = this.writeBack.blobSize(digest) ?? this.exists.get(digest);
    return size !== undefined && size >= 0 ? size : undefined;
  }

  async blobSize(digest: string): Promise<number | undefined> {
    if (this.corrupt.has(digest)) return undefined;
    const known = this.knownSize(digest);
    if (known !== undefined) return known;
    if (this.exists.has(digest)) return undefined; // known absent, for a few seconds
    let head = this.heads.get(digest);
    if (!head) {
      head = this.tier.head(tierKeys.blob(parseDigest(digest))).then(
        (size) => {
          this.exists.set(digest, size ?? -1, { ttl: size === undefined ? ABSENT_TTL_MS : PRESENT_TTL_MS });
          return size;
        },
        // Unreachable: unknown for now (a clean 404), asked again next time.
        () => undefined,
      );
      this.heads.set(digest, head);
      void head.finally(() => this.heads.delete(digest));
    }
    return head;
  }

  claim(digest: string, holder = 'self'): Promise<'lead' | 'done' | 'failed'> {
    if (this.corrupt.has(digest)) return Promise.resolve('failed');
    const f = this.fetches.get(digest);
    if (!f) {
      this.fetches.set(digest, { holder, waiters: [] });
      return Promise.resolve('lead');
    }
    return new Promise((resolve) => f.waiters.push(resolve));
  }

  settle(digest: string, ok: boolean, corrupt = false): void {
    if (corrupt) this.corrupt.add(digest);
    const f = this.fetches.get(digest);
    if (!f) return;
    this.fetches.delete(digest);
    for (const w of f.waiters) w(ok ? 'done' : 'failed');
  }

  /** A worker died: the fetches it led will never settle, so they fail (a waiter's client retries). */
  releaseHolder(holder: string): void {
    for (const [digest, f] of [...this.fetches]) if (f.holder === holder) this.settle(digest, false);
  }

  async importable(repo: string, ref: { tag: string } | { digest: string }): Promise<boolean> {
    return !this.writeBack.unsettled(repo, ref);
  }

  readThrough(bytes: number, ok: boolean): void {
    if (ok) this.writeBack.stats.readThroughBytes += bytes;
    else this.writeBack.stats.readThroughFailures++;
  }
}
