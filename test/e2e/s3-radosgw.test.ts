/**
 * The S3 tier's end-to-end and sharing suites, and the bucket bound's, on Ceph radosgw: one one-node cluster for
 * this file, a bucket per test. radosgw differs from s3rver where it matters (it checks v4 signatures, refuses
 * aws-chunked bodies without a length, answers CompleteMultipartUpload with an empty ETag), so the tier is proven
 * on both.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { radosgwMissing, startRadosgw, startRadosgwCluster, stopRadosgw } from '../helpers/radosgw.js';
import { retentionSuites } from './s3-retention.suites.js';
import { tierSuites } from './s3-tier.suites.js';

describe.skipIf(radosgwMissing)('on Ceph radosgw', () => {
  // The cluster's start (~20 s, more on a loaded machine) is not any one test's time.
  beforeAll(startRadosgwCluster, 180_000);
  afterAll(stopRadosgw, 30_000);
  tierSuites(startRadosgw);
  retentionSuites(startRadosgw);
});
