import { createHash, randomInt } from 'node:crypto';
import { packSha256, SHA256_WORDS, unpackSha256 } from './digest-words.js';
import type { DigestList } from './digest-list.js';

const EMPTY = -1;
const TOMBSTONE = -2;
/** Index file: magic, one record per blob (see encode), then the sha256 of all that. */
const MAGIC = Buffer.from('BCIDX001');
const CHECKSUM = 32;
const KEY_SHA256 = 0;
const KEY_OTHER = 1;

interface OtherRow {
  size: number;
  used: number;
  refs: number;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * What the daemon keeps in memory for every digest: the size of its blob (if the blob is present), its last use
 * (seconds) and how many manifest records reference it. A store of a million blobs would spend several hundred
 * bytes a digest on Maps keyed by 71-character strings; here a sha256 digest is a row of flat typed arrays (its
 * 32 bytes, size, last use, reference count), found through an open-addressing hash index: under 100 bytes a
 * digest. Digests of other algorithms (sha512, rare) sit in a small Map beside it.
 *
 * A row exists while any of its facts is set; lookups of unknown digests never allocate.
 */
export class DigestTable {
  private keys = new Uint32Array(0);
  private sizes = new Float64Array(0);
  private useds = new Uint32Array(0);
  private refCounts = new Uint32Array(0);
  /** 1 for a row some repository's blob membership names by its number (see BlobMembership): the row must keep
   *  this digest, so it is never freed or reused while the process runs. */
  private pins = new Uint8Array(0);
  private rowsUsed = 0;
  private readonly freeRows: number[] = [];
  /** Hash index: row number, EMPTY or TOMBSTONE. */
  private slots = new Int32Array(16).fill(EMPTY);
  private filledSlots = 0;
  private liveRows = 0;
  private readonly others = new Map<string, OtherRow>();
  private readonly key = new Uint32Array(SHA256_WORDS);
  private slot = 0;
  /** Per-process secret, so that digests chosen to collide in the index cannot be computed ahead. */
  private readonly seed = randomInt(2 ** 32);
  private marks: Uint8Array | undefined;
  private readonly markedOthers = new Set<string>();
  private blobs = 0;
  private bytes = 0;

  get blobCount(): number {
    return this.blobs;
  }

  get blobBytes(): number {
    return this.bytes;
  }

  /** Size of the blob, undefined when it is not present. */
  size(digest: string): number | undefined {
    const row = this.lookup(digest);
    if (typeof row === 'number') return row >= 0 && this.sizes[row]! >= 0 ? this.sizes[row] : undefined;
    return row && row.size >= 0 ? row.size : undefined;
  }

  setSize(digest: string, size: number): void {
    this.update(digest, (r) => {
      const old = this.sizes[r]!;
      this.countBlob(old, size);
      this.sizes[r] = size;
    }, (o) => {
      this.countBlob(o.size, size);
      o.size = size;
    });
  }

  /** The blob is gone: its size and last use go with it (a row stays while manifests reference the digest). */
  deleteBlob(digest: string): void {
    this.update(digest, (r) => {
      this.countBlob(this.sizes[r]!, -1);
      this.sizes[r] = -1;
      this.useds[r] = 0;
    }, (o) => {
      this.countBlob(o.size, -1);
      o.size = -1;
      o.used = 0;
    }, false);
  }

  /** Last use in seconds; 0 when none is recorded. */
  used(digest: string): number {
    const row = this.lookup(digest);
    if (typeof row === 'number') return row >= 0 ? this.useds[row]! : 0;
    return row?.used ?? 0;
  }

  setUsed(digest: string, seconds: number): void {
    this.update(digest, (r) => void (this.useds[r] = seconds), (o) => void (o.used = seconds), seconds > 0);
  }

  /** How many manifest records reference the digest (as their own bytes or as a descriptor). */
  refs(digest: string): number {
    const row = this.lookup(digest);
    if (typeof row === 'number') return row >= 0 ? this.refCounts[row]! : 0;
    return row?.refs ?? 0;
  }

  addRefs(digest: string, by: number): void {
    this.update(digest, (r) => this.addRowRefs(r, by), (o) => void (o.refs = Math.max(0, o.refs + by)), by > 0);
  }

  /** addRefs for each digest of a list, without turning packed digests into strings. */
  addListRefs(list: DigestList, by: number): void {
    const p = list.packed;
    if (!(p instanceof Uint32Array)) {
      for (const d of p) this.addRefs(d, by);
      return;
    }
    for (let at = 0; at < p.length; at += SHA256_WORDS) {
      this.key.set(p.subarray(at, at + SHA256_WORDS));
      this.updateKey((r) => this.addRowRefs(r, by), by > 0);
    }
  }

  private addRowRefs(row: number, by: number): void {
    this.refCounts[row] = Math.max(0, this.refCounts[row]! + by);
  }

  /**
   * The row number of a sha256 digest, created if need be and pinned to it for the life of the process, so that
   * other indexes can name the digest by 4 bytes; -1 for digests of other algorithms (they have no row).
   */
  pin(digest: string): number {
    if (!packSha256(digest, this.key, 0)) return -1;
    let row = this.find();
    if (row < 0) row = this.insert();
    this.pins[row] = 1;
    return row;
  }

