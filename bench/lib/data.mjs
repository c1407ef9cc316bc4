// Benchmark payloads: every blob is a 32-byte header unique to the blob followed by one shared pseudo-random
// buffer repeated, so generating bytes costs nothing (subarrays, no copies) while every blob has its own digest.
import { createHash, randomBytes } from 'node:crypto';

export const MiB = 1024 * 1024;
const HEADER = 32;
const SLICE = 1 * MiB;

let pool;
/** The shared 16 MiB random buffer (incompressible, so no layer of the stack can cheat on it). */
export function randomPool() {
  pool ??= randomBytes(16 * MiB);
  return pool;
}

/**
 * A blob described by a label and a size; `digest` is filled by `digestOf` before any timing starts.
 * @returns {{label: string, size: number, header: Buffer, digest?: string}}
 */
export function blobSpec(label, size) {
  const header = createHash('sha256').update(`buildcached-bench:${label}:${size}`).digest();
  return { label, size, header };
}

/** Yields the bytes [start, end) of a blob as subarrays of at most 1 MiB; nothing is copied. */
export function* slices(spec, start = 0, end = spec.size) {
  const buf = randomPool();
  let p = start;
  while (p < end) {
    if (p < HEADER) {
      const stop = Math.min(HEADER, end);
      yield spec.header.subarray(p, stop);
      p = stop;
      continue;
    }
    const off = (p - HEADER) % buf.length;
    const n = Math.min(end - p, buf.length - off, SLICE);
    yield buf.subarray(off, off + n);
    p += n;
  }
}

/** Computes (once) and returns the sha256 digest of a blob. */
export function digestOf(spec) {
  if (!spec.digest) {
    const h = createHash('sha256');
    for (const s of slices(spec)) h.update(s);
    spec.digest = `sha256:${h.digest('hex')}`;
  }
  return spec.digest;
}

/** The expected first bytes of a blob, to spot-check a pull without hashing it. */
export function headOf(spec, n = HEADER) {
  return Buffer.concat([...slices(spec, 0, Math.min(n, spec.size))]);
}

/** Small in-memory content (a cache config, a manifest) as a blob-like object. */
export function bufferSpec(label, bytes) {
  return { label, size: bytes.length, bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}
