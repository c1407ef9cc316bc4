import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { Layout } from '../storage/layout.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import type { Recency } from '../cache/recency.js';
import { OwnerDirectory } from './directory.js';
import { BucketRetention, DAY_MS } from './retention.js';
import type { S3Tier } from './s3-tier.js';
import { WriteBack } from './write-back.js';

/** The tier as the data directory's owner runs it: the store itself, the write-back queue, the directory, and the
 *  bucket's own bound (absent with `retentionDays: 0`, which keeps the bucket's content forever). */
export interface OwnerTier {
  tier: S3Tier;
  writeBack: WriteBack;
  directory: OwnerDirectory;
  retention?: BucketRetention;
}

/** The configured tier for a process that only reads from it (a worker); undefined without one. The AWS SDK is
 *  loaded only then: it is several MiB of every process's memory, for a tier most daemons do not have. */
export async function readerTier(config: Config): Promise<S3Tier | undefined> {
  const s3 = config.tier?.s3;
  if (!s3) return undefined;
  const { S3Tier, s3Client } = await import('./s3-tier.js');
  return new S3Tier(s3Client(s3), s3);
}

/**
 * Opens the configured tier for the owner: checks that the bucket exists and takes these credentials (start-up
 * stops otherwise, saying which), then replays the write-back journal and starts uploading.
 */
export async function openOwnerTier(
  config: Config,
  layout: Layout,
  blobs: BlobStore,
  repos: RepositoryStore,
  recency: Recency,
  log: Logger,
  serving: boolean,
): Promise<OwnerTier | undefined> {
  const s3 = config.tier?.s3;
  const tier = await readerTier(config);
  if (!s3 || !tier) return undefined;
  // The CLI's own opening (no daemon runs) reads the journal only: it uploads nothing, so it needs no bucket.
  if (serving) await tier.check();
  const writeBack = new WriteBack(tier, layout, blobs, repos, s3.uploadConcurrency, log);
  await writeBack.open();
  if (serving) log.info({ bucket: s3.bucket, prefix: s3.prefix, endpoint: s3.endpoint ?? null, backlog: writeBack.status().backlog }, 'S3 tier ready');
  const retention = s3.retentionDays > 0 ? new BucketRetention(tier, writeBack, blobs, repos, recency, s3.retentionDays * DAY_MS, log) : undefined;
  return { tier, writeBack, directory: new OwnerDirectory(tier, writeBack), ...(retention ? { retention } : {}) };
}
