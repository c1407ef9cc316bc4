/**
 * The blob index (BlobStore.saveIndex / open): start-up reads sizes from the index a clean stop wrote and stats
 * only blob files it does not know; whatever happened after the index was written (blobs added, blobs removed,
 * the index damaged) is reconciled against the files on disk.
 */
import { unlink, writeFile } from 'node:fs/promises';
import { beforeEach, describe, expect, it } from 'vitest';
import { BlobStore } from '../../src/storage/blob-store.js';
import { DigestTable } from '../../src/storage/digest-table.js';
import type { Layout } from '../../src/storage/layout.js';
import { roomyGate, tempLayoutPerTest } from '../helpers/store.js';
import { digestOf } from '../../src/core/digest.js';

const tempLayout = tempLayoutPerTest('buildcached-blob-index-');
let layout: Layout;
beforeEach(() => {
  layout = tempLayout();
});

const blob = (text: string) => ({ data: Buffer.from(text), digest: digestOf(Buffer.from(text)) });

async function opened() {
  const table = new DigestTable();
  const store = new BlobStore(layout, table, roomyGate(table));
  const seeded: string[] = [];
  const report = await store.open((d) => seeded.push(d));
  return { store, table, report, seeded };
}

describe('blob index', () => {
  it('restarts from the index without stat-ing, keeping sizes and last uses', async () => {
    const { store, table } = await opened();
    const x = blob('x'.repeat(100));
    await store.writeBuffer(x.data, x.digest);
    table.setUsed(x.digest.value, 4242);
    await store.saveIndex();
    const again = await opened();
    expect(again.report).toEqual({ indexed: 1, statted: 0, dropped: 0 });
    expect(again.seeded).toEqual([]);
    expect(again.store.size(x.digest.value)).toBe(100);
    expect(again.table.used(x.digest.value)).toBe(4242);
    expect([again.store.count, again.store.bytes]).toEqual([1, 100]);
  });

  it('drops blobs removed after the index was written and stats blobs added since', async () => {
    const { store } = await opened();
    const [x, y, z] = [blob('x'), blob('yy'), blob('zzz')];
    await store.writeBuffer(x.data, x.digest);
    await store.writeBuffer(y.data, y.digest);
    await store.saveIndex();
    // Then, with no new index (a kill -9): y is evicted and z committed.
    await unlink(layout.blobPath(y.digest));
    await store.writeBuffer(z.data, z.digest);
    const again = await opened();
    expect(again.report).toEqual({ indexed: 1, statted: 1, dropped: 1 });
    expect(again.seeded).toEqual([z.digest.value]);
    expect([again.store.size(x.digest.value), again.store.size(y.digest.value), again.store.size(z.digest.value)]).toEqual([1, undefined, 3]);
    expect(again.store.bytes).toBe(4);
  });

  it('stats every blob when the index is damaged or missing, and refuses nothing', async () => {
    const { store } = await opened();
    const x = blob('x');
    await store.writeBuffer(x.data, x.digest);
    await writeFile(layout.blobIndex, 'not an index');
    expect((await opened()).report).toEqual({ indexed: 0, statted: 1, dropped: 0 });
    await unlink(layout.blobIndex);
    const again = await opened();
    expect(again.report).toEqual({ indexed: 0, statted: 1, dropped: 0 });
    expect(again.store.size(x.digest.value)).toBe(1);
  });
});
