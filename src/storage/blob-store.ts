import { mkdir, open, readFile, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { sendFile } from './send-file.js';
import { OciError, errnoCode } from '../core/errors.js';
import { digestFromHash, newHash, tryParseDigest, type Digest } from '../core/digest.js';
import { fsyncPath, moveIfExists, storageError, unlinkIfExists, writeFileAtomic, writeStream } from './fs-util.js';
import type { DigestTable } from './digest-table.js';
import type { Layout } from './layout.js';
import type { StoreEvent, StoreListener } from './events.js';
import type { WriteGate } from './write-gate.js';

/** How long another process's removal may hold back a commit of the same digest here, at most. */
const REMOTE_REMOVAL_LIMIT_MS = 30_000;

export interface BlobReader {
  size: number;
  /** When present, called before any response header is sent: a reader from a tier opens its source here, so
   *  that an unreachable tier is a clean error rather than a cut response. */
  ready?(range?: { start: number; end: number }): Promise<void>;
  /** Sends the blob (or an inclusive byte range of it) to `dest` and ends it; closes the reader. */
  sendTo(dest: Writable, range?: { start: number; end: number }): Promise<void>;
  close(): Promise<void>;
}

/** Follows a write as it lands: its temp file, then each running total of bytes on it (read-through readers
 *  stream the file while it grows). */
export interface WriteWatch {
  opened(path: string): void;
  written(total: number): void;
  /** Every byte is written and hashed to the expected digest (the fsync and the commit are still to come). */
  verified(): void;
}

/**
 * Content-addressed blob files, one per digest, shared by every repository. A file appears under its digest only
 * by rename after its content was hashed and fsynced, so a present file is always complete and verified. The size
 * of every blob is kept in memory (in the digest table) so existence checks — BuildKit's HEAD before each push —
 * never touch the disk.
 */
export class BlobStore {
  private readonly knownDirs = new Set<string>();
  /** Blobs whose file is being unlinked (here or by another process): already gone for every lookup, though the
   *  file may still exist; a commit of the same digest waits for the unlink. */
  private readonly deleting = new Map<string, Promise<unknown>>();
  /** Ends another process's removal here (its unlink is done, or it kept the blob). */
  private readonly remoteRemovals = new Map<string, () => void>();
  /** Blobs another process committed again while this one was removing them: the removal must not unlink them. */
  private readonly recommitted = new Set<string>();
  /** Counts removals begun, so that a disk lookup that raced one does not cache what it saw before it. */
  private removals = 0;
  /** Bytes of blobs already gone from every lookup whose files are not unlinked yet: still on the disk. */
  private unlinkingBytes = 0;
  /** Sizes of other processes' removals in progress here, counted in `unlinkingBytes` until their unlink. */
  private readonly remoteSizes = new Map<string, number>();
  private listener: StoreListener | undefined;

  constructor(
    private readonly layout: Layout,
    private readonly table: DigestTable,
    private readonly gate: WriteGate,
  ) {}

  /** Receives every change this process commits (to tell other processes). */
  subscribe(listener: StoreListener): void {
    this.listener = listener;
  }

  /** Applies a change another process committed: memory only. */
  apply(e: StoreEvent): void {
    if (e.type === 'blob-added') {
      this.table.setSize(e.digest, e.size);
      // A commit elsewhere that landed before that process heard of this one's removal: its file is the new one.
      if (this.deleting.has(e.digest) && !this.remoteRemovals.has(e.digest)) this.recommitted.add(e.digest);
      this.endRemoteRemoval(e.digest);
    } else if (e.type === 'blob-removed') {
      this.removals++;
      const size = this.table.size(e.digest);
      this.table.deleteBlob(e.digest);
      if (this.deleting.has(e.digest)) return;
      if (size !== undefined) {
        this.remoteSizes.set(e.digest, size);
        this.unlinkingBytes += size;
      }
      // Until the remover says the file is gone. Bounded, should that word never come (the remover died).
      const ended = new Promise<void>((done) => {
        this.remoteRemovals.set(e.digest, done);
        setTimeout(() => this.endRemoteRemoval(e.digest), REMOTE_REMOVAL_LIMIT_MS).unref();
      });
      this.deleting.set(e.digest, ended);
    } else if (e.type === 'blob-unlinked') {
      this.endRemoteRemoval(e.digest);
    }
  }

  private endRemoteRemoval(digest: string): void {
    const done = this.remoteRemovals.get(digest);
    if (!done) return;
    this.unlinkingBytes -= this.remoteSizes.get(digest) ?? 0;
    this.remoteSizes.delete(digest);
    this.remoteRemovals.delete(digest);
    this.deleting.delete(digest);
    done();
  }

  /**
   * Loads the sizes at start-up: from the index file written at the last clean stop or compaction (see
   * `saveIndex`), reconciled with a listing of the blob tree — a blob the index names but the disk lacks is
   * dropped, and only files the index does not know are stat'ed, each reported with its file time to `onBlob`
   * (the recency tracker seeds blobs it has no record of). Sizes never change under a digest, so a stale index
   * costs only those stats. Returns how the index was used.
   */
  async open(onBlob?: (digest: string, size: number, mtimeMs: number) => void): Promise<{ indexed: number; statted: number; dropped: number }> {
    await mkdir(this.layout.blobs, { recursive: true });
    await mkdir(this.layout.tmp, { recursive: true });
    await this.loadIndex();
    this.table.beginSweep();
    const unknown: { dir: string; digests: Digest[] }[] = [];
    let indexed = 0;
    for (const algorithm of await readdir(this.layout.blobs)) {
      const algoDir = `${this.layout.blobs}/${algorithm}`;
      const prefixes = await readdir(algoDir).catch(() => [] as string[]);
      await Promise.all(
        prefixes.map(async (p) => {
          const dir = `${algoDir}/${p}`;
          const names = await readdir(dir).catch(() => [] as string[]);
          this.knownDirs.add(dir);
          const digests: Digest[] = [];
          for (const name of names) {
            const digest = tryParseDigest(`${algorithm}:${name}`);
            if (!digest) continue;
            if (this.table.markPresent(digest.value)) indexed++;
            else digests.push(digest);
          }
          if (digests.length) unknown.push({ dir, digests });
        }),
      );
    }
    const dropped = this.table.endSweep();
    let statted = 0;
    await Promise.all(
      unknown.map(async ({ dir, digests }) => {
        for (const d of digests) {
          const st = await stat(`${dir}/${d.hex}`).catch(() => undefined);
          if (!st) continue;
          this.table.setSize(d.value, st.size);
          onBlob?.(d.value, st.size, st.mtimeMs);
          statted++;
        }
      }),
    );
    return { indexed, statted, dropped };
  }

  private async loadIndex(): Promise<void> {
    const data = await readFile(this.layout.blobIndex).catch(() => undefined);
    if (!data) return;
    try {
      this.table.decode(data);
    } catch {
      // Written atomically, so a malformed index is foreign or damaged: every blob is stat'ed instead.
    }
  }

  /** Writes the sizes (and last uses) of every blob for the next start-up to read instead of stat'ing. */
  async saveIndex(): Promise<void> {
    await writeFileAtomic(this.layout.blobIndex, this.table.encode(), this.layout.tmp);
  }

  get count(): number {
    return this.table.blobCount;
  }

  /** Bytes of all committed blobs, and of removed ones until their file is unlinked: what they hold on disk. */
  get bytes(): number {
    return this.table.blobBytes + this.unlinkingBytes;
  }

  /** Every blob with its size and last use (seconds; 0 when none is recorded). */
  entries(): IterableIterator<[digest: string, size: number, used: number]> {
    return this.table.blobEntries();
  }

  /** Size of a present blob, from memory. */
  size(digest: string): number | undefined {
    return this.table.size(digest);
  }

  has(digest: string): boolean {
    return this.table.size(digest) !== undefined;
  }

  /**
   * Size of a blob from memory, or — on a miss — from the disk, since another worker process may have committed
   * it a moment before its change event arrived here. Hits never touch the disk.
   */
  async locate(d: Digest): Promise<number | undefined> {
    const known = this.table.size(d.value);
    if (known !== undefined) return known;
    for (;;) {
      if (this.deleting.has(d.value)) return undefined;
      const epoch = this.removals;
      let size: number;
      try {
        size = (await stat(this.layout.blobPath(d))).size;
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return undefined;
        throw e;
      }
      // A removal began while the stat was out: what it saw may be gone now, so look again.
      if (this.removals !== epoch) continue;
      this.table.setSize(d.value, size);
      return size;
    }
  }

  /**
   * Opens a blob for reading. Holding the descriptor keeps the bytes readable even if the file is unlinked
   * (evicted) meanwhile, so a reader that got a reader always receives the whole blob.
   */
  async openReader(d: Digest): Promise<BlobReader | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(this.layout.blobPath(d), 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') {
        this.table.deleteBlob(d.value);
        return undefined;
      }
      throw e;
    }
    const size = this.table.size(d.value) ?? (await fh.stat()).size;
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close();
    };
    return {
      size,
      sendTo: async (dest, range) => {
        try {
          await sendFile(fh, dest, range?.start ?? 0, range?.end ?? size - 1);
        } finally {
          await close();
        }
      },
      close,
    };
  }

  /** A fresh temp path on the same filesystem as the blobs, so commit is a rename. Named after the writing
   *  process so that the leftovers of a worker that died can be removed while the others keep writing. */
  tempPath(): string {
    return `${this.layout.tmp}/${process.pid}-${randomUUID()}`;
  }

  /**
   * Moves a fully written, already fsynced file into place as blob `d`. The caller has verified its digest.
   * Two writers committing the same digest both succeed: rename replaces atomically with identical bytes.
   */
  async commit(path: string, d: Digest, size: number): Promise<void> {
    const dir = this.layout.blobDir(d);
    if (!this.knownDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.knownDirs.add(dir);
    }
    // A re-push racing the eviction of the same digest must land after the unlink, not be removed by it.
    await this.deleting.get(d.value);
    if (this.has(d.value)) {
      await unlinkIfExists(path);
      return;
    }
    await rename(path, this.layout.blobPath(d));
    await fsyncPath(dir);
    this.table.setSize(d.value, size);
    await this.listener?.({ type: 'blob-added', digest: d.value, size });
  }

  /**
   * Streams `source` into a new blob, hashing in the same pass, and commits it only if it hashes to `expected`
   * (and has `expectedSize` bytes, when given). Its bytes are reserved against the budget before they are
   * written (all at once when the size is declared, slab by slab as a chunked body grows). Nothing is left behind
   * on mismatch, refusal or error.
   */
  async write(source: Readable, expected: Digest, expectedSize?: number, watch?: WriteWatch): Promise<number> {
    let size = 0;
    let lease;
    try {
      lease = await this.gate.reserve(expectedSize ?? 0);
    } catch (e) {
      source.resume(); // read and drop the body, so the refusal can be answered on this connection
      throw e;
    }
    try {
      const tmp = await this.writeTemp(async (fh, path) => {
        watch?.opened(path);
        const hash = newHash(expected.algorithm);
        size = await writeStream(source, fh, (c) => hash.update(c), lease.ensure, watch?.written);
        if ((await fh.stat()).size !== size) throw new Error(`wrote ${size} bytes but the file holds a different size`);
        if (expectedSize !== undefined && size !== expectedSize) {
          throw new OciError('SIZE_INVALID', `received ${size} bytes, expected ${expectedSize}`);
        }
        const actual = digestFromHash(hash, expected.algorithm);
        if (actual.value !== expected.value) {
          throw new OciError('DIGEST_INVALID', `content hashes to ${actual.value}, not ${expected.value}`, {
            expected: expected.value,
            actual: actual.value,
          });
        }
        watch?.verified();
      });
      await this.commit(tmp, expected, size);
      return size;
    } finally {
      await lease.release();
    }
  }

  /** Stores small in-memory content (a manifest) whose digest the caller computed from these exact bytes. */
  async writeBuffer(data: Uint8Array, d: Digest): Promise<void> {
    if (this.has(d.value)) return;
    const lease = await this.gate.reserve(data.byteLength);
    try {
      const tmp = await this.writeTemp((fh) => fh.writeFile(data));
      await this.commit(tmp, d, data.byteLength);
    } finally {
      await lease.release();
    }
  }

  /** Fills a new temp file and fsyncs it; the file is removed if filling fails. */
  private async writeTemp(fill: (fh: FileHandle, path: string) => Promise<void>): Promise<string> {
    const tmp = this.tempPath();
    const fh = await open(tmp, 'wx');
    try {
      await fill(fh, tmp);
      await fh.sync();
    } catch (e) {
      await fh.close();
      await unlinkIfExists(tmp);
      throw storageError(e);
    }
    await fh.close();
    return tmp;
  }

  /**
   * Removes a blob: every process stops answering for it first, then its file goes. For an eviction, a process
   * that answered a HEAD or mount for the blob within the grace window (a client may be about to push a manifest
   * that references it without uploading it) keeps it: the removal is undone everywhere and this returns false.
   * The unlink is not fsynced: should a crash undo it, the blob comes back as a complete, verified file that no
   * manifest references (those went, durably, before it), which the next collection removes again. Syncing each
   * blob's directory made a large prune take minutes. With `moveTo` (verify's quarantine) the file is moved there
   * instead of unlinked. `byClient`: a client's DELETE, which a tier below carries out too (an eviction or a
   * repair removes the local copy only).
   */
  async delete(d: Digest, opts: { eviction?: boolean; moveTo?: string; byClient?: boolean } = {}): Promise<boolean> {
    const size = this.table.size(d.value);
    const used = this.table.used(d.value);
    this.removals++;
    this.table.deleteBlob(d.value);
    // Gone for lookups at once, but its bytes stay on the disk (and in the budget) until the unlink: workers may
    // take seconds to acknowledge the removal.
    let unlinking = size ?? 0;
    this.unlinkingBytes += unlinking;
    /** Its bytes now count as present (kept) or gone (unlinked), no longer as being removed. */
    const settleBytes = () => {
      this.unlinkingBytes -= unlinking;
      unlinking = 0;
    };
    // In `deleting` before anyone hears of the removal, so that a commit reported meanwhile is recognised.
    let settled!: () => void;
    this.deleting.set(d.value, new Promise<void>((done) => (settled = done)));
    const removal = (async () => {
      const verdict = await this.listener?.({ type: 'blob-removed', digest: d.value, eviction: opts.eviction, ...(opts.byClient ? { byClient: true } : {}) });
      if (verdict === 'kept' || this.recommitted.delete(d.value)) {
        const kept = this.table.size(d.value) ?? size;
        settleBytes();
        if (kept === undefined) {
          await this.listener?.({ type: 'blob-unlinked', digest: d.value });
        } else {
          this.table.setSize(d.value, kept);
          this.table.setUsed(d.value, used);
          await this.listener?.({ type: 'blob-added', digest: d.value, size: kept });
        }
        return false;
      }
      const path = this.layout.blobPath(d);
      const removed = opts.moveTo ? await moveIfExists(path, opts.moveTo) : await unlinkIfExists(path);
      settleBytes();
      await this.listener?.({ type: 'blob-unlinked', digest: d.value });
      return removed;
    })();
    try {
      return await removal;
    } finally {
      this.deleting.delete(d.value);
      this.recommitted.delete(d.value);
      settleBytes();
      settled();
    }
  }

  /** Temp files belong to writes that were in flight when a process died: none can complete now. Without a pid,
   *  every temp file goes (start-up); with one, only that process's. */
  async removeLeftovers(pid?: number): Promise<number> {
    const all = await readdir(this.layout.tmp).catch(() => [] as string[]);
    const names = pid === undefined ? all : all.filter((n) => n.startsWith(`${pid}-`));
    await Promise.all(names.map((n) => rm(`${this.layout.tmp}/${n}`, { recursive: true, force: true })));
    return names.length;
  }
}
