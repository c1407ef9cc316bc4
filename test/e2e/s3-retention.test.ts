/** The bucket bound end to end over s3rver; the same suites run on Ceph in s3-radosgw.test.ts. */
import { startS3 } from '../helpers/s3.js';
import { retentionSuites } from './s3-retention.suites.js';

retentionSuites(() => startS3());
