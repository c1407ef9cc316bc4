/** Test payloads: small random blobs, and large blobs that are generated piece by piece, never held whole. */
import { createHash, randomBytes } from 'node:crypto';

export const MiB = 1024 * 1024;

/**
 * A large blob of `sizeMiB` MiB, made of 1 MiB pieces cut from a 4 MiB random pool and stamped with their index,
 * so every piece differs and any byte can be regenerated on demand. Its digest is computed by one hashing pass.
 */
export class BigBlob {
  private readonly pool = randomBytes(4 * MiB);
  readonly size: number;
  readonly digest: string;

  constructor(readonly sizeMiB: number) {
    this.size = sizeMiB * MiB;
    const h = createHash('sha256');
    for (let i = 0; i < sizeMiB; i++) h.update(this.piece(i));
    this.digest = `sha256:${h.digest('hex')}`;
  }

  /** Piece `i` (1 MiB). */
  piece(i: number): Buffer {
    const off = (i % 4) * MiB;
    const b = Buffer.from(this.pool.subarray(off, off + MiB));
    b.writeUInt32BE(i, 0);
    b.writeUInt32BE(0x62636364, 4);
    return b;
  }

  /** The bytes from `start` (inclusive) to `end` (exclusive), in pieces of at most 1 MiB. */
  *range(start = 0, end = this.size): Generator<Buffer> {
    for (let pos = start; pos < end; ) {
      const i = Math.floor(pos / MiB);
      const within = pos - i * MiB;
      const take = Math.min(MiB - within, end - pos);
      yield this.piece(i).subarray(within, within + take);
      pos += take;
    }
  }

  /** sha256 of the first `n` bytes. */
  prefixDigest(n: number): string {
    const h = createHash('sha256');
    for (const c of this.range(0, n)) h.update(c);
    return `sha256:${h.digest('hex')}`;
  }
}
