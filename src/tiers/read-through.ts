import { open, type FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LRUCache } from 'lru-cache';
import { growingLru } from '../core/growing-lru.js';
import PQueue from 'p-queue';
import { OciError, errnoCode } from '../core/errors.js';
import { digestOf, tryParseDigest, type Digest } from '../core/digest.js';
import type { Logger } from '../observability/logger.js';
import type { BlobReader, BlobStore } from '../storage/blob-store.js';
import { toRecord, type ManifestRecordData, type RepositoryStore } from '../storage/repository-store.js';
import { writable } from '../storage/send-file.js';
import type { Reference } from '../registry/names.js';
import { parseTierKey, TierUnavailable, tierKeys, type Tier } from './tier.js';

/**
 * What a process knows of the tier's contents and who fetches what, answered by the data directory's owner (the
 * primary with workers): sizes of blobs it uploaded come from its journal, others from a cached existence check;
 * one fetch per digest at a time in the whole daemon.
 */
export interface TierDirectory {
  blobSize(digest: string): Promise<number | undefined>;
  /** What `blobSize` would answer, when it can without a request or a message (HEAD is answered from memory). */
  knownSize(digest: string): number | undefined;
  /** 'lead': fetch it and `settle`; 'done': another fetch committed it locally; 'failed': that fetch failed. */
  claim(digest: string): Promise<'lead' | 'done' | 'failed'>;
  /** `corrupt`: the tier's bytes did not match the digest; nobody in the daemon reads them through again. */
  settle(digest: string, ok: boolean, corrupt?: boolean): void;
  /** False while a client's delete of this tag or manifest, or this daemon's own push of the tag, has not
   *  reached the tier yet: importing from the tier would undo it. */
  importable(repo: string, ref: { tag: string } | { digest: string }): Promise<boolean>;
  /** Counts bytes read through (for status and metrics). */
  readThrough(bytes: number, ok: boolean): void;
}

/** What a registry needs from the tier: sizes, readers for blobs not on the local disk, and manifests it lacks. */
export interface TierAccess {
  blobSize(digest: string): Promise<number | undefined>;
  knownSize(digest: string): number | undefined;
  openBlob(d: Digest, size: number): BlobReader;
  /** Brings a manifest (and a tag pointing at it) that the bucket has into the local store; false if it has none. */
  importManifest(name: string, ref: Reference): Promise<boolean>;
  /** A tag was served from the local store: at most once per `tagStaleness`, look in the bucket (in the background,
   *  never delaying or failing the answer) whether another daemon pushed it since, and take that push if so. */
  tagServed(name: string, tag: string, digest: string): void;
  /** Starts bringing blobs the tier holds onto the local disk in the background (a manifest was fetched: its
   *  layer GETs follow). */
  warm(digests: string[]): void;
  /** Tags of `name` the tier has; repositories the tier has (empty when it cannot be reached). */
  tags(name: string): Promise<string[]>;
  repositories(): Promise<string[]>;
}

/** Largest manifest record read from a tier (a record lists every reference: a big mode=max index has thousands). */
export const MAX_RECORD_BYTES = 32 * 1024 * 1024;
/** A tag or manifest the bucket lacks is asked for again after this (another daemon may push it meanwhile). */
const MISS_TTL_MS = 5_000;
/** Background fetches after a manifest GET, at once and queued at most. */
const WARM_CONCURRENCY = 2;
const WARM_QUEUE_MAX = 1_000;

/** One blob landing on the local disk from the tier, followed by every reader of it in this process. */
class Landing {
  path: string | undefined;
  written = 0;
  state: 'running' | 'done' | 'failed' = 'running';
  /** The bytes hashed to the digest: readers may send the last byte (the local commit may still be under way). */
  verified = false;
  error: Error | undefined;
  /** Another process landed it: read the local file. */
  local = false;
  private waiters: Array<() => void> = [];

  notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get failed(): boolean {
    return this.state === 'failed';
  }

  changed(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }
}

export async function readAll(body: Readable, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      body.destroy();
      throw new Error(`object larger than ${limit} bytes`);
    }
    parts.push(c);
  }
  return Buffer.concat(parts);
}

