import { resolve } from 'node:path';
import type { Config } from './config/schema.js';
import type { Logger } from './observability/logger.js';
import { Registry, type CacheHooks } from './registry/registry.js';
import { BlobStore } from './storage/blob-store.js';
import { DigestTable } from './storage/digest-table.js';
import { Admin } from './cache/admin.js';
import { Layout } from './storage/layout.js';
import { RepositoryStore } from './storage/repository-store.js';
import { UploadStore } from './storage/upload-store.js';
import { Recency } from './cache/recency.js';
import { Evictor } from './cache/evictor.js';
import { CacheTracker } from './cache/cache.js';
import { overcommitted, resolveBudget } from './cache/budget.js';

/** The stores of the configured data directory, not yet opened. */
function newStores(config: Config) {
  const layout = new Layout(resolve(config.storage.dir));
  const table = new DigestTable();
  const blobs = new BlobStore(layout, table);
  return { layout, table, blobs, uploads: new UploadStore(layout, blobs, config.storage.uploadTtl), repos: new RepositoryStore(layout, table) };
}

/** A data directory opened for serving: the registry and the cache machinery around it. */
export interface OpenedStore {
  layout: Layout;
  registry: Registry;
  blobs: BlobStore;
  repos: RepositoryStore;
  recency: Recency;
  evictor: Evictor;
  cache: CacheTracker;
  admin: Admin;
  /** Starts the timers: recency flushes, budget checks, upload expiry. */
  startBackground(): void;
  /** Stops the timers and persists recency and the blob index. */
  close(): Promise<void>;
}

/** Opens the stores of a data directory (already locked by the caller) and builds the registry over them. */
export async function openStore(config: Config, log: Logger): Promise<OpenedStore> {
  const { layout, table, blobs, uploads, repos } = newStores(config);
  const recency = new Recency(table, layout.state, layout.tmp, config.storage.pushGraceSeconds, () => blobs.saveIndex());
  await recency.open();
  const index = await blobs.open((digest, _size, mtimeMs) => recency.seedBlob(digest, Math.floor(mtimeMs / 1000)));
  const leftovers = await blobs.removeLeftovers();
  await uploads.open();
  const expired = await uploads.sweep();
  await repos.open();
  const budget = {
    maxBytes: await resolveBudget(config.storage.maxBytes, layout.root),
    high: config.storage.highWatermark,
    low: config.storage.lowWatermark,
    graceSeconds: config.storage.pushGraceSeconds,
  };
  const evictor = new Evictor(blobs, uploads, repos, recency, budget, log);
  const { total } = await evictor.usage();
  const freeBytes = await overcommitted(budget.maxBytes, layout.root, total);
  if (freeBytes !== undefined) {
    const spec = 'percent' in config.storage.maxBytes ? `${config.storage.maxBytes.percent}% of the filesystem's size` : 'a size';
    log.warn(
      { budget: budget.maxBytes, freeBytes, storeBytes: total },
      `storage.maxBytes (${spec}) is more than the free space plus what the store holds: the disk may fill before eviction starts (writes then fail with 507 until it frees space); set storage.maxBytes to a size that fits`,
    );
  }
  const cache = new CacheTracker(blobs, recency, evictor);
  const registry = new Registry(blobs, uploads, repos, registryOptions(config), cache);
  log.info(
    { blobs: blobs.count, bytes: blobs.bytes, budget: budget.maxBytes, repositories: repos.repositories().length, index, leftovers, expiredUploads: expired },
    'store opened',
  );
  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => Promise<unknown>, what: string) =>
    timers.push(setInterval(() => void fn().catch((err: unknown) => log.error({ err }, `${what} failed`)), ms).unref());
  return {
    layout,
    registry,
    blobs,
    repos,
    recency,
    evictor,
    cache,
    admin: new Admin(layout, blobs, repos, recency, evictor),
    startBackground() {
      every(5_000, () => recency.flush(), 'recency flush');
      every(30_000, () => evictor.evictIfOver('high watermark'), 'eviction');
      every(Math.min(config.storage.uploadTtl / 4, 10 * 60_000), async () => {
        const n = await uploads.sweep();
        if (n) log.info({ removed: n }, 'expired upload sessions removed');
      }, 'upload expiry');
      void evictor.evictIfOver('start-up').catch((err: unknown) => log.error({ err }, 'eviction failed'));
    },
    async close() {
      for (const t of timers) clearInterval(t);
      await recency.close();
    },
  };
}

/**
 * The stores of a data directory for a worker process: the same indexes, loaded from disk, but no start-up
 * cleanup and no background work (the primary process owns those), and cache signals go to `hooks`.
 */
export async function openWorkerStores(config: Config, hooks: CacheHooks): Promise<{ registry: Registry; blobs: BlobStore; repos: RepositoryStore }> {
  const { blobs, uploads, repos } = newStores(config);
  await blobs.open();
  await repos.open();
  const registry = new Registry(blobs, uploads, repos, registryOptions(config), hooks);
  return { registry, blobs, repos };
}

const registryOptions = (config: Config) => ({
  automaticCrossMount: config.registry.automaticCrossMount,
  deleteEnabled: config.storage.deleteEnabled,
});

/** The registry alone, for tests and tools that need no background work. */
export async function openRegistry(config: Config, log: Logger): Promise<Registry> {
  return (await openStore(config, log)).registry;
}

