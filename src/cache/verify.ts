import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import { newHash, parseDigest, tryParseDigest, type Digest } from '../core/digest.js';
import { errnoCode } from '../core/errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { fsyncPath, moveIfExists, unlinkIfExists } from '../storage/fs-util.js';
import type { Layout } from '../storage/layout.js';
import type { ManifestRecordData, RepositoryStore } from '../storage/repository-store.js';
import type { Evictor } from './evictor.js';
import type { Recency } from './recency.js';

/** Blobs hashed at once: enough to keep a fast disk busy, few enough to leave the event loop to requests. */
const HASH_CONCURRENCY = 4;

export type Problem = (
  | { kind: 'blob-corrupt'; digest: string; actual: string }
  | { kind: 'blob-missing'; digest: string }
  | { kind: 'manifest-incomplete'; repo: string; digest: string; missing: string[] }
  | { kind: 'record-unreadable'; repo: string; file: string }
  | { kind: 'tag-dangling'; repo: string; tag: string; digest: string }
) & {
  /** With --repair: whether it was repaired (false when it no longer held by then, e.g. evicted meanwhile). */
  repaired?: boolean;
  /** Where a quarantined file went. */
  movedTo?: string;
};

export interface VerifyReport {
  repair: boolean;
  checked: { blobs: number; bytes: number; manifests: number; tags: number };
  problems: Problem[];
  quarantine: string;
}

/** Streams a file through its digest's hash; undefined when the file is gone. */
async function hashFile(path: string, d: Digest): Promise<{ digest: string; bytes: number } | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
  const hash = newHash(d.algorithm);
  let bytes = 0;
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
  } finally {
    await fh.close();
  }
  return { digest: `${d.algorithm}:${hash.digest('hex')}`, bytes };
}

interface DiskRepository {
  name: string;
  /** Record files: `alg/hex.json` → the record, or undefined when unreadable or not matching its name. */
  records: Map<string, { digest: string; data: ManifestRecordData | undefined }>;
  tags: Map<string, string>;
}

const listDir = (dir: string) => readdir(dir).catch(() => [] as string[]);

/**
 * What the repositories look like on disk, not in memory: a record that no longer parses, or a tag whose manifest
 * is gone, is never loaded into memory at all, so only the files can show it.
 */
async function readRepositories(layout: Layout): Promise<DiskRepository[]> {
  const out: DiskRepository[] = [];
  const walk = async (name: string): Promise<void> => {
    const dir = name ? layout.repository(name) : layout.repositories;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const dirs = entries.filter((e) => e.isDirectory()).map((e) => e.name);
    if (name && (dirs.includes('_manifests') || dirs.includes('_tags'))) {
      const repo: DiskRepository = { name, records: new Map(), tags: new Map() };
      for (const algorithm of await listDir(join(dir, '_manifests'))) {
        for (const file of await listDir(join(dir, '_manifests', algorithm))) {
          const digest = tryParseDigest(`${algorithm}:${file.replace(/\.json$/, '')}`);
          if (!digest) continue;
          let data: ManifestRecordData | undefined;
          try {
            data = JSON.parse(await readFile(join(dir, '_manifests', algorithm, file), 'utf8')) as ManifestRecordData;
            if (data.digest !== digest.value || !Array.isArray(data.references)) data = undefined;
          } catch {
            data = undefined;
          }
          repo.records.set(`${algorithm}/${file}`, { digest: digest.value, data });
        }
      }
      for (const tag of await listDir(join(dir, '_tags'))) {
        if (tag.startsWith('.')) continue; // an eviction's tag set aside (RepositoryStore.deleteTagIf), no tag
        repo.tags.set(tag, (await readFile(join(dir, '_tags', tag), 'utf8').catch(() => '')).trim());
      }
      out.push(repo);
    }
    await Promise.all(dirs.filter((n) => !n.startsWith('_')).map((n) => walk(name ? `${name}/${n}` : n)));
  };
  await walk('');
  return out;
}

/**
 * `buildcached verify`: re-hashes every blob, checks that every manifest's own bytes and every digest it references
 * are present and sound, and that every tag points at a manifest of its repository. With `repair`, what is wrong
 * goes, in the order that never leaves a tag or a manifest pointing at nothing: dangling tags, then broken
 * manifests (with their tags), then corrupt blobs (moved to DATA/quarantine/, for a look) and missing ones. Runs in
 * the process that owns the store, beside live traffic: the hashing takes no lock, and each repair, made in the
 * evictor's slot, first re-checks that its problem still holds.
 */