const unavailable = (e: unknown) =>
  e instanceof TierUnavailable ? new OciError('TIER_UNAVAILABLE', 'the storage tier cannot be reached now; retry later') : e;

/**
 * Read-through from a tier, in one process: a blob missing locally streams to every client that asks while it lands
 * on the local disk, verified against its digest before it is committed. Readers follow the landing file as it
 * grows, but its last byte is sent only once the digest matched: a blob the tier returns corrupt is refused (the
 * response is cut), never committed, and never read through again (the directory remembers it). A `Range` is an S3 range read.
 */
export class TierView implements TierAccess {
  private readonly landings = new Map<string, Landing>();
  private readonly misses = growingLru<string, true>(10_000, { ttl: MISS_TTL_MS });
  /** Listings of the bucket, reused for a few seconds: tags/list and _catalog must not list the bucket each time. */
  private readonly listings = new LRUCache<string, Promise<string[]>>({ max: 1_000, ttl: MISS_TTL_MS });
  private readonly warming = new PQueue({ concurrency: WARM_CONCURRENCY });
  private readonly warmQueued = new Set<string>();

  constructor(
    private readonly tier: Tier,
    private readonly directory: TierDirectory,
    private readonly blobs: BlobStore,
    private readonly repos: RepositoryStore,
    private readonly maxManifestBytes: number,
    private readonly log: Logger,
    tagStalenessMs: number,
  ) {
    this.looked = growingLru<string, true>(100_000, { ttl: Math.max(1, tagStalenessMs) });
  }

  /** Tags looked up in the bucket within the last `tagStaleness`. */
  private readonly looked: LRUCache<string, true>;

  tagServed(name: string, tag: string, digest: string): void {
    const key = `${name} ${tag}`;
    if (this.looked.has(key)) return;
    this.looked.set(key, true);
    void this.refreshTag(name, tag, digest).catch((e: unknown) =>
      this.log.debug({ repo: name, tag, err: (e as Error).message }, 'tag refresh from the tier failed'),
    );
  }

  private async refreshTag(name: string, tag: string, digest: string): Promise<void> {
    const got = await this.tier.get(tierKeys.tag(name, tag));
    if (!got) return;
    const there = (await readAll(got.body, 1024)).toString('utf8').trim();
    if (there === digest || !tryParseDigest(there)) return;
    // Our own push of it still on its way up: the bucket is the older one.
    if (!(await this.directory.importable(name, { tag }))) return;
    if (this.repos.resolveTag(name, tag) !== digest) return; // changed here meanwhile
    if (await this.fetchManifest(name, { kind: 'tag', tag })) this.log.info({ repo: name, tag, from: digest, to: there }, 'tag taken from the tier: pushed since by another daemon');
  }

  async blobSize(digest: string): Promise<number | undefined> {
    return this.directory.blobSize(digest);
  }

  knownSize(digest: string): number | undefined {
    return this.directory.knownSize(digest);
  }

  openBlob(d: Digest, size: number): BlobReader {
    let ranged: Readable | undefined;
    let landing: Landing | 'local' | undefined;
    return {
      size,
      ready: async (range) => {
        if (range) {
          const got = await this.tier.get(tierKeys.blob(d), range).catch((e: unknown) => Promise.reject(unavailable(e)));
          if (!got) throw new OciError('BLOB_UNKNOWN', `blob ${d.value} is unknown`, { digest: d.value });
          ranged = got.body;
        } else {
          landing = await this.land(d, size);
        }
      },
      sendTo: async (dest, range) => {
        if (ranged) return pipeline(ranged, dest).catch(() => undefined);
        if (landing === undefined) throw new Error('tier reader used before ready()');
        if (landing === 'local') {
          const local = await this.blobs.openReader(d);
          if (!local) return void dest.destroy(new Error(`blob ${d.value} vanished`));
          return local.sendTo(dest, range);
        }
        return this.follow(landing, d, size, dest);
      },
      close: async () => {
        ranged?.destroy();
      },
    };
  }

