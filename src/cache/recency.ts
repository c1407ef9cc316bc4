import { createReadStream } from 'node:fs';
import { appendFile, mkdir, truncate } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { writeFileAtomic } from '../storage/fs-util.js';

/** Seconds: small integers keep the per-blob maps compact (V8 stores them unboxed). */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

const tagKey = (repo: string, tag: string) => `t ${repo} ${tag}`;
const manifestKey = (repo: string, digest: string) => `m ${repo} ${digest}`;

/**
 * Last use of every blob, tag and manifest, and the short-lived push protection of blobs that answered a HEAD or
 * a mount. Touches only mark entries dirty in memory; a timer appends the dirty ones to a log (one small write
 * every few seconds, never one per request), and the log is folded into a snapshot when it grows. Loading takes
 * the newest time of each entry, so a crash between snapshot and log truncation loses nothing.
 */
export class Recency {
  private readonly blobs = new Map<string, number>();
  private readonly refs = new Map<string, number>();
  private readonly protectedUntil = new Map<string, number>();
  /** Blobs held by requests in progress (a manifest PUT between its existence check and its record). */
  private readonly pins = new Map<string, number>();
  private readonly dirty = new Set<string>();
  private logLines = 0;

  constructor(
    private readonly dir: string,
    private readonly tmpDir: string,
    private readonly graceSeconds: number,
  ) {}

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
        if (k.startsWith('b ')) this.blobs.set(k.slice(2), Math.max(t, this.blobs.get(k.slice(2)) ?? 0));
        else this.refs.set(k, Math.max(t, this.refs.get(k) ?? 0));
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return lines;
  }

  /** Seeds a blob found on disk with no recorded use (its file time), without marking it dirty. */
  seedBlob(digest: string, seconds: number): void {
    if (!this.blobs.has(digest)) this.blobs.set(digest, seconds);
  }

  touchBlob(digest: string, now = nowSeconds()): void {
    if (this.blobs.get(digest) === now) return;
    this.blobs.set(digest, now);
    this.dirty.add(`b ${digest}`);
  }

  /** A HEAD or mount: the client may push a manifest referencing this blob without uploading it. */
  protectBlob(digest: string, now = nowSeconds()): void {
    this.touchBlob(digest, now);
    this.protectedUntil.set(digest, now + this.graceSeconds);
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
    if (this.pins.has(digest)) return true;
    const until = this.protectedUntil.get(digest);
    if (until === undefined) return false;
    if (until >= now) return true;
    this.protectedUntil.delete(digest);
    return false;
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
    return this.blobs.get(digest);
  }

  tagUsed(repo: string, tag: string): number {
    return this.refs.get(tagKey(repo, tag)) ?? 0;
  }

  manifestUsed(repo: string, digest: string): number {
    return this.refs.get(manifestKey(repo, digest)) ?? 0;
  }

  forgetBlob(digest: string): void {
    this.blobs.delete(digest);
    this.protectedUntil.delete(digest);
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
        const t = k.startsWith('b ') ? this.blobs.get(k.slice(2)) : this.refs.get(k);
        if (t !== undefined) lines.push(`${k} ${t}\n`);
      }
      this.dirty.clear();
      await appendFile(this.logPath, lines.join(''));
      this.logLines += lines.length;
    }
    if (this.logLines > Math.max(50_000, 2 * (this.blobs.size + this.refs.size))) await this.compact();
  }

  private async compact(): Promise<void> {
    const lines: string[] = [];
    for (const [d, t] of this.blobs) lines.push(`b ${d} ${t}\n`);
    for (const [k, t] of this.refs) lines.push(`${k} ${t}\n`);
    await writeFileAtomic(this.snapshotPath, lines.join(''), this.tmpDir);
    await truncate(this.logPath, 0);
    this.logLines = 0;
  }
}
