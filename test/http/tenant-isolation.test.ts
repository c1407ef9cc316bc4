/**
 * Tenant isolation (registry.tenantIsolation): with it on, a blob is readable through a repository only if that
 * repository has it — knowing a digest grants nothing (zot's advisory, DESIGN.md §9). With it off, one shared
 * store as before.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_CONFIG,
  OCI_LAYER,
  OCI_MANIFEST,
  binaryParser,
  blob,
  expectOciError,
  imageManifest,
  pushBlob,
  putManifest,
  sendBytes,
  startRegistry,
  type TestRegistry,
} from './harness.js';

const mount = (reg: TestRegistry, into: string, digest: string, from?: string) =>
  reg.http().post(`/v2/${into}/blobs/uploads/?mount=${digest}${from ? `&from=${from}` : ''}`);

describe('with tenantIsolation: on', () => {
  let reg: TestRegistry;
  const secret = blob(500);
  beforeAll(async () => {
    reg = await startRegistry({ registry: { tenantIsolation: 'on' } });
    await pushBlob(reg, 'b/x', secret.data);
  });
  afterAll(() => reg.close());

  it('a blob uploaded to b/x is readable there and unknown through a/y (HEAD and GET), like a blob that does not exist', async () => {
    expect((await reg.http().head(`/v2/b/x/blobs/${secret.digest}`)).status).toBe(200);
    const got = await reg.http().get(`/v2/b/x/blobs/${secret.digest}`).buffer(true).parse(binaryParser);
    expect(got.status).toBe(200);
    expect((got.body as Buffer).equals(secret.data)).toBe(true);

    expect((await reg.http().head(`/v2/a/y/blobs/${secret.digest}`)).status).toBe(404);
    const denied = await reg.http().get(`/v2/a/y/blobs/${secret.digest}`);
    expectOciError(denied, 404, 'BLOB_UNKNOWN');
    expect(denied.body.errors[0].message).toBe(`blob ${secret.digest} is unknown`); // as for a blob nobody has
    // Neither the parent nor a child of the repository has it.
    expect((await reg.http().head(`/v2/b/blobs/${secret.digest}`)).status).toBe(404);
    expect((await reg.http().head(`/v2/b/x/y/blobs/${secret.digest}`)).status).toBe(404);
  });

  it('a mount without from does not leak it: 202, a new upload session', async () => {
    const res = await mount(reg, 'a/y', secret.digest);
    expect(res.status).toBe(202);
    expect(res.headers.location).toMatch(/^\/v2\/a\/y\/blobs\/uploads\//);
    expect((await reg.http().head(`/v2/a/y/blobs/${secret.digest}`)).status).toBe(404);
  });

  it('a mount from a repository that does not have it is a new upload session, and grants nothing', async () => {
    const res = await mount(reg, 'a/y', secret.digest, 'c/z');
    expect(res.status).toBe(202);
    expect((await reg.http().head(`/v2/a/y/blobs/${secret.digest}`)).status).toBe(404);
    expect((await reg.http().head(`/v2/c/z/blobs/${secret.digest}`)).status).toBe(404);
  });

  it('a manifest in a/y referencing a blob only b/x has is MANIFEST_BLOB_UNKNOWN', async () => {
    const own = blob(300);
    await pushBlob(reg, 'a/y', own.data);
    const body = imageManifest({ mediaType: OCI_CONFIG, digest: own.digest, size: 300 }, [
      { mediaType: OCI_LAYER, digest: secret.digest, size: 500 },
    ]);
    const res = await sendBytes(reg.http().put('/v2/a/y/manifests/leak').set('Content-Type', OCI_MANIFEST), body);
    expectOciError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
    expect(res.body.errors[0].detail).toEqual({ digests: [secret.digest] });
    // b/x may: the blob is its own.
    await putManifest(reg, 'b/x', 'ok', imageManifest({ mediaType: OCI_CONFIG, digest: secret.digest, size: 500 }, []), OCI_MANIFEST);
  });

  it('a blob DELETE is refused alike whether the repository has the blob or not (the bytes are shared), and removes nothing', async () => {
    const other = blob(200);
    await pushBlob(reg, 'b/x', other.data);
    expectOciError(await reg.http().delete(`/v2/a/y/blobs/${other.digest}`), 405, 'UNSUPPORTED');
    expectOciError(await reg.http().delete(`/v2/b/x/blobs/${other.digest}`), 405, 'UNSUPPORTED');
    expect((await reg.http().head(`/v2/b/x/blobs/${other.digest}`)).status).toBe(200);
  });

  it('a mount into a/y from b/x succeeds, and then a/y has it — and a manifest of a/y may reference it', async () => {
    const res = await mount(reg, 'a/y', secret.digest, 'b/x');
    expect(res.status).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(secret.digest);
    expect((await reg.http().head(`/v2/a/y/blobs/${secret.digest}`)).status).toBe(200);
    await putManifest(reg, 'a/y', 'mounted', imageManifest({ mediaType: OCI_CONFIG, digest: secret.digest, size: 500 }, []), OCI_MANIFEST);
    // Now a/y can pass it on, and a mount without from into a repository that has it is fine.
    expect((await mount(reg, 'a/y', secret.digest)).status).toBe(201);
  });

  it('uploading content another repository already holds dedupes into the one store and gives the uploader access', async () => {
    const shared = blob(400);
    await pushBlob(reg, 'b/x', shared.data);
    expect((await reg.http().head(`/v2/d/w/blobs/${shared.digest}`)).status).toBe(404);
    // Monolithic this time: POST ?digest= with the body.
    const res = await reg.http().post(`/v2/d/w/blobs/uploads/?digest=${shared.digest}`).set('Content-Type', 'application/octet-stream').send(shared.data);
    expect(res.status).toBe(201);
    expect((await reg.http().head(`/v2/d/w/blobs/${shared.digest}`)).status).toBe(200);
  });

  it('a manifest is readable as a blob only through its own repository', async () => {
    const own = blob(100);
    await pushBlob(reg, 'e/v', own.data);
    const digest = await putManifest(reg, 'e/v', 't', imageManifest({ mediaType: OCI_CONFIG, digest: own.digest, size: 100 }, []), OCI_MANIFEST);
    expect((await reg.http().head(`/v2/e/v/blobs/${digest}`)).status).toBe(200);
    expect((await reg.http().head(`/v2/a/y/blobs/${digest}`)).status).toBe(404);
  });

  it('membership survives a restart', async () => {
    const dir = reg.dataDir;
    await reg.close({ keepDir: true });
    reg = await startRegistry({ registry: { tenantIsolation: 'on' } }, { dataDir: dir });
    expect((await reg.http().head(`/v2/b/x/blobs/${secret.digest}`)).status).toBe(200);
    expect((await reg.http().head(`/v2/a/y/blobs/${secret.digest}`)).status).toBe(200); // mounted above
    expect((await reg.http().head(`/v2/c/z/blobs/${secret.digest}`)).status).toBe(404);
  });
});

describe('with tenantIsolation: off (and auto without auth)', () => {
  for (const mode of ['off', 'auto'] as const) {
    it(`${mode}: one shared store, as before`, async () => {
      const reg = await startRegistry({ registry: { tenantIsolation: mode } });
      try {
        const b = blob(300);
        await pushBlob(reg, 'b/x', b.data);
        expect((await reg.http().head(`/v2/a/y/blobs/${b.digest}`)).status).toBe(200);
        expect((await reg.http().get(`/v2/a/y/blobs/${b.digest}`)).status).toBe(200);
        expect((await mount(reg, 'a/z', b.digest)).status).toBe(201);
        expect((await mount(reg, 'a/w', b.digest, 'c/nothing')).status).toBe(201);
        await putManifest(reg, 'c/q', 't', imageManifest({ mediaType: OCI_CONFIG, digest: b.digest, size: 300 }, []), OCI_MANIFEST);
      } finally {
        await reg.close();
      }
    });
  }
});
