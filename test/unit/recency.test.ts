/**
 * Recency (src/cache/recency.ts): last use of blobs, tags and manifests, persisted in STATE/recency.{log,snapshot}
 * (and blob times in the blob index, here written and read the way the blob store does) by batched flushes,
 * reloaded by a new instance on the same directory (what a daemon restart does), compacted when the log outgrows
 * the entries; and the short-lived push protection of probed blobs.
 */
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Recency } from '../../src/cache/recency.js';
import { nowSeconds } from '../../src/cache/clock.js';
import { DigestTable } from '../../src/storage/digest-table.js';

let root: string;
let state: string;
let tmp: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'buildcached-recency-'));
  state = join(root, 'state');
  tmp = join(root, 'tmp');
  await mkdir(tmp, { recursive: true });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;

/** Blobs digest(0) … digest(PRESENT - 1) exist; touches of others are ignored. */
const PRESENT = 20_000;
let table: DigestTable;

/** A restart: a new table and tracker over the same state directory. */
async function opened(grace = 900): Promise<Recency> {
  table = new DigestTable();
  const index = join(state, 'blobs.index');
  const r = new Recency(table, state, tmp, grace, () => writeFile(index, table.encode()));
  await r.open();
  const saved = await readFile(index).catch(() => undefined);
  if (saved) table.decode(saved);
  for (let i = 0; i < PRESENT; i++) if (table.size(digest(i)) === undefined) table.setSize(digest(i), 1);
  return r;
}

async function size(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return -1;
  }
}