  /** The row number of a sha256 digest; -1 when it has none (unknown, or another algorithm). */
  rowOf(digest: string): number {
    return packSha256(digest, this.key, 0) ? this.find() : -1;
  }

  /** Every present blob with its size and last use. */
  *blobEntries(): IterableIterator<[digest: string, size: number, used: number]> {
    for (let r = 0; r < this.rowsUsed; r++) if (this.sizes[r]! >= 0) yield [unpackSha256(this.keys, r * SHA256_WORDS), this.sizes[r]!, this.useds[r]!];
    for (const [d, o] of this.others) if (o.size >= 0) yield [d, o.size, o.used];
  }

  /**
   * Starts reconciling with the blob files on disk: every blob not marked present before `endSweep` is dropped.
   * No new digest may be added in between (rows must not move).
   */
  beginSweep(): void {
    this.marks = new Uint8Array(this.rowsUsed);
    this.markedOthers.clear();
  }

  /** A blob file exists; true when its size is already known. */
  markPresent(digest: string): boolean {
    const row = this.lookup(digest);
    if (typeof row === 'number') {
      if (row < 0) return false;
      this.marks![row] = 1;
      return this.sizes[row]! >= 0;
    }
    if (!row) return false;
    this.markedOthers.add(digest);
    return row.size >= 0;
  }

  /** Drops every known blob that was not marked present; returns how many. */
  endSweep(): number {
    const marks = this.marks!;
    this.marks = undefined;
    const gone: string[] = [];
    for (let r = 0; r < this.rowsUsed; r++) if (!marks[r] && (this.sizes[r]! >= 0 || this.useds[r]! > 0)) gone.push(unpackSha256(this.keys, r * SHA256_WORDS));
    for (const [d, o] of this.others) if (!this.markedOthers.has(d) && (o.size >= 0 || o.used > 0)) gone.push(d);
    this.markedOthers.clear();
    for (const d of gone) this.deleteBlob(d);
    return gone.length;
  }

  /** Sizes and last uses of present blobs, as a file that `decode` reads back. */
  encode(): Buffer {
    const others = [...this.others].filter(([, o]) => o.size >= 0);
    const out = Buffer.allocUnsafe(MAGIC.length + this.blobs * (1 + 4 * SHA256_WORDS + 12) + others.reduce((n, [d]) => n + 3 + d.length, 0) + CHECKSUM);
    let at = MAGIC.copy(out, 0);
    for (let r = 0; r < this.rowsUsed; r++) {
      if (this.sizes[r]! < 0) continue;
      at = out.writeUInt8(KEY_SHA256, at);
      for (let w = 0; w < SHA256_WORDS; w++) at = out.writeUInt32BE(this.keys[r * SHA256_WORDS + w]!, at);
      at = out.writeUInt32BE(this.useds[r]!, out.writeDoubleBE(this.sizes[r]!, at));
    }
    for (const [d, o] of others) {
      at = out.writeUInt16BE(d.length, out.writeUInt8(KEY_OTHER, at));
      at += out.write(d, at, 'latin1');
      at = out.writeUInt32BE(o.used, out.writeDoubleBE(o.size, at));
    }
    at += createHash('sha256').update(out.subarray(0, at)).digest().copy(out, at);
    return out.subarray(0, at);
  }

