import { packSha256, SHA256_WORDS, unpackSha256 } from './digest-words.js';

const probe = new Uint32Array(SHA256_WORDS);

/**
 * The distinct digests a manifest record references, kept packed: 32 bytes per sha256 digest rather than a
 * 71-character string, which matters when every blob in the store is listed by some manifest. Lists holding any
 * other algorithm stay plain strings. Serialises (JSON) as the array of digests.
 */
export class DigestList implements Iterable<string> {
  /** Packed sha256 words, or the digests themselves. */
  readonly packed: Uint32Array | readonly string[];

  constructor(digests: readonly string[]) {
    const distinct = [...new Set(digests)];
    const words = new Uint32Array(distinct.length * SHA256_WORDS);
    this.packed = distinct.every((d, i) => packSha256(d, words, i * SHA256_WORDS)) ? words : distinct;
  }

  get length(): number {
    return Array.isArray(this.packed) ? this.packed.length : this.packed.length / SHA256_WORDS;
  }

  *[Symbol.iterator](): IterableIterator<string> {
    const p = this.packed;
    if (Array.isArray(p)) yield* p as readonly string[];
    else for (let at = 0; at < p.length; at += SHA256_WORDS) yield unpackSha256(p as Uint32Array, at);
  }

  includes(digest: string): boolean {
    const p = this.packed;
    if (Array.isArray(p)) return (p as readonly string[]).includes(digest);
    if (!packSha256(digest, probe, 0)) return false;
    const words = p as Uint32Array;
    outer: for (let at = 0; at < words.length; at += SHA256_WORDS) {
      for (let w = 0; w < SHA256_WORDS; w++) if (words[at + w] !== probe[w]) continue outer;
      return true;
    }
    return false;
  }

  toJSON(): string[] {
    return [...this];
  }
}
