/**
 * Tags and manifest records across processes (RepositoryStore: changes, apply, lookups): disk is the truth and
 * memory follows it. A process changes the file first and tells the others after; they re-read the file, one
 * refresh at a time per file, so whatever order events and reads complete in, every process ends up with what the
 * disk holds. Two stores on one data directory stand for two worker processes; the listener stands where the
 * cluster primary relays events.
 */
import { mkdir } from 'node:fs/promises';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { digestOf } from '../../src/core/digest.js';
import { DigestList } from '../../src/storage/digest-list.js';
import { DigestTable } from '../../src/storage/digest-table.js';
import type { StoreEvent } from '../../src/storage/events.js';
import type { Layout } from '../../src/storage/layout.js';
import { RepositoryStore, type ManifestRecord } from '../../src/storage/repository-store.js';
import { tempLayoutPerTest } from '../helpers/store.js';

/** Holds the result of the next read of `path` until `release` is called: a read that lost a race. */
const gate = vi.hoisted(() => ({
  path: '',
  held: undefined as undefined | { reached: () => void; release: Promise<void> },
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const readFile = (async (...args: Parameters<typeof real.readFile>) => {
    const result = await real.readFile(...args);
    const held = gate.held;
    if (held && args[0] === gate.path) {
      gate.held = undefined;
      held.reached();
      await held.release;
    }
    return result;
  }) as typeof real.readFile;
  return { ...real, readFile, default: { ...real, readFile } };
});

/** Arms the gate on `path`; resolves `reached` once a read of it has its result and waits. */
function holdNextRead(path: string): { reached: Promise<void>; release: () => void } {
  let release!: () => void;
  let reached!: () => void;
  const reachedP = new Promise<void>((r) => (reached = r));
  gate.path = path;
  gate.held = { reached, release: new Promise<void>((r) => (release = r)) };
  return { reached: reachedP, release };
}

const tempLayout = tempLayoutPerTest('buildcached-repo-events-');
let layout: Layout;
beforeEach(() => {
  layout = tempLayout();
});

async function openStore(): Promise<RepositoryStore> {
  await mkdir(layout.tmp, { recursive: true });
  const store = new RepositoryStore(layout, new DigestTable());
  await store.open();
  return store;
}

function record(name: string): ManifestRecord {
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, name }));
  return { digest: digestOf(body).value, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: body.length, references: new DigestList([]) };
}

/** What a store holds in memory, comparable with what a fresh load of the disk holds. */
function state(s: RepositoryStore) {
  return {
    tags: [...s.allTags()].map((t) => `${t.repo}:${t.tag}=${t.digest}`).sort(),
    manifests: [...s.allManifests()].map(([repo, m]) => `${repo}@${m.digest}`).sort(),
  };
}