describe('Recency persistence', () => {
  it('keeps blob, tag and manifest times across a flush and a reload', async () => {
    const r = await opened();
    r.touchBlob(digest(1), 1000);
    r.touchBlob(digest(2), 2000);
    r.touchTag('team/app', 'cache', 3000);
    r.touchTag('team/app', 'other', 3500);
    r.touchManifest('team/app', digest(9), 4000);
    expect(r.blobUsed(digest(1))).toBe(1000);
    await r.flush();

    const again = await opened();
    expect(again.blobUsed(digest(1))).toBe(1000);
    expect(again.blobUsed(digest(2))).toBe(2000);
    expect(again.tagUsed('team/app', 'cache')).toBe(3000);
    expect(again.tagUsed('team/app', 'other')).toBe(3500);
    expect(again.manifestUsed('team/app', digest(9))).toBe(4000);
    // Unknown entries read as "never used" (0), which sorts them first for eviction.
    expect(again.blobUsed(digest(3))).toBeUndefined();
    expect(again.tagUsed('team/app', 'nope')).toBe(0);
    expect(again.manifestUsed('other', digest(9))).toBe(0);
  });

  it('keys tags and manifests by repository: same tag name in two repositories are two entries', async () => {
    const r = await opened();
    r.touchTag('a', 'cache', 10);
    r.touchTag('a/b', 'cache', 20);
    r.touchManifest('a', digest(1), 30);
    r.touchManifest('a/b', digest(1), 40);
    await r.flush();
    const again = await opened();
    expect([again.tagUsed('a', 'cache'), again.tagUsed('a/b', 'cache')]).toEqual([10, 20]);
    expect([again.manifestUsed('a', digest(1)), again.manifestUsed('a/b', digest(1))]).toEqual([30, 40]);
  });

  it('writes nothing until flushed (no disk write per touch), and only what changed since', async () => {
    const r = await opened();
    const log = join(state, 'recency.log');
    for (let i = 0; i < 100; i++) r.touchBlob(digest(i), 500);
    expect(await size(log)).toBe(-1);
    await r.flush();
    const first = await size(log);
    expect(first).toBeGreaterThan(0);
    expect((await readFile(log, 'utf8')).trim().split('\n')).toHaveLength(100);
    // A flush with nothing new appends nothing; a second touch at the same second is not a change.
    r.touchBlob(digest(1), 500);
    await r.flush();
    expect(await size(log)).toBe(first);
    r.touchBlob(digest(1), 600);
    r.touchBlob(digest(1), 700);
    await r.flush();
    const lines = (await readFile(log, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(101);
    expect(lines.at(-1)).toBe(`b ${digest(1)} 700`);
  });

  it('takes the newest time of each entry when the log repeats it, and a later touch wins after reload', async () => {
    const r = await opened();
    r.touchTag('r', 't', 100);
    await r.flush();
    r.touchTag('r', 't', 300);
    await r.flush();
    const again = await opened();
    expect(again.tagUsed('r', 't')).toBe(300);
    again.touchTag('r', 't', 400);
    await again.flush();
    expect((await opened()).tagUsed('r', 't')).toBe(400);
  });

  it('does not let a seeded file time override a recorded use', async () => {
    const r = await opened();
    r.touchBlob(digest(1), 5000);
    await r.flush();
    const again = await opened();
    again.seedBlob(digest(1), 10);
    again.seedBlob(digest(2), 20);
    expect(again.blobUsed(digest(1))).toBe(5000);
    expect(again.blobUsed(digest(2))).toBe(20);
    // Seeds are not uses: they are not written back.
    const before = await size(join(state, 'recency.log'));
    await again.flush();
    expect(await size(join(state, 'recency.log'))).toBe(before);
  });

  it('skips malformed lines instead of refusing to start', async () => {
    await mkdir(state, { recursive: true });
    await writeFile(
      join(state, 'recency.log'),
      [`b ${digest(1)} 77`, 'garbage', `b ${digest(2)} notanumber`, '', `t r t 88`, `b ${digest(3)} 99`].join('\n'),
    );
    const r = await opened();
    expect(r.blobUsed(digest(1))).toBe(77);
    expect(r.blobUsed(digest(2))).toBeUndefined();
    expect(r.tagUsed('r', 't')).toBe(88);
    expect(r.blobUsed(digest(3))).toBe(99);
  });

  it('compacts the log into a snapshot once it outgrows the entries, losing nothing', async () => {
    const N = 20_000; // 3 flushes of N lines pass the 50 000-line floor while 2×entries is only 40 000
    const log = join(state, 'recency.log');
    const snap = join(state, 'recency.snapshot');
    const r = await opened();
    for (let round = 1; round <= 2; round++) {
      for (let i = 0; i < N; i++) r.touchBlob(digest(i), round * 1000 + (i % 7));
      await r.flush();
    }
    expect(await size(snap)).toBe(-1);
    // A restart in between: the line count of the existing log is picked up at open.
    const r2 = await opened();
    for (let i = 0; i < N; i++) r2.touchBlob(digest(i), 3000 + (i % 7));
    r2.touchTag('repo', 'tag', 4242);
    table.deleteBlob(digest(0));
    await r2.flush();
    expect(await size(log)).toBe(0);
    // Tag and manifest times in the text snapshot; blob times in the blob index.
    expect((await readFile(snap, 'utf8')).trim().split('\n')).toEqual(['t repo tag 4242']);
    expect(await size(join(state, 'blobs.index'))).toBeGreaterThan(N * 40);

    const again = await opened();
    expect(again.blobUsed(digest(1))).toBe(3001);
    expect(again.blobUsed(digest(N - 1))).toBe(3000 + ((N - 1) % 7));
    expect(again.blobUsed(digest(0))).toBeUndefined();
    expect(again.tagUsed('repo', 'tag')).toBe(4242);
    // After compaction the log grows again from empty and still combines with the snapshot.
    again.touchBlob(digest(5), 9999);
    await again.flush();
    const third = await opened();
    expect(third.blobUsed(digest(5))).toBe(9999);
    expect(third.blobUsed(digest(6))).toBe(3006);
  });

  it('survives a crash between writing the snapshot and truncating the log (newest time wins)', async () => {
    const r = await opened();
    r.touchTag('r', 't', 500);
    r.touchBlob(digest(1), 600);
    r.touchBlob(digest(2), 600);
    await r.flush();
    // Simulate: snapshots written with the latest state, but the (older) log lines are still there.
    table.setUsed(digest(2), 900);
    await writeFile(join(state, 'blobs.index'), table.encode());
    await writeFile(join(state, 'recency.snapshot'), `t r t 800\nb ${digest(1)} 550\n`);
    await appendFile(join(state, 'recency.log'), `t r t 700\n`);
    const again = await opened();
    expect(again.tagUsed('r', 't')).toBe(800);
    expect(again.blobUsed(digest(1))).toBe(600);
    expect(again.blobUsed(digest(2))).toBe(900);
  });

  it('folds everything into the snapshots at close, so a restart reads no log', async () => {
    const r = await opened();
    r.touchBlob(digest(3), 700);
    r.touchManifest('r', digest(4), 800);
    await r.close();
    expect(await size(join(state, 'recency.log'))).toBe(0);
    const again = await opened();
    expect(again.blobUsed(digest(3))).toBe(700);
    expect(again.manifestUsed('r', digest(4))).toBe(800);
  });

  it('keeps no time for a blob that is not present', async () => {
    const r = await opened();
    r.touchBlob(digest(PRESENT + 1), 700);
    r.protectBlob(digest(PRESENT + 2), 700);
    expect(r.blobUsed(digest(PRESENT + 1))).toBeUndefined();
    expect(r.blobUsed(digest(PRESENT + 2))).toBeUndefined();
    await r.flush();
    expect(await size(join(state, 'recency.log'))).toBe(-1);
  });
});

describe('Recency protection (push grace window)', () => {
  it('protects a probed blob for exactly the grace window, then lets it go', async () => {
    const r = await opened(60);
    r.protectBlob(digest(1), 1000);
    expect(r.isProtected(digest(1), 1000)).toBe(true);
    expect(r.isProtected(digest(1), 1060)).toBe(true);
    expect(r.isProtected(digest(1), 1061)).toBe(false);
    expect(r.isProtected(digest(2), 1000)).toBe(false);
  });

  it('counts a probe as a use, and a new probe extends the window', async () => {
    const r = await opened(60);
    r.protectBlob(digest(1), 1000);
    expect(r.blobUsed(digest(1))).toBe(1000);
    r.protectBlob(digest(1), 1050);
    expect(r.blobUsed(digest(1))).toBe(1050);
    expect(r.isProtected(digest(1), 1100)).toBe(true);
    expect(r.isProtected(digest(1), 1111)).toBe(false);
  });

  it('with a zero grace window protects only within the same second', async () => {
    const r = await opened(0);
    r.protectBlob(digest(1), 1000);
    expect(r.isProtected(digest(1), 1000)).toBe(true);
    expect(r.isProtected(digest(1), 1001)).toBe(false);
  });

  it('uses the wall clock by default', async () => {
    const r = await opened(5);
    r.protectBlob(digest(1));
    expect(r.isProtected(digest(1))).toBe(true);
    expect(r.isProtected(digest(1), nowSeconds() + 6)).toBe(false);
    expect(Math.abs(r.blobUsed(digest(1))! - nowSeconds())).toBeLessThanOrEqual(1);
  });

  it('drops protection when a blob is forgotten (evicted), and its time with its size', async () => {
    const r = await opened(60);
    r.protectBlob(digest(1), 1000);
    table.deleteBlob(digest(1));
    r.forgetBlob(digest(1));
    expect(r.isProtected(digest(1), 1000)).toBe(false);
    expect(r.blobUsed(digest(1))).toBeUndefined();
    r.touchTag('r', 't', 5);
    r.touchManifest('r', digest(2), 6);
    r.forgetTag('r', 't');
    r.forgetManifest('r', digest(2));
    expect(r.tagUsed('r', 't')).toBe(0);
    expect(r.manifestUsed('r', digest(2))).toBe(0);
  });
});