export async function verifyStore(
  layout: Layout,
  blobs: BlobStore,
  repos: RepositoryStore,
  recency: Recency,
  evictor: Evictor,
  repair: boolean,
  /** With a tier: blobs it holds are present, though not on this disk (their copies there are not re-hashed). */
  inTier?: (digest: string) => Promise<boolean>,
): Promise<VerifyReport> {
  const quarantine = join(layout.root, 'quarantine');
  const report: VerifyReport = { repair, checked: { blobs: 0, bytes: 0, manifests: 0, tags: 0 }, problems: [], quarantine };
  const bad = new Map<string, Problem>();

  const digests = [...blobs.entries()].map(([digest]) => digest);
  await new PQueue({ concurrency: HASH_CONCURRENCY }).addAll(digests.map((digest) => async () => {
    const d = parseDigest(digest);
    const got = await hashFile(layout.blobPath(d), d);
    // Gone from the index meanwhile (evicted, deleted): not a problem of the store.
    if (!blobs.has(digest)) return;
    report.checked.blobs++;
    if (!got) bad.set(digest, { kind: 'blob-missing', digest });
    else {
      report.checked.bytes += got.bytes;
      if (got.digest !== digest) bad.set(digest, { kind: 'blob-corrupt', digest, actual: got.digest });
    }
  }));

  // What manifests reference but this disk lacks may be in the tier (offloaded, or another daemon's upload).
  const inTierSet = new Set<string>();
  if (inTier) {
    const elsewhere = new Set<string>();
    for (const [, m] of repos.allManifests()) for (const d of [m.digest, ...m.references]) if (!blobs.has(d)) elsewhere.add(d);
    await new PQueue({ concurrency: HASH_CONCURRENCY * 4 }).addAll([...elsewhere].map((d) => async () => void ((await inTier(d)) && inTierSet.add(d))));
  }
  const absent = (d: string) => bad.has(d) || (!blobs.has(d) && !inTierSet.has(d));
  const incomplete: Problem[] = [];
  for (const [repo, m] of repos.allManifests()) {
    report.checked.manifests++;
    const missing = [m.digest, ...m.references].filter(absent);
    if (missing.length) incomplete.push({ kind: 'manifest-incomplete', repo, digest: m.digest, missing });
  }

  const unreadable: Problem[] = [];
  const dangling: Problem[] = [];
  for (const r of await readRepositories(layout)) {
    const sound = new Set<string>();
    for (const [file, rec] of r.records) {
      if (rec.data) sound.add(rec.digest);
      else unreadable.push({ kind: 'record-unreadable', repo: r.name, file: join(layout.repository(r.name), '_manifests', file) });
    }
    for (const [tag, digest] of r.tags) {
      report.checked.tags++;
      if (!sound.has(digest) && !repos.manifest(r.name, digest)) dangling.push({ kind: 'tag-dangling', repo: r.name, tag, digest });
    }
  }

  report.problems = [...dangling, ...incomplete, ...unreadable, ...bad.values()];
  if (repair && report.problems.length) {
    await evictor.exclusive(async () => {
      for (const p of report.problems) p.repaired = await fix(p);
    });
  }
  return report;

  /** Repairs one problem if it still holds; true when it was repaired. */
  async function fix(p: Problem): Promise<boolean> {
    switch (p.kind) {
      case 'tag-dangling': {
        const path = layout.tag(p.repo, p.tag);
        const now = (await readFile(path, 'utf8').catch(() => '')).trim();
        if (now !== p.digest || repos.manifest(p.repo, p.digest)) return false;
        // Never in memory (a tag is loaded only with its manifest), so the file is all there is to remove.
        await unlinkIfExists(path);
        await fsyncPath(join(layout.repository(p.repo), '_tags'));
        return true;
      }
      case 'manifest-incomplete': {
        const m = repos.manifest(p.repo, p.digest);
        if (!m || ![m.digest, ...m.references].some(absent)) return false;
        await dropManifest(p.repo, p.digest);
        return true;
      }
      case 'record-unreadable': {
        p.movedTo = join(quarantine, 'repositories', p.file.slice(layout.repositories.length + 1));
        if (!(await moveIfExists(p.file, p.movedTo))) return false;
        const digest = tryParseDigest(p.file.split('/').slice(-2).join(':').replace(/\.json$/, ''));
        if (digest && repos.manifest(p.repo, digest.value)) await dropManifest(p.repo, digest.value);
        return true;
      }
      case 'blob-corrupt':
      case 'blob-missing': {
        if (!blobs.has(p.digest)) return false;
        const d = parseDigest(p.digest);
        if (p.kind === 'blob-corrupt') p.movedTo = join(quarantine, 'blobs', d.algorithm, d.hex);
        await blobs.delete(d, p.movedTo ? { moveTo: p.movedTo } : {});
        recency.forgetBlob(p.digest);
        return true;
      }
    }
  }

  /** The manifest and the tags that point at it, tags first (RepositoryStore.deleteManifest's order). */
  async function dropManifest(repo: string, digest: string): Promise<void> {
    const tags = [...repos.allTags()].filter((t) => t.repo === repo && t.digest === digest);
    await repos.deleteManifest(repo, digest);
    for (const t of tags) recency.forgetTag(repo, t.tag);
    recency.forgetManifest(repo, digest);
  }
}
