/** Reads a daemon's data directory from outside, to check the on-disk invariants of DESIGN.md §4. */
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { Layout } from '../../src/storage/layout.js';
import { WriteLedger } from '../../src/cache/write-ledger.js';
import type { DigestTable } from '../../src/storage/digest-table.js';
import { LedgerGate, type WriteGate } from '../../src/storage/write-gate.js';
import { errno } from './errors.js';
import { hashFile } from './oci-image.js';

export interface BlobFile {
  path: string;
  size: number;
}

export interface BlobTree {
  /** digest → file, for files at blobs/<algorithm>/<2 hex>/<hex>. */
  blobs: Map<string, BlobFile>;
  /** Anything else found under blobs/ (temp files, misplaced files): must be empty. */
  strays: string[];
}

/** Entries of a directory; [] when it does not exist. */
export async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch (e) {
    if (errno(e) === 'ENOENT') return [];
    throw e;
  }
}

/** Walks DATA/blobs. */
export async function blobTree(dataDir: string): Promise<BlobTree> {
  const root = join(dataDir, 'blobs');
  const blobs = new Map<string, BlobFile>();
  const strays: string[] = [];
  for (const algorithm of await listDir(root)) {
    const hexLen = algorithm === 'sha256' ? 64 : algorithm === 'sha512' ? 128 : -1;
    const algoDir = join(root, algorithm);
    if (hexLen < 0 || !(await stat(algoDir)).isDirectory()) {
      strays.push(algoDir);
      continue;
    }
    for (const prefix of await listDir(algoDir)) {
      const dir = join(algoDir, prefix);
      if (!/^[0-9a-f]{2}$/.test(prefix) || !(await stat(dir)).isDirectory()) {
        strays.push(dir);
        continue;
      }
      for (const name of await listDir(dir)) {
        const p = join(dir, name);
        // A blob evicted while the walk runs is simply not there.
        const st = await stat(p).catch((e: NodeJS.ErrnoException) => {
          if (e.code === 'ENOENT') return undefined;
          throw e;
        });
        if (!st) continue;
        if (st.isFile() && name.length === hexLen && /^[0-9a-f]+$/.test(name) && name.startsWith(prefix)) {
          blobs.set(`${algorithm}:${name}`, { path: p, size: st.size });
        } else {
          strays.push(p);
        }
      }
    }
  }
  return { blobs, strays };
}

/** Digests whose file content does not hash to the file's name (must be empty). sha256 only. */
export async function corruptBlobs(tree: BlobTree): Promise<string[]> {
  const bad: string[] = [];
  for (const [digest, f] of tree.blobs) {
    if (digest.startsWith('sha256:') && (await hashFile(f.path)) !== digest) bad.push(digest);
  }
  return bad;
}

/** A fresh data-directory layout (with its state folder) for each test of the calling file, removed after it. */
export function tempLayoutPerTest(prefix: string): () => Layout {
  let layout: Layout | undefined;
  beforeEach(async () => {
    layout = new Layout(await mkdtemp(join(tmpdir(), prefix)));
    await mkdir(layout.state, { recursive: true });
  });
  afterEach(async () => {
    if (layout) await rm(layout.root, { recursive: true, force: true });
  });
  return () => layout!;
}

/** A write gate with room for anything (unit tests of the stores, where the budget is not under test). */
export function roomyGate(table: DigestTable): WriteGate {
  const ledger = new WriteLedger(() => table.blobBytes, {
    maxBytes: Number.MAX_SAFE_INTEGER,
    maxUploadBytes: Number.MAX_SAFE_INTEGER,
    uploadShare: 1,
    maxSessions: 1_000_000,
    maxSessionsPerClient: 0,
    uploadTtlMs: 24 * 3600_000,
    uploadIdleMs: 24 * 3600_000,
  });
  return new LedgerGate((req) => ledger.handle(req, 'self'));
}

/**
 * Bytes of every file under the data dir's blobs/, uploads/ and tmp/: what the budget bounds. Counted by inode: a
 * commit renames a file from tmp/ into blobs/, and a walk that meets it in both places must count it once.
 */
export async function budgetedBytes(dataDir: string): Promise<number> {
  const files = new Map<number, number>();
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    await Promise.all(
      entries.map(async (e) => {
        const p = join(dir, e.name);
        if (e.isDirectory()) return walk(p);
        const st = await stat(p).catch(() => undefined);
        if (st) files.set(st.ino, st.size);
      }),
    );
  };
  await Promise.all(['blobs', 'uploads', 'tmp'].map((f) => walk(join(dataDir, f))));
  return [...files.values()].reduce((a, b) => a + b, 0);
}
