import { link, open, readFile, rename, mkdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { OciError, errnoCode } from '../core/errors.js';

/** fsync by path: of a directory, it makes a rename or unlink durable (without it a crash can forget the entry);
 *  of a file, its content (Linux needs no write access for it). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Directories whose entries a batch of removals changed, each fsynced once when the batch is done (a removal
 * per fsync costs milliseconds; eviction removes thousands). Without one, a removal syncs its directory itself.
 */
export class DirSyncs {
  private readonly dirs = new Set<string>();

  add(dir: string): void {
    this.dirs.add(dir);
  }

  async flush(): Promise<void> {
    const dirs = [...this.dirs];
    this.dirs.clear();
    await Promise.all(dirs.map((d) => fsyncPath(d).catch(() => undefined)));
  }
}

/** fsyncs `dir` now, or leaves it to the batch. */
export async function syncDir(dir: string, batch: DirSyncs | undefined): Promise<void> {
  if (batch) batch.add(dir);
  else await fsyncPath(dir);
}

/** Removes a file; a file that is already gone is not an error (idempotent cleanup). */
export async function unlinkIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

/** Moves a file (same filesystem) to `dest`, creating its folder; a file that is already gone is not an error. */
export async function moveIfExists(path: string, dest: string): Promise<boolean> {
  await mkdir(dirname(dest), { recursive: true });
  try {
    await rename(path, dest);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

/**
 * The JSON a state file holds, or undefined when it is missing, torn or not JSON: a lost state file costs what it
 * recorded (analytics), never the daemon's start.
 */
export async function readJsonState(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Writes small content so that `path` holds either the old or the new bytes after a crash, never a mix:
 * temp file in `tmpDir` (same filesystem), fsync, rename over, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, tmpDir: string, mode = 0o666): Promise<void> {
  const tmp = `${tmpDir}/${randomUUID()}`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlinkIfExists(tmp);
    throw storageError(e);
  }
  await fh.close();
  try {
    await mkdir(dirname(path), { recursive: true });
    await rename(tmp, path);
  } catch (e) {
    await unlinkIfExists(tmp);
    throw storageError(e);
  }
  await fsyncPath(dirname(path));
}

/**
 * Creates `path` with `data` (mode 0600) unless it exists, and returns what it holds: of several processes racing to
 * create it, one wins and all read the winner's bytes; a crash leaves either no file or a whole one (a hard link of
 * a complete, synced temp file).
 */
export async function createFileOnce(path: string, data: Uint8Array, tmpDir: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
  await mkdir(tmpDir, { recursive: true });
  const tmp = `${tmpDir}/${randomUUID()}`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await mkdir(dirname(path), { recursive: true });
    await link(tmp, path);
    await fsyncPath(dirname(path));
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
  } finally {
    await unlinkIfExists(tmp);
  }
  return readFile(path);
}

/** Bytes queued for the disk before reading pauses. Small, so that a request's last bytes are on the file soon after
 *  they arrive: a PATCH is answered only then, and the client sends nothing more until it is (8 MiB chunks: 1.13–1.23×
 *  paired against 4 MiB in bench/ab.mjs --mode chunked; one-PUT and storm unchanged). */
const HIGH_WATER = 1024 * 1024;
/** Written bytes after which their writeback is started while more keep coming (see writeStream). */
export const SYNC_EVERY = 32 * 1024 * 1024;

/**
 * Copies a byte stream to a file handle at its append position, calling `onChunk` (the hasher) on every chunk in
 * the same pass, and `admit` (when given) with the running total before each batch is written; a rejection stops the
 * write with that error. Writes are batched with writev while the network keeps reading; reading pauses once HIGH_WATER
 * bytes wait for the disk, so memory stays bounded whatever the blob size. Resolves with the bytes written once all are
 * written; on a source or write error it rejects only after any in-flight write finished (so the caller may
 * truncate), and lets the source drain so that an error response can still be sent on the same connection.
 */
export function writeStream(
  source: Readable,
  fh: FileHandle,
  onChunk: (chunk: Buffer) => void,
  admit?: (total: number) => Promise<void>,
  /** Told the running total once each batch is on the file (readers may follow a file as it grows). */
  onWritten?: (total: number) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let queue: Buffer[] = [];
    let queued = 0;
    let total = 0;
    let pumping: Promise<void> | undefined;
    let ended = false;
    let settled = false;
    let unsynced = 0;
    let written = 0;
    let syncing: Promise<void> = Promise.resolve();

    const settle = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      source.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (err !== undefined) {
        source.on('error', () => {});
        if (!source.destroyed) source.resume();
      }
      void Promise.resolve(pumping)
        .then(() => syncing)
        .then(
          () => (err === undefined ? resolve(total) : reject(err)),
          (syncErr: unknown) => reject(err ?? syncErr),
        );
    };
    const pump = async (): Promise<void> => {
      try {
        while (queue.length > 0 && !settled) {
          const batch = queue;
          const size = queued;
          queue = [];
          queued = 0;
          // Room for these bytes is granted before they touch the disk, so a write never passes the budget.
          if (admit) await admit(written + size);
          unsynced += await writevAll(fh, batch);
          written += size;
          onWritten?.(written);
          if (unsynced >= SYNC_EVERY) {
            // Start writeback of what is written so far while the network keeps coming, so the fsync at commit
            // finds little left to do: the push then costs max(network, disk) rather than their sum.
            unsynced = 0;
            await syncing;
            syncing = fh.datasync();
          }
          if (!ended) source.resume();
        }
      } catch (e) {
        pumping = undefined;
        settle(e);
        return;
      }
      pumping = undefined;
      if (ended) settle();
    };
    const onData = (chunk: Buffer): void => {
      onChunk(chunk);
      total += chunk.length;
      queue.push(chunk);
      queued += chunk.length;
      if (queued >= HIGH_WATER) source.pause();
      pumping ??= pump();
    };
    const onEnd = (): void => {
      ended = true;
      if (!pumping) settle();
    };
    const onError = (e: unknown): void => settle(e);
    const onClose = (): void => {
      if (!ended) settle(new Error('the client closed the connection before the body was complete'));
    };
    source.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

/**
 * writev until every byte is written: a nearly full disk accepts part of a write before refusing the rest, and a
 * short write taken for a whole one would commit a truncated blob under the full blob's digest.
 */
async function writevAll(fh: FileHandle, bufs: Buffer[]): Promise<number> {
  const total = bufs.reduce((n, b) => n + b.length, 0);
  let done = (await fh.writev(bufs)).bytesWritten;
  while (done < total) {
    const rest: Buffer[] = [];
    let skip = done;
    for (const b of bufs) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    const n = (await fh.writev(rest)).bytesWritten;
    if (n === 0) throw Object.assign(new Error('no space left on device (short write)'), { code: 'ENOSPC' });
    done += n;
  }
  return total;
}

/** A full disk is the client's problem to hear about clearly (and the evictor's to fix), not an internal error. */
export function storageError(e: unknown): unknown {
  const code = errnoCode(e);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new OciError('STORAGE_FULL', 'the cache disk is full; nothing was stored, retry after eviction frees space');
  }
  return e;
}