  warm(digests: string[]): void {
    for (const digest of digests) {
      if (this.warmQueued.has(digest) || this.landings.has(digest) || this.blobs.has(digest)) continue;
      if (this.warmQueued.size >= WARM_QUEUE_MAX) return;
      const d = tryParseDigest(digest);
      if (!d) continue;
      this.warmQueued.add(digest);
      void this.warming.add(async () => {
        try {
          const size = this.blobs.has(digest) ? undefined : await this.blobSize(digest);
          if (size === undefined) return;
          const landing = await this.land(d, size);
          while (landing !== 'local' && landing.state === 'running') await landing.changed();
        } catch {
          // Logged by the landing; a client's own GET tries again.
        } finally {
          this.warmQueued.delete(digest);
        }
      });
    }
  }

  tags(name: string): Promise<string[]> {
    const prefix = tierKeys.tag(name, '');
    return this.listing(prefix, (key) => {
      const tag = key.slice(prefix.length);
      return tag && !tag.includes('/') ? tag : undefined;
    });
  }

  repositories(): Promise<string[]> {
    // A repository is in the tier once one of its manifest records is.
    return this.listing('repositories/', (key) => {
      const k = parseTierKey(key);
      return k?.kind === 'manifest' ? k.repo : undefined;
    });
  }

  private listing(prefix: string, pick: (key: string) => string | undefined): Promise<string[]> {
    let listed = this.listings.get(prefix);
    if (!listed) {
      listed = (async () => {
        const out = new Set<string>();
        for await (const { key } of this.tier.list(prefix)) {
          const v = pick(key);
          if (v !== undefined) out.add(v);
        }
        return [...out];
      })().catch((e: unknown) => {
        this.log.warn({ err: (e as Error).message }, 'listing the tier failed: answering with the local store only');
        this.listings.delete(prefix);
        return [];
      });
      this.listings.set(prefix, listed);
    }
    return listed;
  }

  /** Joins this process's landing of `d`, or starts one (or learns that another process landed it). */
  private async land(d: Digest, size: number): Promise<Landing | 'local'> {
    const current = this.landings.get(d.value);
    if (current) {
      // Joined: wait as the first reader does, until the bytes flow (or another process has them).
      while (current.path === undefined && current.state === 'running' && !current.local) await current.changed();
      if (current.local) return 'local';
      if (current.failed && current.path === undefined) throw current.error ?? new OciError('TIER_UNAVAILABLE', `blob ${d.value} could not be read from the tier`);
      return current;
    }
    const landing = new Landing();
    this.landings.set(d.value, landing);
    const verdict = await this.directory.claim(d.value);
    if (verdict !== 'lead') {
      this.landings.delete(d.value);
      if (verdict === 'done') landing.local = true;
      else {
        landing.state = 'failed';
        landing.error = new OciError('TIER_UNAVAILABLE', `blob ${d.value} could not be read from the tier`);
      }
      landing.notify();
      if (landing.error) throw landing.error;
      return 'local';
    }
    const fail = (e: unknown, corrupt = false) => {
      landing.state = 'failed';
      landing.error = e as Error;
      landing.notify();
      this.landings.delete(d.value);
      this.directory.settle(d.value, false, corrupt);
      this.directory.readThrough(0, false);
    };
    let got;
    try {
      got = await this.tier.get(tierKeys.blob(d));
      if (!got) throw new OciError('BLOB_UNKNOWN', `blob ${d.value} is unknown`, { digest: d.value });
      if (got.size !== size) throw new OciError('BLOB_UNKNOWN', `blob ${d.value} has ${got.size} bytes in the tier, not ${size}`, { digest: d.value });
    } catch (e) {
      got?.body.destroy();
      fail(e);
      throw unavailable(e);
    }
    const body = got.body;
    const watch = {
      opened: (path: string) => {
        landing.path = path;
        landing.notify();
      },
      written: (total: number) => {
        landing.written = total;
        landing.notify();
      },
      verified: () => {
        landing.verified = true;
        landing.notify();
      },
    };
    void this.blobs.write(body, d, size, watch).then(
      () => {
        landing.state = 'done';
        landing.notify();
        this.landings.delete(d.value);
        this.directory.settle(d.value, true);
        this.directory.readThrough(size, true);
      },
      (e: unknown) => {
        const corrupt = e instanceof OciError && (e.code === 'DIGEST_INVALID' || e.code === 'SIZE_INVALID');
        if (corrupt) {
          this.log.error({ digest: d.value, err: e.message }, 'the tier returned a blob that does not match its digest: refused, not committed');
        } else {
          this.log.warn({ digest: d.value, err: (e as Error).message }, 'read-through from the tier failed');
        }
        body.destroy();
        fail(e, corrupt);
      },
    );
    // Room on the local disk is granted before the temp file exists: a refusal (507) is still a clean answer.
    while (landing.path === undefined && landing.state === 'running') await landing.changed();
    if (landing.failed && landing.path === undefined) throw landing.error;
    return landing;
  }