describe('repository changes across processes', () => {
  it('a deleted tag stays deleted in the process that hears of it', async () => {
    const a = await openStore();
    const b = await openStore();
    a.subscribe((e) => b.apply(e));
    const m = record('m');
    await a.putManifest('org/app', m, 'main');
    expect(b.resolveTag('org/app', 'main')).toBe(m.digest);

    await a.deleteTag('org/app', 'main');
    expect(b.resolveTag('org/app', 'main')).toBeUndefined();
    expect(await b.lookupTag('org/app', 'main')).toBeUndefined();
    expect(b.tags('org/app')).toEqual([]);
    expect(b.manifest('org/app', m.digest)?.digest).toBe(m.digest);
  });

  it('a deleted manifest is not loaded back by a lookup that arrives while it is being deleted', async () => {
    const a = await openStore();
    const b = await openStore();
    const m = record('m');
    a.subscribe(async (e) => {
      await b.apply(e);
      // GETs by digest reaching either process between the event and the end of the delete.
      if (e.type === 'manifest-deleted') {
        expect(await b.lookupManifest('org/app', m.digest)).toBeUndefined();
        expect(await a.lookupManifest('org/app', m.digest)).toBeUndefined();
      }
    });
    await a.putManifest('org/app', m, 'main');
    await a.deleteManifest('org/app', m.digest);
    for (const s of [a, b]) {
      expect(s.manifest('org/app', m.digest)).toBeUndefined();
      expect(await s.lookupManifest('org/app', m.digest)).toBeUndefined();
      expect(await s.lookupTag('org/app', 'main')).toBeUndefined();
      expect(s.referenceCount(m.digest)).toBe(0);
    }
  });

  it('events applied in any order, all at once, leave the other process with what the disk holds', async () => {
    const a = await openStore();
    const b = await openStore();
    const events: StoreEvent[] = [];
    a.subscribe((e) => void events.push(e));
    const [m1, m2, m3] = [record('1'), record('2'), record('3')];
    await a.putManifest('r', m1, 't');
    await a.putManifest('r', m2, 't');
    await a.putManifest('r', m3, 'u');
    await a.deleteTag('r', 't');
    await a.putManifest('r', m1, 't');
    await a.deleteManifest('r', m2.digest);
    await a.deleteManifest('r', m3.digest);
    await a.putManifest('r', m2, 'v');
    const disk = state(await openStore());
    expect(state(a)).toEqual(disk);
    await Promise.all([...events].reverse().map((e) => b.apply(e)));
    expect(state(b)).toEqual(disk);
  });

  it('a read of a tag that completes after a newer change to it does not have the last word', async () => {
    const a = await openStore();
    const b = await openStore();
    const events: StoreEvent[] = [];
    a.subscribe((e) => void events.push(e));
    const m = record('m');
    await a.putManifest('org/app', m, 'main'); // b has not heard yet: its next lookup misses and reads the file
    const read = holdNextRead(layout.tag('org/app', 'main'));
    const lookup = b.lookupTag('org/app', 'main');
    await read.reached; // b read "main → m" and waits…
    await a.deleteTag('org/app', 'main'); // …while a deletes the tag…
    const applied = Promise.all(events.map((e) => b.apply(e))); // …and b hears of both changes,
    // which re-read the file, unless they wait for the read in progress (then they would wait forever here).
    await Promise.race([applied, new Promise((r) => setTimeout(r, 100))]);
    read.release(); // the old read completes last
    await lookup; // concurrent with the delete: either answer is fine
    await applied;
    expect(b.resolveTag('org/app', 'main')).toBeUndefined();
    expect(state(b)).toEqual(state(await openStore()));
  });

  it('an eviction of a tag another process re-pointed a moment ago keeps the new target', async () => {
    const evictor = await openStore();
    const worker = await openStore();
    const m1 = record('m1');
    const m2 = record('m2');
    await evictor.putManifest('org/app', m1, 'main');
    await worker.putManifest('org/app', m2); // the worker has m2 recorded…
    await evictor.apply({ type: 'manifest-put', repo: 'org/app', record: { ...m2, references: [] } });
    await worker.lookupTag('org/app', 'main');
    await worker.putManifest('org/app', m2, 'main'); // …and re-points main; the evictor has not heard yet
    expect(evictor.resolveTag('org/app', 'main')).toBe(m1.digest); // what its plan saw
    expect(await evictor.deleteTagIf('org/app', 'main', m1.digest)).toBe(false);
    expect(evictor.resolveTag('org/app', 'main')).toBe(m2.digest); // it read the file it judged
    expect((await openStore()).resolveTag('org/app', 'main')).toBe(m2.digest);
    // With the target it planned, the tag goes.
    expect(await evictor.deleteTagIf('org/app', 'main', m2.digest)).toBe(true);
    expect((await openStore()).resolveTag('org/app', 'main')).toBeUndefined();
    expect(await evictor.deleteTagIf('org/app', 'main', m2.digest)).toBe(false); // already gone
  });
});
