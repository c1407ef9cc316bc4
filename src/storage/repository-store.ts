import { readFileSync, readdirSync, statSync } from 'node:fs';
import { link, mkdir, readFile, readdir, rename, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { OciError, errnoCode } from '../core/errors.js';
import { parseDigest, tryParseDigest } from '../core/digest.js';
import { DirSyncs, syncDir, unlinkIfExists, writeFileAtomic } from './fs-util.js';
import type { Layout } from './layout.js';
import type { StoreEvent, StoreListener } from './events.js';
import type { DigestTable } from './digest-table.js';
import { DigestList } from './digest-list.js';

/** What a repository records about a manifest it holds (the bytes live in the blob store), as stored on disk
 *  and sent between processes. */
export interface ManifestRecordData {
  digest: string;
  mediaType: string;
  size: number;
  /** Digests this manifest references (config, layers, index entries): the edges for reachability. */
  references: readonly string[];
  subject?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** A manifest record in memory: its references packed. */
export type ManifestRecord = Omit<ManifestRecordData, 'references'> & { references: DigestList };

export function toRecord(data: ManifestRecordData): ManifestRecord {
  return { ...data, references: new DigestList(data.references) };
}

interface Repository {
  tags: Map<string, string>;
  /** When each tag was last pointed at a manifest (its file's mtime, the same in every process). */
  changed: Map<string, number>;
  manifests: Map<string, ManifestRecord>;
}

/**
 * Tags and manifest records per repository, on disk as small files replaced atomically, mirrored in memory so
 * that reads need no disk access. A tag file holds the digest it points to; a manifest record is JSON.
 */
export class RepositoryStore {
  private readonly repos = new Map<string, Repository>();
  private readonly refreshes = new Refreshes();
  private listener: StoreListener | undefined;

  /** `table` keeps, for each digest, how many manifest records (in any repository) hold it: as their own bytes or
   *  as a reference. */
  constructor(
    private readonly layout: Layout,
    private readonly table: DigestTable,
  ) {}

  /** Receives every change this process commits (to tell other processes). */
  subscribe(listener: StoreListener): void {
    this.listener = listener;
  }

  /**
   * Applies a change another process committed, by re-reading the files it names: that process changed the disk
   * before it sent the event, so whatever order events arrive in, the last refresh of a file reads its final state.
   */
  async apply(e: StoreEvent): Promise<void> {
    if (e.type === 'manifest-put') {
      await this.refreshManifest(e.repo, e.record.digest, e.record);
      if (e.tag !== undefined) await this.refreshTag(e.repo, e.tag);
    } else if (e.type === 'tag-deleted') {
      await this.refreshTag(e.repo, e.tag);
    } else if (e.type === 'manifest-deleted') {
      await this.refreshManifest(e.repo, e.digest);
    }
  }

  /**
   * Sets a tag in memory from its file: to its target when that manifest is recorded, else absent. Another
   * process writing the tag races on disk, where the last rename wins; reading the file after each change keeps
   * this process in agreement with the disk.
   */
  private refreshTag(name: string, tag: string): Promise<void> {
    return this.refreshes.run(`t\u0000${name}\u0000${tag}`, async () => {
      const read = await this.readTag(name, tag);
      if (read === undefined) return;
      const { target, changed } = read;
      if (target && !this.manifest(name, target)) await this.refreshManifest(name, target);
      if (target && this.manifest(name, target)) {
        const repo = this.repo(name, true);
        repo.tags.set(tag, target);
        repo.changed.set(tag, changed);
      } else {
        this.forgetTag(this.repo(name), tag);
      }
    });
  }

  /**
   * Sets a manifest record in memory from its file: recorded when the file exists, else dropped (with the tags
   * pointing to it). `written` is the record the caller knows was written, used when the file cannot be read
   * (no descriptor left, I/O error): counting its references then errs towards keeping blobs.
   */
  private refreshManifest(name: string, digest: string, written?: ManifestRecordData): Promise<void> {
    return this.refreshes.run(`m\u0000${name}\u0000${digest}`, async () => {
      const read = await this.readRecord(name, digest);
      const data = read === undefined ? written : read;
      if (data === undefined) return;
      if (data === null) this.dropRecord(name, digest);
      else if (!this.manifest(name, digest)) this.addRecord(this.repo(name, true), toRecord(data));
    });
  }

  /** A tag file's target digest and mtime; target '' when there is no such tag, undefined when the file cannot be
   *  read. Should the tag change between the two reads, its event makes this process read it again. */
  private async readTag(name: string, tag: string): Promise<{ target: string; changed: number } | undefined> {
    const path = this.layout.tag(name, tag);
    try {
      const target = (await readFile(path, 'utf8')).trim();
      return { target, changed: (await stat(path)).mtimeMs };
    } catch (e) {
      return errnoCode(e) === 'ENOENT' ? { target: '', changed: 0 } : undefined;
    }
  }

  private forgetTag(repo: Repository | undefined, tag: string): void {
    repo?.tags.delete(tag);
    repo?.changed.delete(tag);
  }

  /** A manifest record file; null when there is none (or it is not this digest's), undefined when it cannot be
   *  read. */
  private async readRecord(name: string, digest: string): Promise<ManifestRecordData | null | undefined> {
    const parsed = tryParseDigest(digest);
    if (!parsed) return null;
    let text: string;
    try {
      text = await readFile(this.layout.manifestMeta(name, parsed), 'utf8');
    } catch (e) {
      return errnoCode(e) === 'ENOENT' ? null : undefined;
    }
    try {
      const data = JSON.parse(text) as ManifestRecordData;
      return data.digest === digest ? data : null;
    } catch {
      return null; // written atomically, so an unreadable record is foreign (as at start-up)
    }
  }

  private dropRecord(name: string, digest: string): void {
    const repo = this.repo(name);
    const rec = repo?.manifests.get(digest);
    if (!repo || !rec) return;
    for (const [tag, target] of [...repo.tags]) if (target === digest) this.forgetTag(repo, tag);
    this.countReferences(rec, -1);
    repo.manifests.delete(digest);
  }

  async open(): Promise<void> {
    await mkdir(this.layout.repositories, { recursive: true });
    await this.loadTree('');
  }

  /** Walks `repositories/`: a folder with `_manifests` or `_tags` is a repository; others are name prefixes. */
  private async loadTree(prefix: string): Promise<void> {
    const dir = prefix ? join(this.layout.repositories, prefix) : this.layout.repositories;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const names = new Set(entries.filter((e) => e.isDirectory()).map((e) => e.name));
    if (prefix && (names.has('_manifests') || names.has('_tags'))) this.loadRepository(prefix);
    await Promise.all(
      [...names].filter((n) => !n.startsWith('_')).map((n) => this.loadTree(prefix ? `${prefix}/${n}` : n)),
    );
  }

  /**
   * Start-up only, before this process serves anything: synchronous reads of thousands of small record and tag
   * files take a fraction of the time of the thread pool's four round trips (open, stat, read, close) each.
   */
  private loadRepository(name: string): void {
    const repo = this.repo(name, true);
    const base = this.layout.repository(name);
    const list = (dir: string) => {
      try {
        return readdirSync(dir);
      } catch {
        return [];
      }
    };
    for (const algorithm of list(join(base, '_manifests'))) {
      for (const file of list(join(base, '_manifests', algorithm))) {
        const digest = tryParseDigest(`${algorithm}:${file.replace(/\.json$/, '')}`);
        if (!digest) continue;
        try {
          const rec = JSON.parse(readFileSync(join(base, '_manifests', algorithm, file), 'utf8')) as ManifestRecordData;
          if (rec.digest === digest.value) this.addRecord(repo, toRecord(rec));
        } catch {
          // A record is written atomically, so an unreadable one is foreign: skip it rather than refuse to start.
        }
      }
    }
    for (const tag of list(join(base, '_tags'))) {
      // A tag an eviction was judging when the process died (see deleteTagIf): it was on its way out.
      if (tag.startsWith('.')) continue;
      let target = '';
      let changed = 0;
      try {
        const path = this.layout.tag(name, tag);
        target = readFileSync(path, 'utf8').trim();
        changed = statSync(path).mtimeMs;
      } catch {
        continue;
      }
      if (repo.manifests.has(target)) {
        repo.tags.set(tag, target);
        repo.changed.set(tag, changed);
      }
    }
  }

  private repo(name: string, create: true): Repository;
  private repo(name: string, create?: false): Repository | undefined;
  private repo(name: string, create = false): Repository | undefined {
    let r = this.repos.get(name);
    if (!r && create) {
      r = { tags: new Map(), changed: new Map(), manifests: new Map() };
      this.repos.set(name, r);
    }
    return r;
  }

  private addRecord(repo: Repository, rec: ManifestRecord): void {
    repo.manifests.set(rec.digest, rec);
    this.countReferences(rec, 1);
  }

  /** A manifest keeps its own bytes and every digest it lists (never itself: a digest cannot cover itself). */
  private countReferences(rec: ManifestRecord, by: 1 | -1): void {
    this.table.addRefs(rec.digest, by);
    this.table.addListRefs(rec.references, by);
  }

  /** Number of manifest records that keep `digest` alive; 0 means no live manifest needs the blob. */
  referenceCount(digest: string): number {
    return this.table.refs(digest);
  }

  /** Whether another manifest of the same repository (an index) lists this one. */
  hasParent(name: string, digest: string): boolean {
    for (const m of this.repo(name)?.manifests.values() ?? []) if (m.references.includes(digest)) return true;
    return false;
  }

  isTagged(name: string, digest: string): boolean {
    for (const target of this.repo(name)?.tags.values() ?? []) if (target === digest) return true;
    return false;
  }

  /** Every tag of every repository with its target. */
  *allTags(): Iterable<{ repo: string; tag: string; digest: string }> {
    for (const [repo, r] of this.repos) for (const [tag, digest] of r.tags) yield { repo, tag, digest };
  }

  hasRepository(name: string): boolean {
    return this.repos.has(name);
  }

  /** Sorted repository names (those holding at least one manifest). */
  repositories(): string[] {
    return [...this.repos.entries()].filter(([, r]) => r.manifests.size > 0).map(([n]) => n).sort();
  }

  tags(name: string): string[] | undefined {
    const r = this.repo(name);
    return r ? [...r.tags.keys()].sort() : undefined;
  }

  /** The tag of `name` changed most recently, other than `except`; undefined when there is none. */
  latestTag(name: string, except: string): string | undefined {
    let best: string | undefined;
    let when = -Infinity;
    for (const [tag, changed] of this.repo(name)?.changed ?? []) {
      if (tag !== except && changed > when) [best, when] = [tag, changed];
    }
    return best;
  }

  resolveTag(name: string, tag: string): string | undefined {
    return this.repo(name)?.tags.get(tag);
  }

  manifest(name: string, digest: string): ManifestRecord | undefined {
    return this.repo(name)?.manifests.get(digest);
  }

  /**
   * A tag's target, from memory — or, on a miss, from its file: another worker process may have written it a
   * moment before its change event arrives here, and a client that pushed there may already read here.
   */
  async lookupTag(name: string, tag: string): Promise<string | undefined> {
    const known = this.resolveTag(name, tag);
    if (known !== undefined) return known;
    await this.refreshTag(name, tag);
    return this.resolveTag(name, tag);
  }

  /** A manifest record from memory or, on a miss, from its file (see lookupTag). */
  async lookupManifest(name: string, digest: string): Promise<ManifestRecord | undefined> {
    const known = this.manifest(name, digest);
    if (known) return known;
    await this.refreshManifest(name, digest);
    return this.manifest(name, digest);
  }

  manifests(name: string): ManifestRecord[] {
    return [...(this.repo(name)?.manifests.values() ?? [])];
  }

  /** Every manifest record of every repository: the roots for reachability. */
  *allManifests(): Iterable<[string, ManifestRecord]> {
    for (const [name, r] of this.repos) for (const m of r.manifests.values()) yield [name, m];
  }

  /**
   * Records a manifest (whose bytes are already committed) and optionally points a tag at it. Like every change
   * here: the file first, then this process's memory re-read from it, then the event that has the others do the
   * same — so a process never learns of a change the disk does not hold yet.
   */
  async putManifest(name: string, rec: ManifestRecord, tag?: string, imported?: boolean): Promise<void> {
    const data: ManifestRecordData = { ...rec, references: rec.references.toJSON() };
    if (!this.manifest(name, rec.digest)) {
      await writeFileAtomic(this.layout.manifestMeta(name, parseDigest(rec.digest)), JSON.stringify(data), this.layout.tmp);
      await this.refreshManifest(name, rec.digest, data);
    }
    if (tag !== undefined && this.resolveTag(name, tag) !== rec.digest) {
      // Last writer wins: the rename replaces whatever the tag pointed to.
      await writeFileAtomic(this.layout.tag(name, tag), rec.digest, this.layout.tmp);
      await this.refreshTag(name, tag);
    }
    await this.listener?.({ type: 'manifest-put', repo: name, record: data, tag, ...(imported ? { imported } : {}) });
  }

  /** `local`: an eviction's removal from this disk, not a client's delete (a tier below keeps the tag). */
  async deleteTag(name: string, tag: string, batch?: DirSyncs, local?: boolean): Promise<void> {
    if (!this.repo(name)?.tags.has(tag)) throw new OciError('MANIFEST_UNKNOWN', `tag ${tag} is unknown in ${name}`);
    const path = this.layout.tag(name, tag);
    await unlinkIfExists(path);
    await syncDir(dirname(path), batch);
    await this.refreshTag(name, tag);
    await this.listener?.({ type: 'tag-deleted', repo: name, tag, ...(local ? { local } : {}) });
  }

  /**
   * Removes a tag only if its file still points at `digest`: the evictor plans from memory, and another process
   * may have re-pointed the tag a moment ago (its event not applied here yet). The file is moved aside first, so
   * what is judged is exactly what is removed; a tag that turns out to point elsewhere is linked back, unless an
   * even newer version took its place meanwhile (that one wins). False when the tag was kept. For the evictor:
   * the removal is local (see deleteTag).
   */
  async deleteTagIf(name: string, tag: string, digest: string, batch?: DirSyncs): Promise<boolean> {
    const path = this.layout.tag(name, tag);
    // Beside the tag, under a name no tag can have (tags never start with a dot): same directory, one rename.
    const aside = join(dirname(path), `.evicting-${randomUUID()}`);
    try {
      await rename(path, aside);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
      await this.refreshTag(name, tag);
      return false;
    }
    const target = (await readFile(aside, 'utf8').catch(() => '')).trim();
    if (target !== digest) {
      try {
        await link(aside, path);
        await unlinkIfExists(aside);
      } catch (e) {
        // EEXIST: a newer version took its place, which wins. Otherwise (a full disk) move it back as it was.
        if (errnoCode(e) === 'EEXIST') await unlinkIfExists(aside);
        else await rename(aside, path);
      }
      await this.refreshTag(name, tag);
      return false;
    }
    await unlinkIfExists(aside);
    await syncDir(dirname(path), batch);
    await this.refreshTag(name, tag);
    // An eviction's: removed from this disk only, a tier below keeps the tag.
    await this.listener?.({ type: 'tag-deleted', repo: name, tag, local: true });
    return true;
  }

  /** Removes a manifest from a repository together with every tag pointing at it (tags first). */
  async deleteManifest(name: string, digest: string, batch?: DirSyncs, local?: boolean): Promise<void> {
    const repo = this.repo(name);
    if (!repo?.manifests.has(digest)) throw new OciError('MANIFEST_UNKNOWN', `manifest ${digest} is unknown in ${name}`);
    for (const [tag, target] of [...repo.tags]) if (target === digest) await this.deleteTag(name, tag, batch, local);
    const path = this.layout.manifestMeta(name, parseDigest(digest));
    await unlinkIfExists(path);
    await syncDir(dirname(path), batch);
    await this.refreshManifest(name, digest);
    await this.listener?.({ type: 'manifest-deleted', repo: name, digest, ...(local ? { local } : {}) });
    // An emptied repository keeps its (empty) entry: its tag list still answers 200 with no tags.
  }
}

/**
 * Refreshes of memory from disk, one at a time per key (a file). Two reads of one file can complete out of order,
 * and the older one must not have the last word: in sequence, the last refresh to run read the disk after every
 * change it was asked for. A refresh asked for while another waits to start joins it — it too reads after now.
 */
export class Refreshes {
  private readonly keys = new Map<string, { tail: Promise<void>; waiting?: Promise<void> }>();

  run(key: string, task: () => Promise<void>): Promise<void> {
    const state = this.keys.get(key) ?? { tail: Promise.resolve() };
    if (state.waiting) return state.waiting;
    const start = () => {
      state.waiting = undefined;
      return task();
    };
    const next = state.tail.then(start, start);
    state.waiting = next;
    state.tail = next;
    this.keys.set(key, state);
    const done = () => {
      if (state.tail === next) this.keys.delete(key);
    };
    next.then(done, done);
    return next;
  }
}
