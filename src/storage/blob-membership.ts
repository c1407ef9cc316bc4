import { mkdir, open, readFile, readdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errnoCode } from '../core/errors.js';
import type { DigestTable } from './digest-table.js';
import { fsyncPath, storageError, writeFileAtomic } from './fs-util.js';
import type { Layout } from './layout.js';
import { Refreshes } from './repository-store.js';

/** One digest a line. A line cut short by a crash is skipped: the pattern needs the whole digest and its newline,
 *  and `s` (never hex) anchors the next one. */
const LINE = /(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\n/g;

/**
 * A set of small non-negative integers (digest table rows) in one Int32Array, open addressing at a load of at
 * most 1/2: 8 to 16 bytes an entry. Entries are only added; a repository's set is rebuilt at start-up.
 */
export class RowSet {
  private slots = new Int32Array(8).fill(-1);
  size = 0;

  has(row: number): boolean {
    const mask = this.slots.length - 1;
    for (let i = Math.imul(row, 0x9e3779b1) & mask; ; i = (i + 1) & mask) {
      const s = this.slots[i]!;
      if (s === row) return true;
      if (s === -1) return false;
    }
  }

  add(row: number): void {
    if ((this.size + 1) * 2 > this.slots.length) this.grow();
    if (this.place(this.slots, row)) this.size++;
  }

  private place(slots: Int32Array, row: number): boolean {
    const mask = slots.length - 1;
    for (let i = Math.imul(row, 0x9e3779b1) & mask; ; i = (i + 1) & mask) {
      if (slots[i] === row) return false;
      if (slots[i] === -1) {
        slots[i] = row;
        return true;
      }
    }
  }

  private grow(): void {
    const next = new Int32Array(this.slots.length * 2).fill(-1);
    for (const s of this.slots) if (s >= 0) this.place(next, s);
    this.slots = next;
  }
}

interface Members {
  rows: RowSet;
  /** Digests of algorithms the digest table has no rows for (sha512). */
  others?: Set<string>;
  /** How far this process has read the log. */
  offset: number;
}

/**
 * Which blobs each repository has by upload or mount, for tenant isolation (see Registry): on disk an append-only
 * log per repository (`repositories/<name>/_blobs`), each line fsynced before the upload or mount that caused it
 * is answered; in memory a set of digest-table rows per repository (pinned, so a row always names the same
 * digest). Every worker process loads the logs at start; a digest missing from memory is looked for in the log's
 * tail before the answer is no — another worker may have appended it a moment ago — so a client reads its own
 * upload through any worker without any message between them. Membership of a blob that is gone is forgotten at
 * the next start-up, when the owner rewrites the logs without it.
 */
export class BlobMembership {
  private readonly repos = new Map<string, Members>();
  private readonly reads = new Refreshes();
  private pairCount = 0;

  constructor(
    private readonly layout: Layout,
    private readonly table: DigestTable,
  ) {}

  /** Blob-repository pairs held in memory. */
  get pairs(): number {
    return this.pairCount;
  }

  /**
   * Loads every repository's log. With `compact` (the owner of the data directory, before any worker runs) a log
   * that names blobs no longer stored, repeats itself or ends in a torn line is rewritten without them.
   */
  async open(compact: boolean): Promise<void> {
    await this.loadTree('', compact);
  }

  /** Walks `repositories/` down through name segments (never into `_` folders, which hold a repository's files). */
  private async loadTree(name: string, compact: boolean): Promise<void> {
    const dir = name ? this.layout.repository(name) : this.layout.repositories;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const loads: Promise<void>[] = [];
    for (const e of entries) {
      if (e.isFile() && e.name === '_blobs' && name) loads.push(this.load(name, compact));
      else if (e.isDirectory() && !e.name.startsWith('_')) loads.push(this.loadTree(name ? `${name}/${e.name}` : e.name, compact));
    }
    await Promise.all(loads);
  }

  private async load(name: string, compact: boolean): Promise<void> {
    const path = this.layout.blobLog(name);
    const text = await readFile(path, 'latin1').catch(() => '');
    const m = this.members(name);
    if (!compact) {
      m.offset = this.addLines(m, text);
      return;
    }
    const kept: string[] = [];
    for (const [, digest] of text.matchAll(LINE)) {
      if (this.table.size(digest!) === undefined || this.holds(m, digest!)) continue;
      this.put(m, digest!);
      kept.push(`${digest}\n`);
    }
    const out = kept.join('');
    if (out !== text) await writeFileAtomic(path, out, this.layout.tmp);
    m.offset = out.length;
  }

  /** Adds every whole line of `text`; returns how much of it that consumed. */
  private addLines(m: Members, text: string): number {
    for (const [, digest] of text.matchAll(LINE)) if (!this.holds(m, digest!)) this.put(m, digest!);
    return text.lastIndexOf('\n') + 1;
  }

  private members(name: string): Members {
    let m = this.repos.get(name);
    if (!m) {
      m = { rows: new RowSet(), offset: 0 };
      this.repos.set(name, m);
    }
    return m;
  }

  private holds(m: Members, digest: string): boolean {
    const row = this.table.rowOf(digest);
    return row >= 0 ? m.rows.has(row) : (m.others?.has(digest) ?? false);
  }

  private put(m: Members, digest: string): void {
    const row = this.table.pin(digest);
    if (row >= 0) m.rows.add(row);
    else (m.others ??= new Set()).add(digest);
    this.pairCount++;
  }

  /** From memory only. */
  has(name: string, digest: string): boolean {
    const m = this.repos.get(name);
    return m !== undefined && this.holds(m, digest);
  }

  /** From memory or, on a miss, from what other processes appended to the log since this one last read it. */
  async lookup(name: string, digest: string): Promise<boolean> {
    if (this.has(name, digest)) return true;
    await this.reads.run(name, () => this.readTail(name));
    return this.has(name, digest);
  }

  private async readTail(name: string): Promise<void> {
    let fh;
    try {
      fh = await open(this.layout.blobLog(name), 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return;
      throw e;
    }
    try {
      const m = this.members(name);
      const { size } = await fh.stat();
      if (size <= m.offset) return;
      const buf = Buffer.allocUnsafe(size - m.offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, m.offset);
      m.offset += this.addLines(m, buf.toString('latin1', 0, bytesRead));
    } finally {
      await fh.close();
    }
  }

  /** Records that `name` has the blob: durable (fsynced) when this resolves, and so visible to every process. */
  async add(name: string, digest: string): Promise<void> {
    if (await this.lookup(name, digest)) return;
    const path = this.layout.blobLog(name);
    try {
      await mkdir(dirname(path), { recursive: true });
      // O_APPEND: lines of several processes interleave whole (one write each), never overwrite each other.
      const fh = await open(path, 'a');
      try {
        const created = (await fh.stat()).size === 0;
        await fh.write(`${digest}\n`);
        await fh.datasync();
        if (created) await fsyncPath(dirname(path));
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw storageError(e);
    }
    if (!this.has(name, digest)) this.put(this.members(name), digest);
  }
}
