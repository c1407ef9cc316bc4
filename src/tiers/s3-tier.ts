import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { S3Config } from '../config/schema.js';
import { prefixed, TierUnavailable, type Tier, type TierObject } from './tier.js';

/** A tier call fails fast when the store is unreachable: a read-through during an outage must not hang. */
const CONNECT_TIMEOUT_MS = 3_000;
/** A socket that moves nothing for this long is given up (a stalled store). */
const IDLE_TIMEOUT_MS = 30_000;

/** The SDK's failure shapes: a status code in `$metadata`, a name for the S3 error code. */
interface SdkError {
  name?: string;
  $metadata?: { httpStatusCode?: number };
  message?: string;
}

const statusOf = (e: unknown) => (e as SdkError)?.$metadata?.httpStatusCode;
const isMissing = (e: unknown) => statusOf(e) === 404 || ['NotFound', 'NoSuchKey'].includes((e as SdkError)?.name ?? '');

/** Every failure except "no such object" means the store cannot answer now. Messages never hold credentials. */
function unavailable(op: string, key: string, e: unknown): TierUnavailable {
  const status = statusOf(e);
  const what = (e as SdkError)?.name ?? 'Error';
  return new TierUnavailable(`S3 ${op} ${key} failed: ${what}${status ? ` (HTTP ${status})` : ''}: ${(e as SdkError)?.message ?? String(e)}`, e);
}

/** The SDK client for a tier's config. Credentials come from the SDK's default chain. */
export function s3Client(c: S3Config): S3Client {
  // The SDK is pinned to a release that supports Node 20 (package.json); its notice that later releases will
  // not would only fill every start-up's stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return new S3Client({
    region: c.region,
    ...(c.endpoint ? { endpoint: c.endpoint } : {}),
    forcePathStyle: c.forcePathStyle,
    // With flexible checksums the SDK sends streamed bodies as aws-chunked, which s3rver stores framing and all and
    // radosgw refuses (DESIGN.md §6): with `when_required` bodies go plain.
    requestChecksumCalculation: c.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    responseChecksumValidation: c.checksums === 'when_required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    maxAttempts: 2,
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: IDLE_TIMEOUT_MS },
  });
}

/** An S3-compatible bucket as a tier. Every byte read back is verified by the caller (stores differ; §6). */
export class S3Tier implements Tier {
  private readonly prefix: string;

  constructor(
    private readonly client: S3Client,
    private readonly config: S3Config,
  ) {
    this.prefix = config.prefix;
  }

  private key(k: string): string {
    return prefixed(this.prefix, k);
  }

  /**
   * Start-up check: the bucket exists and these credentials may use it. Throws an error that says which, for
   * `serve` to print; it never names the credentials themselves.
   */
  async check(): Promise<void> {
    const bucket = this.config.bucket;
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (e) {
      const status = statusOf(e);
      const name = (e as SdkError)?.name ?? '';
      const where = this.config.endpoint ? ` at ${this.config.endpoint}` : '';
      if (status === 404 || name === 'NotFound' || name === 'NoSuchBucket') throw new TierUnavailable(`tier.s3.bucket: bucket "${bucket}" does not exist${where}`);
      if (status === 403 || status === 401) throw new TierUnavailable(`tier.s3: the credentials were refused for bucket "${bucket}"${where} (HTTP ${status})`);
      if (name === 'CredentialsProviderError') throw new TierUnavailable(`tier.s3: no AWS credentials found (env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, web identity or an instance role)`);
      throw new TierUnavailable(`tier.s3: bucket "${bucket}"${where} cannot be reached: ${name || 'Error'}${status ? ` (HTTP ${status})` : ''}: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  async head(key: string): Promise<number | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: this.key(key) }));
      return r.ContentLength ?? 0;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw unavailable('HEAD', key, e);
    }
  }

  async get(key: string, range?: { start: number; end: number }): Promise<{ body: Readable; size: number } | undefined> {
    try {
      const r = await this.client.send(
        new GetObjectCommand({ Bucket: this.config.bucket, Key: this.key(key), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
      );
      if (!(r.Body instanceof Readable)) throw new Error('GetObject returned no stream');
      return { body: r.Body, size: r.ContentLength ?? 0 };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw unavailable('GET', key, e);
    }
  }

  async put(key: string, body: () => Readable | Buffer, size: number): Promise<void> {
    const Key = this.key(key);
    try {
      if (size < this.config.partSize) {
        // One request: a buffer, or a stream with its length declared (no multipart, no aws-chunked framing).
        await this.client.send(new PutObjectCommand({ Bucket: this.config.bucket, Key, Body: body(), ContentLength: size }));
        return;
      }
      const upload = new Upload({
        client: this.client,
        // The length, given: from a file stream lib-storage would read it as end − start, which is open-ended.
        params: { Bucket: this.config.bucket, Key, Body: body(), ContentLength: size },
        partSize: this.config.partSize,
        queueSize: 2,
        leavePartsOnError: false,
      });
      await upload.done();
    } catch (e) {
      throw unavailable('PUT', key, e);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: this.key(key) }));
    } catch (e) {
      if (isMissing(e)) return;
      throw unavailable('DELETE', key, e);
    }
  }

  async *list(prefix: string): AsyncIterable<TierObject> {
    const full = this.key(prefix);
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: full, ContinuationToken: token }));
      } catch (e) {
        throw unavailable('LIST', prefix, e);
      }
      for (const o of page.Contents ?? []) if (o.Key) yield { key: o.Key.slice(strip), size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }
}
