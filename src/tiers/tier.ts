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
  /** Every object under `prefix` (a key prefix relative to the tier's root), with its size and last write. */
  list(prefix: string): AsyncIterable<TierObject>;
}

/** One object of a listing: `modified` is the store's own clock (ms), the last time the object was written. */
export interface TierObject {
  key: string;
  size: number;
  modified: number;
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
  /** Written by any daemon that used the tag since the last write: the bucket's record of its last use. */
  touch: (repo: string, tag: string) => `repositories/${repo}/_touched/${tag}`,
};

/** What a key of the tier is: the inverse of tierKeys (undefined for anything else found in the bucket). */
export type TierKey =
  | { kind: 'blob'; digest: string }
  | { kind: 'manifest'; repo: string; digest: string }
  | { kind: 'tag' | 'touch'; repo: string; tag: string };

export function parseTierKey(key: string): TierKey | undefined {
  let m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(key);
  if (m) return { kind: 'blob', digest: `${m[1]}:${m[2]}` };
  m = /^repositories\/(.+)\/_manifests\/([a-z0-9]+)\/([a-f0-9]+)\.json$/.exec(key);
  if (m) return { kind: 'manifest', repo: m[1]!, digest: `${m[2]}:${m[3]}` };
  m = /^repositories\/(.+)\/_(tags|touched)\/([^/]+)$/.exec(key);
  if (m) return { kind: m[2] === 'tags' ? 'tag' : 'touch', repo: m[1]!, tag: m[3]! };
  return undefined;
}

/** The full object key of a tier key under `prefix` ('' = the bucket's root). */
export const prefixed = (prefix: string, key: string): string => (prefix ? `${prefix}/${key}` : key);