  /** Loads what `encode` wrote; a later last use already known wins. Throws, having loaded nothing, unless the
   *  file is whole: a wrong size would be served as a blob's Content-Length. */
  decode(file: Buffer): void {
    const data = file.subarray(0, Math.max(0, file.length - CHECKSUM));
    if (!data.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not a blob index');
    if (!createHash('sha256').update(data).digest().equals(file.subarray(data.length))) throw new Error('blob index checksum mismatch');
    for (let at = MAGIC.length; at < data.length; ) {
      const sha256 = data.readUInt8(at) === KEY_SHA256;
      let other = '';
      if (sha256) {
        for (let w = 0; w < SHA256_WORDS; w++) this.key[w] = data.readUInt32BE(at + 1 + 4 * w);
        at += 1 + 4 * SHA256_WORDS;
      } else {
        const len = data.readUInt16BE(at + 1);
        other = data.toString('latin1', at + 3, at + 3 + len);
        at += 3 + len;
      }
      const size = data.readDoubleBE(at);
      const used = data.readUInt32BE(at + 8);
      at += 12;
      if (!(size >= 0)) throw new Error('bad size in blob index');
      if (sha256) {
        this.updateKey((r) => {
          this.countBlob(this.sizes[r]!, size);
          this.sizes[r] = size;
          this.useds[r] = Math.max(this.useds[r]!, used);
        });
      } else {
        this.setSize(other, size);
        if (used > this.used(other)) this.setUsed(other, used);
      }
    }
  }

  private countBlob(oldSize: number, newSize: number): void {
    if (oldSize >= 0) {
      this.blobs--;
      this.bytes -= oldSize;
    }
    if (newSize >= 0) {
      this.blobs++;
      this.bytes += newSize;
    }
  }

  /** A sha256 row number (-1: absent, `this.slot` is where it would go), or another algorithm's entry. */
  private lookup(digest: string): number | OtherRow | undefined {
    if (!packSha256(digest, this.key, 0)) return this.others.get(digest);
    return this.find();
  }

  /** Changes a digest's row, creating it if `create`, and removes it once it holds nothing. */
  private update(digest: string, onRow: (row: number) => void, onOther: (o: OtherRow) => void, create = true): void {
    if (!packSha256(digest, this.key, 0)) {
      let o = this.others.get(digest);
      if (!o) {
        if (!create) return;
        o = { size: -1, used: 0, refs: 0 };
        this.others.set(digest, o);
      }
      onOther(o);
      if (o.size < 0 && o.used === 0 && o.refs === 0) this.others.delete(digest);
      return;
    }
    this.updateKey(onRow, create);
  }

  /** update() for the sha256 digest in `this.key`. */
  private updateKey(onRow: (row: number) => void, create = true): void {
    let row = this.find();
    if (row < 0) {
      if (!create) return;
      row = this.insert();
    }
    onRow(row);
    if (this.sizes[row]! < 0 && this.useds[row] === 0 && this.refCounts[row] === 0 && this.pins[row] === 0) this.remove(row);
  }

  /** Murmur3 over all eight words: real digests are uniform already, but names chosen by clients need not be. */
  private hash(): number {
    let h = this.seed;
    for (let w = 0; w < SHA256_WORDS; w++) {
      let k = Math.imul(this.key[w]!, 0xcc9e2d51);
      k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
      h ^= k;
      h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
    }
    return fmix32(h ^ (4 * SHA256_WORDS));
  }

  private find(): number {
    const mask = this.slots.length - 1;
    let tomb = -1;
    for (let i = this.hash() & mask; ; i = (i + 1) & mask) {
      const r = this.slots[i]!;
      if (r === EMPTY) {
        this.slot = tomb >= 0 ? tomb : i;
        return -1;
      }
      if (r === TOMBSTONE) {
        if (tomb < 0) tomb = i;
      } else if (this.keyAt(r)) {
        this.slot = i;
        return r;
      }
    }
  }

  private keyAt(row: number): boolean {
    const k = this.keys;
    const base = row * SHA256_WORDS;
    for (let w = 0; w < SHA256_WORDS; w++) if (k[base + w] !== this.key[w]) return false;
    return true;
  }

  /** Adds the digest in `this.key` (known absent) as an empty row. */
  private insert(): number {
    if ((this.filledSlots + 1) * 2 > this.slots.length) {
      this.rehash();
      this.find();
    }
    const row = this.freeRows.pop() ?? this.newRow();
    this.keys.set(this.key, row * SHA256_WORDS);
    this.sizes[row] = -1;
    this.useds[row] = 0;
    this.refCounts[row] = 0;
    this.pins[row] = 0;
    if (this.slots[this.slot] === EMPTY) this.filledSlots++;
    this.slots[this.slot] = row;
    this.liveRows++;
    return row;
  }

  private remove(row: number): void {
    this.slots[this.slot] = TOMBSTONE;
    this.sizes[row] = -1;
    this.freeRows.push(row);
    this.liveRows--;
  }

  private newRow(): number {
    if (this.rowsUsed === this.sizes.length) {
      if (this.marks) throw new Error('digest table grew during a sweep');
      const cap = Math.max(1024, Math.ceil(this.sizes.length * 1.5));
      const grow = <T extends Uint8Array | Uint32Array | Float64Array>(old: T, n: number, make: (n: number) => T): T => {
        const next = make(n);
        next.set(old);
        return next;
      };
      this.keys = grow(this.keys, cap * SHA256_WORDS, (n) => new Uint32Array(n));
      this.sizes = grow(this.sizes, cap, (n) => new Float64Array(n));
      this.useds = grow(this.useds, cap, (n) => new Uint32Array(n));
      this.refCounts = grow(this.refCounts, cap, (n) => new Uint32Array(n));
      this.pins = grow(this.pins, cap, (n) => new Uint8Array(n));
    }
    return this.rowsUsed++;
  }

  /** Rebuilds the index at a load of at most 1/4, dropping tombstones. */
  private rehash(): void {
    let cap = 16;
    while (cap < (this.liveRows + 1) * 4) cap *= 2;
    const slots = new Int32Array(cap).fill(EMPTY);
    const mask = cap - 1;
    const saved = Uint32Array.from(this.key);
    for (const r of this.slots) {
      if (r < 0) continue;
      this.key.set(this.keys.subarray(r * SHA256_WORDS, (r + 1) * SHA256_WORDS));
      let i = this.hash() & mask;
      while (slots[i] !== EMPTY) i = (i + 1) & mask;
      slots[i] = r;
    }
    this.key.set(saved);
    this.slots = slots;
    this.filledSlots = this.liveRows;
  }
}
