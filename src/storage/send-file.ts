import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';

const CHUNK = 1024 * 1024;
const POOL_MAX = 32;
const pool: Buffer[] = [];

/**
 * Read buffers are reused rather than allocated per chunk: a multi-GiB pull through fresh Buffers makes V8 run a
 * full collection every few dozen MiB (external memory pressure), which bounded pull throughput more than I/O did.
 */
const take = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const give = (b: Buffer): void => {
  if (pool.length < POOL_MAX) pool.push(b);
};

/** Resolves when `dest` can take more, or when it is gone (then the caller sees `destroyed`). */
export function writable(dest: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      dest.off('drain', done).off('close', done).off('error', done);
      resolve();
    };
    dest.on('drain', done).on('close', done).on('error', done);
  });
}

/**
 * Streams bytes `start..end` (inclusive) of an open file to `dest` with backpressure, then ends `dest`. The next
 * chunk is read while the previous one is still being sent. A buffer returns to the pool only once `dest` has
 * taken it (its write callback). Stops quietly when `dest` is destroyed (the client went away). Never closes `fh`.
 */
export async function sendFile(fh: FileHandle, dest: Writable, start: number, end: number): Promise<void> {
  let pos = start;
  while (pos <= end) {
    if (dest.destroyed) return;
    const buf = take();
    const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, end - pos + 1), pos);
    if (bytesRead === 0) {
      give(buf);
      // The file is shorter than its index said: never pretend the response is complete.
      dest.destroy(new Error('blob file ended early'));
      return;
    }
    pos += bytesRead;
    const more = dest.write(buf.subarray(0, bytesRead), (err) => {
      if (!err) give(buf);
    });
    if (!more) await writable(dest);
  }
  if (!dest.destroyed) dest.end();
}
