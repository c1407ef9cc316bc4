import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_CONFIG,
  binaryParser,
  blob,
  expectOciError,
  expectServing,
  imageManifest,
  pushBlob,
  putManifest,
  sha256,
  startRegistry,
  storedBlobDigests,
  type TestRegistry,
} from './harness.js';

let reg: TestRegistry;
const content = blob(1000);
beforeAll(async () => {
  reg = await startRegistry();
  await pushBlob(reg, 'org/app', content.data);
});
afterAll(async () => {
  await reg.close();
});

const path = (digest: string, name = 'org/app') => `/v2/${name}/blobs/${digest}`;
const get = (p: string) => reg.http().get(p).buffer(true).parse(binaryParser);

describe('HEAD blob', () => {
  it('answers size, digest and range support without a body', async () => {
    const res = await reg.http().head(path(content.digest));
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('1000');
    expect(res.headers['docker-content-digest']).toBe(content.digest);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('finds the blob from any repository (one shared store)', async () => {
    const res = await reg.http().head(path(content.digest, 'other/repo'));
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('1000');
  });

  it('answers 404 for an unknown blob', async () => {
    const res = await reg.http().head(path(sha256('nope')));
    expect(res.status).toBe(404);
  });
});

describe('GET blob', () => {
  it('returns the bytes with digest and length', async () => {
    const res = await get(path(content.digest));
    expect(res.status).toBe(200);
    expect(Buffer.compare(res.body as Buffer, content.data)).toBe(0);
    expect(res.headers['content-length']).toBe('1000');
    expect(res.headers['docker-content-digest']).toBe(content.digest);
    expect(res.headers['accept-ranges']).toBe('bytes');
  });

  it('answers 404 BLOB_UNKNOWN for an unknown blob', async () => {
    const res = await reg.http().get(path(sha256('nope')));
    expectOciError(res, 404, 'BLOB_UNKNOWN');
  });

  it.each([
    ['bytes=0-99', 0, 99],
    ['bytes=100-199', 100, 199],
    ['bytes=990-', 990, 999],
    ['bytes=999-999', 999, 999],
    ['bytes=900-5000', 900, 999],
    ['bytes=-10', 990, 999],
    ['bytes=-1', 999, 999],
    ['bytes=-2000', 0, 999],
  ])('Range %s → 206 with Content-Range', async (range, start, end) => {
    const res = await get(path(content.digest)).set('Range', range);
    expect(res.status).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/1000`);
    expect(res.headers['content-length']).toBe(String(end - start + 1));
    expect(res.headers['docker-content-digest']).toBe(content.digest);
    expect(Buffer.compare(res.body as Buffer, content.data.subarray(start, end + 1))).toBe(0);
  });

  it.each(['bytes=1000-', 'bytes=1000-1001', 'bytes=5000-6000', 'bytes=-0', 'bytes=20-10', 'bytes=abc', 'bytes=--5'])(
    'unsatisfiable or malformed Range %s → 416 with Content-Range bytes */size',
    async (range) => {
      const res = await reg.http().get(path(content.digest)).set('Range', range);
      expectOciError(res, 416, 'RANGE_INVALID');
      expect(res.headers['content-range']).toBe('bytes */1000');
    },
  );

  it('answers several or overlapping ranges with the whole blob', async () => {
    for (const range of ['bytes=0-10,20-30', 'bytes=0-500,250-750']) {
      const res = await get(path(content.digest)).set('Range', range);
      expect(res.status).toBe(200);
      expect(Buffer.compare(res.body as Buffer, content.data)).toBe(0);
    }
  });

  it('serves an empty blob, and refuses any range of it', async () => {
    const empty = Buffer.alloc(0);
    const digest = await pushBlob(reg, 'org/app', empty);
    expect(digest).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    const res = await get(path(digest));
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('0');
    expect((res.body as Buffer).length).toBe(0);
    const head = await reg.http().head(path(digest));
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('0');
    const ranged = await reg.http().get(path(digest)).set('Range', 'bytes=0-');
    expect(ranged.status).toBe(416);
  });

  it('streams a multi-MiB blob intact', async () => {
    const big = blob(5 * 1024 * 1024 + 17);
    await pushBlob(reg, 'org/big', big.data);
    const res = await get(path(big.digest, 'org/big'));
    expect(res.status).toBe(200);
    expect(sha256(res.body as Buffer)).toBe(big.digest);
    const tail = await get(path(big.digest, 'org/big')).set('Range', 'bytes=-100');
    expect(Buffer.compare(tail.body as Buffer, big.data.subarray(big.data.length - 100))).toBe(0);
  });
});

describe('DELETE blob', () => {
  it('deletes an unreferenced blob: 202, then 404', async () => {
    const b = blob(300);
    await pushBlob(reg, 'org/del', b.data);
    const res = await reg.http().delete(path(b.digest, 'org/del'));
    expect(res.status).toBe(202);
    expect((await reg.http().head(path(b.digest, 'org/del'))).status).toBe(404);
    expectOciError(await reg.http().get(path(b.digest, 'org/del')), 404, 'BLOB_UNKNOWN');
    expect(await storedBlobDigests(reg.dataDir)).not.toContain(b.digest);
    expectOciError(await reg.http().delete(path(b.digest, 'org/del')), 404, 'BLOB_UNKNOWN');
  });

  it('refuses to delete a blob a manifest still references', async () => {
    const config = blob(50);
    await pushBlob(reg, 'org/ref', config.data);
    await putManifest(reg, 'org/ref', 'v1', imageManifest({ mediaType: OCI_CONFIG, digest: config.digest, size: 50 }, []), 'application/vnd.oci.image.manifest.v1+json');
    // 405 UNSUPPORTED (not 403 DENIED, which clients read as an auth failure): delete the manifest first.
    const res = await reg.http().delete(path(config.digest, 'org/ref'));
    expectOciError(res, 405, 'UNSUPPORTED');
    expect((await reg.http().head(path(config.digest, 'org/ref'))).status).toBe(200);
  });

  it('answers 405 UNSUPPORTED when deletion is disabled', async () => {
    const noDelete = await startRegistry({ storage: { deleteEnabled: false } });
    try {
      const b = blob(10);
      await pushBlob(noDelete, 'org/app', b.data);
      expectOciError(await noDelete.http().delete(path(b.digest)), 405, 'UNSUPPORTED');
      expect((await noDelete.http().head(path(b.digest))).status).toBe(200);
      expect(existsSync(join(noDelete.dataDir, 'blobs', 'sha256', b.digest.slice(7, 9), b.digest.slice(7)))).toBe(true);
    } finally {
      await noDelete.close();
    }
  });

  it('still serves', async () => {
    await expectServing(reg);
  });
});
