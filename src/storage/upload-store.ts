import { mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { randomUUID, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { OciError, errnoCode } from '../core/errors.js';
import { digestFromHash, newHash, type Digest, type DigestAlgorithm } from '../core/digest.js';
import { fsyncPath, storageError, SYNC_EVERY, writeStream } from './fs-util.js';
import type { Layout } from './layout.js';
import type { BlobStore } from './blob-store.js';
import type { WriteGate } from './write-gate.js';

const ignore = (): void => {};

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadSession {
  id: string;
  repository: string;
  /** The address that started it (for the per-client cap, and push coalescing's claims). */
  client: string;
  /** Bytes received so far; the data file's size is the source of truth. */
  offset: number;
  startedAt: number;
}

export interface ChunkOptions {
  /** First byte of the chunk when the client sent Content-Range; must equal the current offset. */
  start?: number;
  /** Declared chunk length (Content-Length or Content-Range span); a body of any other length is rejected. */
  length?: number;
}

/** Running hash of a session's data file, valid while `offset` equals the file size. */
interface HashState {
  hash: Hash;
  offset: number;
}

/** What a session's chunks have written since its file was last synced, and the sync started in the background. */
interface Writeback {
  unsynced: number;
  syncing?: Promise<void>;
}

/** A session found on disk at start-up. */
export interface FoundSession {
  id: string;
  client: string;
  startedAt: number;
  lastActive: number;
  bytes: number;
}

/**
 * Resumable upload sessions, each a folder with `meta.json` and a `data` file that chunks are appended to.
 * Sessions live on disk, so they survive a restart (or land on another worker). Who may write to a session is
 * decided by the daemon's one write gate, for every process at once: a request appends or completes only while it
 * holds the session's lease, which ends only after its file handle is closed, so a completed session's file — moved
 * into the blob store by rename — has no other writer left. The running sha256 is kept in memory as an
 * optimisation and rebuilt from the file when it is missing or stale (another process wrote since). A failed chunk
 * is cut back off the file, so a session only ever holds whole chunks.
 */
export class UploadStore {
  /** Bounded: sessions completed by another process leave their entry here. */
  private readonly hashes = new LRUCache<string, HashState>({ max: 1024 });
  /** Bounded alike; an entry lost only means a longer fsync at completion. */
  private readonly writeback = new LRUCache<string, Writeback>({ max: 1024 });

  constructor(
    private readonly layout: Layout,
    private readonly blobs: BlobStore,
    private readonly gate: WriteGate,
  ) {}

  async open(): Promise<void> {
    await mkdir(this.layout.uploads, { recursive: true });
  }

  private dataPath(id: string): string {
    return `${this.layout.uploadDir(id)}/data`;
  }

  /** Starts a session for `client` (its address, for the per-client cap); refused past the caps, nothing written. */
  async create(repository: string, client: string): Promise<UploadSession> {
    const id = randomUUID();
    await this.gate.openSession(id, client);
    const dir = this.layout.uploadDir(id);
    const startedAt = Date.now();
    try {
      await mkdir(dir);
      await writeFile(`${dir}/data`, '');
      await writeFile(`${dir}/meta.json`, JSON.stringify({ repository, startedAt, client }));
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      await this.gate.closeSession(id);
      throw storageError(e);
    }
    this.hashes.set(id, { hash: newHash(), offset: 0 });
    return { id, repository, client, offset: 0, startedAt };
  }

  /** Looks a session up; unknown, malformed or other-repository ids are all BLOB_UPLOAD_UNKNOWN. */
  async get(id: string, repository: string): Promise<UploadSession> {
    const unknown = () => new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} is unknown or expired`);
    if (!UUID_RE.test(id)) throw unknown();
    let meta: { repository?: unknown; startedAt?: unknown; client?: unknown };
    let size: number;
    try {
      meta = JSON.parse(await readFile(`${this.layout.uploadDir(id)}/meta.json`, 'utf8'));
      size = (await stat(this.dataPath(id))).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || e instanceof SyntaxError) throw unknown();
      throw e;
    }
    if (meta.repository !== repository) throw unknown();
    return { id, repository, client: String(meta.client ?? ''), offset: size, startedAt: Number(meta.startedAt) };
  }

  /** Appends one chunk, streamed and hashed in one pass. Returns the new offset. */
  async append(session: UploadSession, body: Readable, opts: ChunkOptions = {}): Promise<number> {
    return this.exclusive(session.id, body, opts.length ?? 0, (admit) => this.appendLocked(session, body, opts, admit));
  }

  private async appendLocked(session: UploadSession, body: Readable, opts: ChunkOptions, admit: Admit): Promise<number> {
    const path = this.dataPath(session.id);
    const offset = (await stat(path)).size;
    if (opts.start !== undefined && opts.start !== offset) {
      throw new OciError('UPLOAD_OUT_OF_ORDER', `chunk starts at ${opts.start}, but ${offset} bytes were received`, {
        offset,
      });
    }
    // Without a current hash here (the last chunk went through another worker), this chunk is not hashed and the
    // completion hashes the file once: rebuilding the hash at every change of worker would read the session
    // again per chunk, quadratic in its size. A first chunk has nothing to read: its hash starts here (a session
    // created on one worker and then written through another stays hashed in one pass).
    const known = this.hashes.get(session.id);
    let state = known?.offset === offset ? known : undefined;
    if (!state && offset === 0) this.hashes.set(session.id, (state = { hash: newHash(), offset: 0 }));
    const before = state?.hash.copy();
    const fh = await open(path, 'a');
    try {
      const n = await writeStream(body, fh, state ? (c) => state.hash.update(c) : ignore, admit);
      if (opts.length !== undefined && n !== opts.length) {
        throw new OciError('SIZE_INVALID', `chunk has ${n} bytes, ${opts.length} were declared`);
      }
      if (state) state.offset = offset + n;
      this.written(session.id, path, n);
      return offset + n;
    } catch (e) {
      // Cut the partial chunk off so the session is exactly as it was before this request.
      await fh.truncate(offset);
      if (before) this.hashes.set(session.id, { hash: before, offset });
      throw storageError(e);
    } finally {
      await fh.close();
    }
  }

  /**
   * Completes the upload as blob `expected`, with an optional last chunk. A completion refused for its content
   * (digest mismatch, wrong length, too large, no room) ends the session and stores nothing: clients start such
   * an upload again rather than resume it, and a session left behind would only count against the caps until it
   * expired. One that failed otherwise (a chunk out of order, a dropped connection) keeps the session to resume.
   */
  async finish(session: UploadSession, expected: Digest, lastChunk?: Readable, opts: ChunkOptions = {}): Promise<number> {
    // Room for the last chunk is asked for inside, so that a refusal of it ends the session too.
    return this.exclusive(session.id, lastChunk, 0, async (admit) => {
      try {
        if (opts.length) await admit(opts.length);
        const path = this.dataPath(session.id);
        const offset = lastChunk ? await this.appendLocked(session, lastChunk, opts, admit) : (await stat(path)).size;
        const actual = await this.digest(session.id, offset, expected.algorithm);
        if (actual.value !== expected.value) {
          throw new OciError('DIGEST_INVALID', `upload hashes to ${actual.value}, not ${expected.value}`, {
            expected: expected.value,
            actual: actual.value,
          });
        }
        await this.writeback.get(session.id)?.syncing;
        const fh = await open(path, 'r+');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        await this.blobs.commit(path, expected, offset);
        await this.remove(session.id);
        return offset;
      } catch (e) {
        if (e instanceof OciError && ENDS_SESSION.has(e.code)) await this.remove(session.id);
        throw e;
      }
    });
  }

  /** Cancels a session; refused while a request is writing to it (that request still has its file open). */
  async cancel(session: UploadSession): Promise<void> {
    await this.exclusive(session.id, undefined, 0, () => this.remove(session.id));
  }

  /** Removes a session's folder, then its entry with the gate (which ends the caller's lease, if any). */
  private async remove(id: string): Promise<void> {
    this.hashes.delete(id);
    this.writeback.delete(id);
    await rm(this.layout.uploadDir(id), { recursive: true, force: true });
    await this.gate.closeSession(id);
  }

  /**
   * After a chunk: once enough of the session is unsynced, its writeback starts in the background, so a chunked
   * push pays max(network, disk) rather than their sum at its final fsync (as a one-request push does, in
   * writeStream). Never awaited by the chunk; the completion's own fsync reports any error.
   */
  private written(id: string, path: string, bytes: number): void {
    const w = this.writeback.get(id) ?? { unsynced: 0 };
    this.writeback.set(id, w);
    w.unsynced += bytes;
    if (w.unsynced < SYNC_EVERY || w.syncing) return;
    w.unsynced = 0;
    // A file gone meanwhile (its session ended) has nothing left to sync; the completion's fsync reports failures.
    w.syncing = fsyncPath(path)
      .catch(() => undefined)
      .finally(() => (w.syncing = undefined));
  }

  private async digest(id: string, offset: number, algorithm: DigestAlgorithm): Promise<Digest> {
    if (algorithm === 'sha256') return digestFromHash((await this.hashState(id, offset)).hash.copy(), 'sha256');
    return digestFromHash(await this.hashFile(id, algorithm), algorithm);
  }

  /** The running hash, rebuilt by reading the file when this process does not hold a current one (at completion). */
  private async hashState(id: string, offset: number): Promise<HashState> {
    const known = this.hashes.get(id);
    if (known && known.offset === offset) return known;
    const state = { hash: await this.hashFile(id, 'sha256'), offset };
    this.hashes.set(id, state);
    return state;
  }

  private async hashFile(id: string, algorithm: DigestAlgorithm): Promise<Hash> {
    const hash = newHash(algorithm);
    const fh = await open(this.dataPath(id), 'r');
    for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
    return hash;
  }

  /**
   * Runs `fn` as the session's one writer in the whole daemon, with room reserved for `bytes` (the declared chunk). The
   * lease ends (with the size the file has then) only after `fn`, which closes every handle it opened, is done.
   * A body refused here is read and dropped, so the refusal can be answered on the same connection.
   */
  private async exclusive<T>(id: string, body: Readable | undefined, bytes: number, fn: (admit: Admit) => Promise<T>): Promise<T> {
    let lease;
    try {
      lease = await this.gate.lockSession(id, bytes);
    } catch (e) {
      body?.resume();
      throw e;
    }
    try {
      return await fn(lease.ensure);
    } finally {
      await lease.unlock(await this.sizeOf(id));
    }
  }

  /** The sessions on disk, for the gate's book at start-up; folders that never became valid sessions are removed
   *  (nothing else runs yet, so none is being created). */
  async scan(): Promise<FoundSession[]> {
    const found: FoundSession[] = [];
    for (const id of await readdir(this.layout.uploads).catch(() => [] as string[])) {
      const dir = this.layout.uploadDir(id);
      const meta = UUID_RE.test(id)
        ? await readFile(`${dir}/meta.json`, 'utf8')
            .then((t) => JSON.parse(t) as { startedAt?: unknown; client?: unknown })
            .catch(() => undefined)
        : undefined;
      const data = meta ? await stat(`${dir}/data`).catch(() => undefined) : undefined;
      if (!meta || !data || typeof meta.startedAt !== 'number') {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      found.push({ id, client: String(meta.client ?? ''), startedAt: meta.startedAt, lastActive: data.mtimeMs, bytes: data.size });
    }
    return found;
  }

  /** A session's data size on disk, 0 once it is gone (after a request, or after a process writing to it died). */
  async sizeOf(id: string): Promise<number> {
    return stat(this.dataPath(id)).then((st) => st.size, () => 0);
  }

  /** Removes the given sessions (expired, as the gate's owner decided); one a request holds now is left alone. */
  async expire(ids: string[]): Promise<number> {
    let removed = 0;
    for (const id of ids) {
      try {
        await this.exclusive(id, undefined, 0, () => this.remove(id));
        removed++;
      } catch (e) {
        if (!(e instanceof OciError)) throw e;
      }
    }
    return removed;
  }
}

/** Refusals of a completing PUT's content, after which the session is of no use to anyone. */
const ENDS_SESSION = new Set<string>(['DIGEST_INVALID', 'SIZE_INVALID', 'UPLOAD_TOO_LARGE', 'NO_ROOM', 'STORAGE_FULL']);

/** Grants room for the bytes a request has written in total (see SessionLease.ensure). */
type Admit = (total: number) => Promise<void>;
