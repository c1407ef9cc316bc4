/** The S3 tier end to end over s3rver (fast, one per test); the same suites run on Ceph in s3-radosgw.test.ts. */
import { startS3 } from '../helpers/s3.js';
import { tierSuites } from './s3-tier.suites.js';

tierSuites(() => startS3());
