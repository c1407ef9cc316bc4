import { mkdir } from 'node:fs/promises';
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
import { BlobMembership } from './storage/blob-membership.js';
import { Recency } from './cache/recency.js';
import { Evictor } from './cache/evictor.js';
import { CacheTracker } from './cache/cache.js';
import { overcommitted, resolveBudget } from './cache/budget.js';
import { WriteLedger, type WriteLimits } from './cache/write-ledger.js';
import { LedgerGate, type WriteGate } from './storage/write-gate.js';
import { FallbackRules } from './registry/fallback.js';
import type { TierStats } from './tiers/write-back.js';
import { ReferenceStats } from './cache/reference-stats.js';
import { HitHistory } from './cache/hit-history.js';
import { openOwnerTier, readerTier, type OwnerTier } from './tiers/setup.js';
import { TierView, type TierDirectory } from './tiers/read-through.js';
import { tierKeys } from './tiers/tier.js';
import { parseDigest } from './core/digest.js';
import { ClaimBook, ownClaims, type PushClaims } from './registry/push-claims.js';

/** The stores of the configured data directory, not yet opened, writing under `gate`. */
function newStores(config: Config, table: DigestTable, gate: WriteGate) {
  const layout = new Layout(resolve(config.storage.dir));
  const blobs = new BlobStore(layout, table, gate);
  return { layout, table, blobs, uploads: new UploadStore(layout, blobs, gate), repos: new RepositoryStore(layout, table) };
}

/**
 * Whether repositories are isolated from each other (see Registry): `auto` means whenever authentication is
 * configured, since without it every caller may read every repository anyway.
 */
export function tenantIsolation(config: Config): boolean {
  const mode = config.registry.tenantIsolation;
  return mode === 'on' || (mode === 'auto' && config.auth !== undefined);
}

/** The blob membership index when isolation is on, loaded (and, by the data directory's owner, compacted). */
async function openMembership(config: Config, layout: Layout, table: DigestTable, owner: boolean): Promise<BlobMembership | undefined> {
  if (!tenantIsolation(config)) return undefined;
  const members = new BlobMembership(layout, table);
  await members.open(owner);
  return members;
}

/** The write limits of the configuration, for a budget of `maxBytes`. */
export function writeLimits(config: Config, maxBytes: number): WriteLimits {
  const s = config.storage;
  return {
    maxBytes,
    maxUploadBytes: s.maxUploadBytes,
    uploadShare: s.uploadShare,
    maxSessions: s.maxUploadSessions,
    maxSessionsPerClient: s.maxUploadSessionsPerClient,
    uploadTtlMs: s.uploadTtl,
    uploadIdleMs: s.uploadIdleTimeout,
  };
}

/** A data directory opened for serving: the registry and the cache machinery around it. */
export interface OpenedStore {
  layout: Layout;
  registry: Registry;
  blobs: BlobStore;
  uploads: UploadStore;
  repos: RepositoryStore;
  recency: Recency;
  evictor: Evictor;
  cache: CacheTracker;
  admin: Admin;
  /** The owner's book of writes in progress: the primary answers its workers' write requests from it. */
  ledger: WriteLedger;
  /** The owner's push claims (push-claims.ts), for every process; undefined when push coalescing is off. */
  claims?: ClaimBook;
  /** Per-reference analytics (pushes, imports, saved uploads), fed by every process's requests. */
  references: ReferenceStats;
  /** Cache hits and misses per minute over the last day, fed by every process's requests. */
  hits: HitHistory;
  /** The storage tier's figures for the metrics (store-metrics.ts); undefined without a tier. */
  tierStats?: () => TierStats;
  /** The tier below the local disk, when one is configured: every committed change goes to `observe`. */
  tier?: OwnerTier;
  /** Starts the timers: recency flushes, budget checks, upload expiry. */
  startBackground(): void;
  /** Stops the timers and persists recency and the blob index. */
  close(): Promise<void>;
}

