/**
 * A daemon over an S3 tier for the end-to-end suites, and what they check of the bucket.
 */
import { appendFile } from 'node:fs/promises';
import { expect } from 'vitest';
import { makeTempDir, type DaemonOptions } from './daemon.js';
import { startCache, status, waitFor, writeCacheConfig, type CacheDaemon, type PushedRef, type StatusJson } from './cache-helpers.js';
import { S3_ENV, tierConfig, type S3Server } from './s3.js';

export const hex = (digest: string) => digest.slice('sha256:'.length);

export interface TierDaemonOptions {
  workers: number;
  maxBytes?: number | string;
  pushGraceSeconds?: number;
  dataDir?: string;
  /** Where the daemon finds the store: the server itself, or a proxy in front of it. */
  endpoint?: string;
  /** More `tier.s3` keys, as YAML lines. */
  s3Yaml?: string;
}

export async function startTierDaemon(s3: S3Server, o: TierDaemonOptions, extra: DaemonOptions = {}): Promise<CacheDaemon> {
  const configPath = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), {
    maxBytes: o.maxBytes ?? '1GiB',
    pushGraceSeconds: o.pushGraceSeconds ?? 900,
    workers: o.workers,
  });
  await appendFile(configPath, tierConfig(o.endpoint ?? s3.endpoint, s3.bucket, o.s3Yaml));
  return startCache({ maxBytes: 0, pushGraceSeconds: 0, configPath, ...(o.dataDir ? { dataDir: o.dataDir } : {}) }, { ...extra, env: { ...S3_ENV, ...extra.env } });
}

export type TierJson = NonNullable<StatusJson['tier']>;
export const tierOf = async (d: CacheDaemon): Promise<TierJson> => (await status(d.url)).tier!;

export async function drained(d: CacheDaemon, timeoutMs = 30_000): Promise<void> {
  await waitFor('the write-back queue to drain', async () => (await tierOf(d)).backlog === 0, timeoutMs, 100);
}

/** Every blob, the manifest record and the tag of `ref` are in the bucket, byte for byte. */
export async function expectInBucket(s3: S3Server, ref: PushedRef): Promise<void> {
  for (const [d, data] of [...ref.blobs, [ref.digest, ref.manifest] as const]) {
    const got = await s3.getObject(`bc/blobs/sha256/${hex(d)}`);
    expect(got?.equals(data), `blob ${d} in the bucket`).toBe(true);
  }
  const record = await s3.getObject(`bc/repositories/${ref.repo}/_manifests/sha256/${hex(ref.digest)}.json`);
  const parsed = JSON.parse(record!.toString('utf8')) as { digest: string; references: string[] };
  expect(parsed.digest).toBe(ref.digest);
  expect([...parsed.references].sort()).toEqual([...ref.blobs.keys()].sort());
  expect((await s3.getObject(`bc/repositories/${ref.repo}/_tags/${ref.tag}`))?.toString()).toBe(ref.digest);
}

