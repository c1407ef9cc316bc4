import { mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { randomUUID, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { OciError, errnoCode } from '../core/errors.js';
import { digestFromHash, newHash, type Digest, type DigestAlgorithm } from '../core/digest.js';
import { storageError, writeStream } from './fs-util.js';
import type { Layout } from './layout.js';
import type { BlobStore } from './blob-store.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadSession {
  id: string;
  repository: string;
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

/**
 * Resumable upload sessions, each a folder with `meta.json` and a `data` file that chunks are appended to.
 * Sessions live on disk, so they survive a restart (or land on another worker); the running sha256 is kept in
 * memory as an optimisation and rebuilt from the file when it is missing or stale. A failed chunk is cut back
 * off the file, so a session only ever holds whole chunks.
 */
export class UploadStore {
  private readonly hashes = new Map<string, HashState>();
  private readonly busy = new Set<string>();

  constructor(
    private readonly layout: Layout,
    private readonly blobs: BlobStore,
    private readonly ttlMs: number,
  ) {}

  async open(): Promise<void> {
    await mkdir(this.layout.uploads, { recursive: true });
  }

  private dataPath(id: string): string {
    return `${this.layout.uploadDir(id)}/data`;
  }

  async create(repository: string): Promise<UploadSession> {
    const id = randomUUID();
    const dir = this.layout.uploadDir(id);
    await mkdir(dir);
    const startedAt = Date.now();
    await writeFile(`${dir}/data`, '');
    await writeFile(`${dir}/meta.json`, JSON.stringify({ repository, startedAt }));
    this.hashes.set(id, { hash: newHash(), offset: 0 });
    return { id, repository, offset: 0, startedAt };
  }

  /** Looks a session up; unknown, malformed or other-repository ids are all BLOB_UPLOAD_UNKNOWN. */
  async get(id: string, repository: string): Promise<UploadSession> {
    const unknown = () => new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} is unknown or expired`);
    if (!UUID_RE.test(id)) throw unknown();
    let meta: { repository?: unknown; startedAt?: unknown };
    let size: number;
    try {
      meta = JSON.parse(await readFile(`${this.layout.uploadDir(id)}/meta.json`, 'utf8'));
      size = (await stat(this.dataPath(id))).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || e instanceof SyntaxError) throw unknown();
      throw e;
    }
    if (meta.repository !== repository) throw unknown();
    return { id, repository, offset: size, startedAt: Number(meta.startedAt) };
  }

  /** Appends one chunk, streamed and hashed in one pass. Returns the new offset. */
  async append(session: UploadSession, body: Readable, opts: ChunkOptions = {}): Promise<number> {
    return this.exclusive(session.id, () => this.appendLocked(session, body, opts));
  }

  private async appendLocked(session: UploadSession, body: Readable, opts: ChunkOptions): Promise<number> {
    const path = this.dataPath(session.id);
    const offset = (await stat(path)).size;
    if (opts.start !== undefined && opts.start !== offset) {
      throw new OciError('UPLOAD_OUT_OF_ORDER', `chunk starts at ${opts.start}, but ${offset} bytes were received`, {
        offset,
      });
    }
    const state = await this.hashState(session.id, offset);
    const before = state.hash.copy();
    const fh = await open(path, 'a');
    try {
      const n = await writeStream(body, fh, (c) => state.hash.update(c));
      if (opts.length !== undefined && n !== opts.length) {
        throw new OciError('SIZE_INVALID', `chunk has ${n} bytes, ${opts.length} were declared`);
      }
      state.offset = offset + n;
      return state.offset;
    } catch (e) {
      // Cut the partial chunk off so the session is exactly as it was before this request.
      await fh.truncate(offset);
      this.hashes.set(session.id, { hash: before, offset });
      throw storageError(e);
    } finally {
      await fh.close();
    }
  }

  /**
   * Completes the upload as blob `expected`, with an optional last chunk. On digest mismatch the session is
   * dropped and nothing is stored.
   */
  async finish(session: UploadSession, expected: Digest, lastChunk?: Readable, opts: ChunkOptions = {}): Promise<number> {
    return this.exclusive(session.id, async () => {
      const offset = lastChunk ? await this.appendLocked(session, lastChunk, opts) : (await stat(this.dataPath(session.id))).size;
      if ((await stat(this.dataPath(session.id))).size !== offset) {
        throw new OciError('BLOB_UPLOAD_INVALID', 'the upload changed while it was being completed; retry the upload');
      }
      const actual = await this.digest(session.id, offset, expected.algorithm);
      if (actual.value !== expected.value) {
        await this.remove(session.id);
        throw new OciError('DIGEST_INVALID', `upload hashes to ${actual.value}, not ${expected.value}`, {
          expected: expected.value,
          actual: actual.value,
        });
      }
      const fh = await open(this.dataPath(session.id), 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.blobs.commit(this.dataPath(session.id), expected, offset);
      await this.remove(session.id);
      return offset;
    });
  }

  async cancel(session: UploadSession): Promise<void> {
    await this.remove(session.id);
  }

  private async remove(id: string): Promise<void> {
    this.hashes.delete(id);
    await rm(this.layout.uploadDir(id), { recursive: true, force: true });
  }

  private async digest(id: string, offset: number, algorithm: DigestAlgorithm): Promise<Digest> {
    if (algorithm === 'sha256') return digestFromHash((await this.hashState(id, offset)).hash.copy(), 'sha256');
    return digestFromHash(await this.hashFile(id, algorithm), algorithm);
  }

  /** The running hash, rebuilt by reading the file when this process does not hold a current one. */
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

  /** One request at a time per session: a concurrent chunk would interleave bytes. */
  private async exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(id)) {
      throw new OciError('UPLOAD_OUT_OF_ORDER', `another request is writing to upload ${id}`);
    }
    this.busy.add(id);
    try {
      return await fn();
    } finally {
      this.busy.delete(id);
    }
  }

  /** Bytes held by upload sessions (they count against the disk budget). A stat per session, no content read. */
  async bytes(): Promise<number> {
    const ids = await readdir(this.layout.uploads).catch(() => [] as string[]);
    const sizes = await Promise.all(ids.map((id) => stat(this.dataPath(id)).then((st) => st.size, () => 0)));
    return sizes.reduce((a, b) => a + b, 0);
  }

  /** Removes sessions idle for longer than the TTL, and folders that never became valid sessions. */
  async sweep(now = Date.now()): Promise<number> {
    let removed = 0;
    for (const id of await readdir(this.layout.uploads).catch(() => [] as string[])) {
      if (this.busy.has(id)) continue;
      const dir = this.layout.uploadDir(id);
      const last = await lastActivity(dir);
      if (last === 0) continue; // finished (and removed) while this sweep ran
      const idle = now - last;
      const valid =
        UUID_RE.test(id) &&
        (await readFile(`${dir}/meta.json`, 'utf8')
          .then((t) => !!JSON.parse(t))
          .catch(() => false));
      // A folder without valid metadata may be a session being created right now: give it a minute.
      if (idle > this.ttlMs || (!valid && idle > 60_000)) {
        await this.remove(id);
        removed++;
      }
    }
    return removed;
  }
}

async function lastActivity(dir: string): Promise<number> {
  const times = await Promise.all([stat(dir), stat(`${dir}/data`)].map((p) => p.then((s) => s.mtimeMs, () => 0)));
  return Math.max(...times);
}