/** Opens the stores of a data directory (already locked by the caller) and builds the registry over them. */
export async function openStore(config: Config, log: Logger, opts: { serving?: boolean } = {}): Promise<OpenedStore> {
  const root = resolve(config.storage.dir);
  await mkdir(root, { recursive: true });
  const table = new DigestTable();
  const budget = {
    maxBytes: await resolveBudget(config.storage.maxBytes, root),
    high: config.storage.highWatermark,
    low: config.storage.lowWatermark,
    graceSeconds: config.storage.pushGraceSeconds,
  };
  // Blob bytes as the store counts them: removed blobs count until their files are unlinked.
  const ledger = new WriteLedger(() => blobs.bytes, writeLimits(config, budget.maxBytes));
  const { layout, blobs, uploads, repos } = newStores(config, table, new LedgerGate((req) => ledger.handle(req, 'self')));
  const recency = new Recency(table, layout.state, layout.tmp, config.storage.pushGraceSeconds, () => blobs.saveIndex());
  await recency.open();
  const index = await blobs.open((digest, _size, mtimeMs) => recency.seedBlob(digest, Math.floor(mtimeMs / 1000)));
  const leftovers = await blobs.removeLeftovers();
  await uploads.open();
  for (const f of await uploads.scan()) ledger.seed(f.id, f.client, f.startedAt, f.lastActive, f.bytes);
  await repos.open();
  const references = new ReferenceStats(repos, blobs, layout.state, layout.tmp, config.analytics.maxReferences, config.storage.pushGraceSeconds, config.workers > 1 ? 250 : 0);
  await references.open();
  const hits = new HitHistory(layout.state, layout.tmp);
  await hits.open();
  const members = await openMembership(config, layout, table, true);
  let tier: OwnerTier | undefined;
  try {
    tier = await openOwnerTier(config, layout, blobs, repos, recency, log, opts.serving ?? true);
  } catch (e) {
    await recency.close();
    throw e;
  }
  const evictor = new Evictor(blobs, uploads, ledger, repos, recency, budget, log, tier && ((d) => tier.writeBack.holds(d)));
  ledger.makeRoom = (bytes) => evictor.makeRoom(bytes);
  const expired = await evictor.expireUploads();
  const { total } = evictor.usage();
  const freeBytes = await overcommitted(budget.maxBytes, layout.root, total);
  if (freeBytes !== undefined) {
    const spec = 'percent' in config.storage.maxBytes ? `${config.storage.maxBytes.percent}% of the filesystem's size` : 'a size';
    log.warn(
      { budget: budget.maxBytes, freeBytes, storeBytes: total },
      `storage.maxBytes (${spec}) is more than the free space plus what the store holds: the disk may fill before eviction starts (writes then fail with 507 until it frees space); set storage.maxBytes to a size that fits`,
    );
  }
  const cache = new CacheTracker(blobs, recency, evictor, tier && ((d) => tier.directory.blobSize(d)));
  const view = tier && new TierView(tier.tier, tier.directory, blobs, repos, config.registry.maxManifestBytes, log, config.tier!.s3!.tagStaleness);
  const claims = pushClaimBook(config);
  const registry = new Registry(blobs, uploads, repos, registryOptions(config), cache, members, view, claims && ownClaims(claims));
  log.info(
    {
      blobs: blobs.count,
      bytes: blobs.bytes,
      budget: budget.maxBytes,
      repositories: repos.repositories().length,
      index,
      leftovers,
      expiredUploads: expired,
      ...(members ? { tenantIsolation: { memberships: members.pairs } } : {}),
    },
    'store opened',
  );
  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => Promise<unknown>, what: string) =>
    timers.push(setInterval(() => void fn().catch((err: unknown) => log.error({ err }, `${what} failed`)), ms).unref());
  return {
    layout,
    registry,
    blobs,
    uploads,
    repos,
    recency,
    evictor,
    cache,
    references,
    hits,
    ...(tier ? { tier, tierStats: () => tier!.writeBack.status() } : {}),
    admin: new Admin(
      layout,
      blobs,
      repos,
      recency,
      evictor,
      references,
      hits,
      cache.fallbacks,
      tier && {
        status: () => tier.writeBack.status(),
        degraded: () => tier.writeBack.degraded,
        // For verify: a bucket that cannot answer counts as holding it, so that an outage never has references
        // repaired away.
        present: async (d) =>
          tier.writeBack.blobSize(d) !== undefined || tier.tier.head(tierKeys.blob(parseDigest(d))).then((size) => size !== undefined, () => true),
        ...(tier.retention ? { retention: (dryRun: boolean) => tier.retention!.run(dryRun) } : {}),
      },
    ),
    ledger,
    ...(claims ? { claims } : {}),
    ...(tier ? { tier } : {}),
    startBackground() {
      tier?.writeBack.start();
      const retention = tier?.retention;
      if (retention) every(config.tier!.s3!.touchInterval, () => retention.run(), 'bucket retention');
      every(5_000, () => recency.flush(), 'recency flush');
      every(5_000, () => references.flush(), 'reference analytics flush');
      every(5_000, () => hits.flush(), 'hit rate flush');
      every(30_000, () => evictor.evictIfOver('high watermark'), 'eviction');
      every(Math.min(config.storage.uploadIdleTimeout / 4, 30_000), async () => {
        const started = performance.now();
        const n = await evictor.expireUploads();
        if (n) log.info({ removed: n, ms: Math.round(performance.now() - started) }, 'expired upload sessions removed');
      }, 'upload expiry');
      void evictor.evictIfOver('start-up').catch((err: unknown) => log.error({ err }, 'eviction failed'));
    },
    async close() {
      for (const t of timers) clearInterval(t);
      await tier?.writeBack.close();
      await recency.close();
      await references.flush();
      await hits.flush();
    },
  };
}

/**
 * The stores of a data directory for a worker process: the same indexes, loaded from disk, but no start-up
 * cleanup and no background work (the primary process owns those); cache signals go to `hooks` and write
 * decisions to `gate` (both answered by the primary).
 */
export async function openWorkerStores(
  config: Config,
  log: Logger,
  hooks: CacheHooks,
  gate: WriteGate,
  directory: TierDirectory,
  /** The owner's push claims, asked over IPC; absent when push coalescing is off. */
  claims: PushClaims | undefined,
): Promise<{ registry: Registry; blobs: BlobStore; repos: RepositoryStore }> {
  const { layout, table, blobs, uploads, repos } = newStores(config, new DigestTable(), gate);
  await blobs.open();
  await repos.open();
  const members = await openMembership(config, layout, table, false);
  const tier = await readerTier(config);
  const view = tier && new TierView(tier, directory, blobs, repos, config.registry.maxManifestBytes, log, config.tier!.s3!.tagStaleness);
  const registry = new Registry(blobs, uploads, repos, registryOptions(config), hooks, members, view, claims);
  return { registry, blobs, repos };
}

/** The owner's book of push claims, unless push coalescing is off. */
const pushClaimBook = (config: Config) =>
  config.registry.concurrentPushWait > 0 ? new ClaimBook(config.registry.concurrentPushWait) : undefined;

const registryOptions = (config: Config) => ({
  automaticCrossMount: config.registry.automaticCrossMount,
  deleteEnabled: config.storage.deleteEnabled,
  fallback: new FallbackRules(config.registry.fallback),
});
