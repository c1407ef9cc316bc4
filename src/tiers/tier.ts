import type { Readable } from 'node:stream';
import type { Digest } from '../core/digest.js';

/**
 * A store below the local disk, addressed by keys relative to its own root (the S3 tier puts its prefix in front).
 * Every method is safe to call concurrently. Nothing read back is trusted: callers verify digests.
 */
export interface Tier {
  /** The object's size, or undefined when there is none. */
  head(key: string): Promise<number | undefined>;
  /** The object's bytes (an inclusive range of them), or undefined when there is none. */
  get(key: string, range?: { start: number; end: number }): Promise<{ body: Readable; size: number } | undefined>;
  /** Stores `size` bytes read from `body()` (called once per attempt) under `key`, replacing what was there. */
  put(key: string, body: () => Readable | Buffer, size: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every key under `prefix` (a key prefix relative to the tier's root). */
  list(prefix: string): AsyncIterable<string>;
}

/** A tier that cannot be reached (network, credentials, a 5xx): the caller answers 503 or retries later. */
export class TierUnavailable extends Error {
  constructor(message: string, readonly cause?: unknown) {
    super(message);
    this.name = 'TierUnavailable';
  }
}

/**
 * Where things live in a tier, mirroring the data directory so that an operator recognises it:
 * `blobs/<alg>/<hex>`, `repositories/<name>/_manifests/<alg>/<hex>.json` (the record: media type, size,
 * references) and `repositories/<name>/_tags/<tag>` (the digest it points to). Names, tags and digests are
 * validated before they get here; `_` cannot start a name component, so keys of different kinds never collide.
 */
export const tierKeys = {
  blob: (d: Pick<Digest, 'algorithm' | 'hex'>) => `blobs/${d.algorithm}/${d.hex}`,
  manifest: (repo: string, d: Pick<Digest, 'algorithm' | 'hex'>) => `repositories/${repo}/_manifests/${d.algorithm}/${d.hex}.json`,
  tag: (repo: string, tag: string) => `repositories/${repo}/_tags/${tag}`,
};

/** The full object key of a tier key under `prefix` ('' = the bucket's root). */
export const prefixed = (prefix: string, key: string): string => (prefix ? `${prefix}/${key}` : key);