  /** Streams a landing file to `dest` as it grows; the final byte only once the blob hashed to its digest. */
  private async follow(landing: Landing, d: Digest, size: number, dest: Writable): Promise<void> {
    while (landing.path === undefined && landing.state === 'running') await landing.changed();
    if (landing.state === 'failed') return void dest.destroy(landing.error ?? new Error('read-through failed'));
    let fh: FileHandle | undefined;
    try {
      fh = await open(landing.path!, 'r');
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
    if (!fh) {
      // Moved into the blob store (its commit may still be finishing) or removed by a failure: wait for which.
      while (landing.state === 'running') await landing.changed();
      if (landing.state !== 'done') return void dest.destroy(landing.error ?? new Error('read-through failed'));
      const local = await this.blobs.openReader(d);
      if (!local) return void dest.destroy(new Error(`blob ${d.value} vanished`));
      return local.sendTo(dest);
    }
    try {
      let pos = 0;
      for (;;) {
        if (dest.destroyed) return;
        if (landing.failed) return void dest.destroy(landing.error ?? new Error('read-through failed'));
        const limit = landing.state === 'done' || landing.verified ? size : Math.min(landing.written, size - 1);
        if (pos >= size) return void dest.end();
        if (pos >= limit) {
          await landing.changed();
          continue;
        }
        const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, limit - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) return void dest.destroy(new Error('landing file ended early'));
        pos += bytesRead;
        if (!dest.write(buf.subarray(0, bytesRead))) await writable(dest);
      }
    } finally {
      await fh.close();
    }
  }

  async importManifest(name: string, ref: Reference): Promise<boolean> {
    const what = ref.kind === 'tag' ? `t ${name} ${ref.tag}` : `m ${name} ${ref.digest.value}`;
    if (this.misses.has(what)) return false;
    try {
      if (!(await this.directory.importable(name, ref.kind === 'tag' ? { tag: ref.tag } : { digest: ref.digest.value }))) return false;
      const found = await this.fetchManifest(name, ref);
      if (!found) this.misses.set(what, true);
      return found;
    } catch (e) {
      if (e instanceof TierUnavailable) throw unavailable(e);
      this.log.warn({ repo: name, err: (e as Error).message }, 'a manifest in the tier could not be imported');
      return false;
    }
  }

  private async fetchManifest(name: string, ref: Reference): Promise<boolean> {
    let digest: Digest | undefined;
    if (ref.kind === 'tag') {
      const got = await this.tier.get(tierKeys.tag(name, ref.tag));
      if (!got) return false;
      digest = tryParseDigest((await readAll(got.body, 1024)).toString('utf8').trim());
      if (!digest) throw new Error(`tag ${name}:${ref.tag} in the tier holds no digest`);
    } else {
      digest = ref.digest;
    }
    const rec = await this.tier.get(tierKeys.manifest(name, digest));
    if (!rec) return false;
    const data = JSON.parse((await readAll(rec.body, MAX_RECORD_BYTES)).toString('utf8')) as ManifestRecordData;
    if (data.digest !== digest.value || !Array.isArray(data.references)) throw new Error(`manifest record ${name}@${digest.value} in the tier is not that manifest's`);
    if (!this.blobs.has(digest.value)) {
      const got = await this.tier.get(tierKeys.blob(digest));
      if (!got) return false;
      const bytes = await readAll(got.body, this.maxManifestBytes);
      // Never trust the store: the bytes must be the digest's.
      if (digestOf(bytes, digest.algorithm).value !== digest.value) throw new Error(`manifest ${digest.value} in the tier does not match its digest`);
      await this.blobs.writeBuffer(bytes, digest);
    }
    await this.repos.putManifest(name, toRecord(data), ref.kind === 'tag' ? ref.tag : undefined, true);
    return true;
  }
}
