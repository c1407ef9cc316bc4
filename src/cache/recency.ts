import { createReadStream } from 'node:fs';
import { appendFile, mkdir, truncate } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { writeFileAtomic } from '../storage/fs-util.js';
import type { DigestTable } from '../storage/digest-table.js';

import { nowSeconds } from './clock.js';
import { ProbeWindow } from './probes.js';

const tagKey = (repo: string, tag: string) => `t ${repo} ${tag}`;
const manifestKey = (repo: string, digest: string) => `m ${repo} ${digest}`;

/**
 * Last use of every blob, tag and manifest, and the short-lived push protection of blobs that answered a HEAD or
 * a mount. Touches only mark entries dirty in memory; a timer appends the dirty ones to a log (one small write
 * every few seconds, never one per request), and the log is folded into snapshots when it grows and at close:
 * blob times go into the blob index with the sizes (`saveBlobs`), tag and manifest times into a text snapshot.
 * Loading takes the newest time of each entry, so a crash between snapshot and log truncation loses nothing.
 * Blob times live in the digest table, beside the sizes; only blobs that are present have one.
 */
export class Recency {
  private readonly refs = new Map<string, number>();
  private readonly probes: ProbeWindow;
  /** Blobs held by requests in progress (a manifest PUT between its existence check and its record). */
  private readonly pins = new Map<string, number>();
  private readonly dirty = new Set<string>();
  private logLines = 0;

  constructor(
    private readonly table: DigestTable,
    private readonly dir: string,
    private readonly tmpDir: string,
    graceSeconds: number,
    private readonly saveBlobs: () => Promise<void>,
  ) {
    this.probes = new ProbeWindow(graceSeconds);
  }

  private get snapshotPath(): string {
    return `${this.dir}/recency.snapshot`;
  }

  private get logPath(): string {
    return `${this.dir}/recency.log`;
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.load(this.snapshotPath);
    this.logLines = await this.load(this.logPath);
  }

  private async load(path: string): Promise<number> {
    let lines = 0;
    const input = createReadStream(path, { encoding: 'utf8' });
    try {
      for await (const line of createInterface({ input, crlfDelay: Infinity })) {
        lines++;
        const sp = line.lastIndexOf(' ');
        const t = Number(line.slice(sp + 1));
        const k = line.slice(0, sp);
        if (!Number.isFinite(t) || sp < 2) continue;
        if (k.startsWith('b ')) {
          const d = k.slice(2);
          if (t > this.table.used(d)) this.table.setUsed(d, t);
        } else this.refs.set(k, Math.max(t, this.refs.get(k) ?? 0));
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return lines;
  }

  /** Seeds a blob found on disk with no recorded use (its file time), without marking it dirty. */
  seedBlob(digest: string, seconds: number): void {
    if (!this.table.used(digest)) this.table.setUsed(digest, seconds);
  }

  /** A use of a present blob (a blob that is not present has no last use to keep). */
  touchBlob(digest: string, now = nowSeconds()): void {
    if (this.table.used(digest) === now || this.table.size(digest) === undefined) return;
    this.table.setUsed(digest, now);
    this.dirty.add(`b ${digest}`);
  }

  /** A HEAD or mount: the client may push a manifest referencing this blob without uploading it. */
  protectBlob(digest: string, now = nowSeconds()): void {
    this.touchBlob(digest, now);
    this.probes.protect(digest, now);
  }

  pin(digests: readonly string[]): void {
    for (const d of digests) this.pins.set(d, (this.pins.get(d) ?? 0) + 1);
  }

  unpin(digests: readonly string[]): void {
    for (const d of digests) {
      const n = (this.pins.get(d) ?? 1) - 1;
      if (n > 0) this.pins.set(d, n);
      else this.pins.delete(d);
    }
  }

  isProtected(digest: string, now = nowSeconds()): boolean {
    return this.pins.has(digest) || this.probes.has(digest, now);
  }

  touchTag(repo: string, tag: string, now = nowSeconds()): void {
    this.touchRef(tagKey(repo, tag), now);
  }

  touchManifest(repo: string, digest: string, now = nowSeconds()): void {
    this.touchRef(manifestKey(repo, digest), now);
  }

  private touchRef(k: string, now: number): void {
    if (this.refs.get(k) === now) return;
    this.refs.set(k, now);
    this.dirty.add(k);
  }

  /** Undefined for a blob this process has not seen used yet (committed a moment ago, or by another worker). */
  blobUsed(digest: string): number | undefined {
    return this.table.used(digest) || undefined;
  }

  tagUsed(repo: string, tag: string): number {
    return this.refs.get(tagKey(repo, tag)) ?? 0;
  }

  manifestUsed(repo: string, digest: string): number {
    return this.refs.get(manifestKey(repo, digest)) ?? 0;
  }

  /** The blob is gone (its last use went with its size). */
  forgetBlob(digest: string): void {
    this.probes.forget(digest);
  }

  forgetTag(repo: string, tag: string): void {
    this.refs.delete(tagKey(repo, tag));
  }

  forgetManifest(repo: string, digest: string): void {
    this.refs.delete(manifestKey(repo, digest));
  }

  /** Appends what changed since the last flush; folds the log into a snapshot once it outgrows the entries. */
  async flush(): Promise<void> {
    if (this.dirty.size > 0) {
      const lines: string[] = [];
      for (const k of this.dirty) {
        const t = k.startsWith('b ') ? this.table.used(k.slice(2)) : this.refs.get(k);
        if (t) lines.push(`${k} ${t}\n`);
      }
      this.dirty.clear();
      await appendFile(this.logPath, lines.join(''));
      this.logLines += lines.length;
    }
    if (this.logLines > Math.max(50_000, 2 * (this.table.blobCount + this.refs.size))) await this.compact();
    this.probes.sweep();
  }

  /** Flushes and folds the log into the snapshots, so that the next start-up reads them alone. */
  async close(): Promise<void> {
    await this.flush();
    await this.compact();
  }

  private async compact(): Promise<void> {
    await this.saveBlobs();
    const lines: string[] = [];
    for (const [k, t] of this.refs) lines.push(`${k} ${t}\n`);
    await writeFileAtomic(this.snapshotPath, lines.join(''), this.tmpDir);
    await truncate(this.logPath, 0).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
    this.logLines = 0;
  }
}
