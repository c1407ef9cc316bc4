/**
 * Blob removal across processes (BlobStore.delete / apply): every process stops answering for a blob before its
 * file goes; an eviction can be refused ('kept') by a process that just answered a HEAD for the blob; a process
 * that hears of another's removal neither finds the blob on disk nor commits the same digest until the file is
 * gone. The listener here stands where the cluster primary relays events between real processes.
 */
import { access, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { beforeEach, describe, expect, it } from 'vitest';
import { BlobStore } from '../../src/storage/blob-store.js';
import { DigestTable } from '../../src/storage/digest-table.js';
import type { Layout } from '../../src/storage/layout.js';
import { roomyGate, tempLayoutPerTest } from '../helpers/store.js';
import { digestOf } from '../../src/core/digest.js';
import type { StoreEvent, Verdict } from '../../src/storage/events.js';

const tempLayout = tempLayoutPerTest('buildcached-blob-removal-');
let layout: Layout;
beforeEach(() => {
  layout = tempLayout();
});

const exists = (path: string) => access(path).then(() => true, () => false);

async function storeWith(text: string, answer: (e: StoreEvent) => Verdict = () => 'applied') {
  const table = new DigestTable();
  const store = new BlobStore(layout, table, roomyGate(table));
  await store.open();
  const data = Buffer.from(text);
  const d = digestOf(data);
  await store.writeBuffer(data, d);
  table.setUsed(d.value, 1234);
  const events: StoreEvent[] = [];
  store.subscribe(async (e) => {
    events.push(e);
    return answer(e);
  });
  return { store, table, d, data, events };
}

describe('blob removal', () => {
  it('announces the removal, unlinks, then says the file is gone', async () => {
    const { store, d, events } = await storeWith('a');
    expect(await store.delete(d, { eviction: true })).toBe(true);
    expect(events.map((e) => e.type)).toEqual(['blob-removed', 'blob-unlinked']);
    expect(events[0]).toMatchObject({ eviction: true });
    expect(await exists(layout.blobPath(d))).toBe(false);
    expect(store.has(d.value)).toBe(false);
  });

  it('an eviction refused by another process changes nothing, and tells the others the blob is back', async () => {
    const { store, table, d, events } = await storeWith('b', (e) => (e.type === 'blob-removed' ? 'kept' : 'applied'));
    expect(await store.delete(d, { eviction: true })).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['blob-removed', 'blob-added']);
    expect(await exists(layout.blobPath(d))).toBe(true);
    expect([store.size(d.value), table.used(d.value), store.count]).toEqual([1, 1234, 1]);
  });

  it("another process's removal hides the blob here at once and holds back a commit of it until the unlink", async () => {
    const { store, d, data } = await storeWith('c');
    store.apply({ type: 'blob-removed', digest: d.value });
    // The file is still there (the remover has not unlinked it yet), but no lookup may find it.
    expect(await exists(layout.blobPath(d))).toBe(true);
    expect(await store.locate(d)).toBeUndefined();
    let committed = false;
    const write = store.write(Readable.from([data]), d).then(() => (committed = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(committed).toBe(false);
    // The remover unlinks, then says so; the new commit goes ahead and stays.
    await rm(layout.blobPath(d));
    store.apply({ type: 'blob-unlinked', digest: d.value });
    await write;
    expect(await exists(layout.blobPath(d))).toBe(true);
    expect(await store.locate(d)).toBe(1);
  });

  it('a commit of the same digest elsewhere, landing before that process heard of the removal, is not unlinked', async () => {
    let store!: BlobStore;
    let d!: ReturnType<typeof digestOf>;
    const ctx = await storeWith('d', (e) => {
      // Where the primary relays: a worker had renamed its fresh copy into place and says so before it acks.
      if (e.type === 'blob-removed') store.apply({ type: 'blob-added', digest: d.value, size: 1 });
      return 'applied';
    });
    store = ctx.store;
    d = ctx.d;
    expect(await store.delete(d, { eviction: true })).toBe(false);
    expect(await exists(layout.blobPath(d))).toBe(true);
    expect(store.size(d.value)).toBe(1);
    // Everyone is told the blob is there after all.
    expect(ctx.events.map((e) => e.type)).toEqual(['blob-removed', 'blob-added']);
  });

  it('a disk lookup that raced a removal does not cache what it saw before it', async () => {
    for (let i = 0; i < 20; i++) {
      const { store, table, d } = await storeWith(`e${i}`);
      table.deleteBlob(d.value); // as in a process that has not heard of the blob yet: the lookup goes to disk
      const lookup = store.locate(d);
      // Meanwhile another process removes it: announced, unlinked, done.
      store.apply({ type: 'blob-removed', digest: d.value });
      await rm(layout.blobPath(d));
      store.apply({ type: 'blob-unlinked', digest: d.value });
      expect(await lookup).toBeUndefined();
      expect(store.has(d.value)).toBe(false);
    }
  });

  it("a removed blob counts in the store's bytes until its file is unlinked, here or in another process", async () => {
    let during = -1;
    const own = await storeWith('f', (e) => {
      if (e.type === 'blob-removed') during = own.store.bytes;
      return 'applied';
    });
    expect(await own.store.delete(own.d, { eviction: true })).toBe(true);
    expect(own.store.has(own.d.value)).toBe(false);
    expect(during).toBe(1); // unseen by lookups, still on the disk: the budget must still count it
    expect(own.store.bytes).toBe(0);

    const other = await storeWith('g');
    other.store.apply({ type: 'blob-removed', digest: other.d.value });
    expect([other.store.has(other.d.value), other.store.bytes]).toEqual([false, 1]);
    other.store.apply({ type: 'blob-unlinked', digest: other.d.value });
    expect(other.store.bytes).toBe(0);
  });
});
