import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CACHE_CONFIG,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_LAYER,
  OCI_MANIFEST,
  binaryParser,
  blob,
  expectOciError,
  expectServing,
  imageManifest,
  pushBlob,
  pushBlobs,
  pushImage,
  putManifest,
  sendBytes,
  sha256,
  snapshot,
  startRegistry,
  type Descriptor,
  type TestRegistry,
} from './harness.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/buildkit-cache/', import.meta.url));

interface Fixture {
  file: string;
  bytes: Buffer;
  digest: string;
  doc: Record<string, unknown>;
}
const fixtures: Fixture[] = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((file) => {
    const bytes = readFileSync(FIXTURES + file);
    return { file, bytes, digest: sha256(bytes), doc: JSON.parse(bytes.toString('utf8')) as Record<string, unknown> };
  });
const manifestFixtures = fixtures.filter((f) => f.doc.schemaVersion === 2);
const blobFixtures = fixtures.filter((f) => f.doc.schemaVersion !== 2);
const fixtureByDigest = new Map(fixtures.map((f) => [f.digest, f]));

let reg: TestRegistry;
beforeAll(async () => {
  reg = await startRegistry();
});
afterAll(async () => {
  await reg.close();
});

function getManifest(r: TestRegistry, name: string, ref: string, accept?: string) {
  const req = r.http().get(`/v2/${name}/manifests/${ref}`).buffer(true).parse(binaryParser);
  if (accept) req.set('Accept', accept);
  return req;
}

function put(r: TestRegistry, name: string, ref: string, body: Buffer, contentType?: string) {
  const req = r.http().put(`/v2/${name}/manifests/${ref}`);
  if (contentType) req.set('Content-Type', contentType);
  return sendBytes(req, body);
}

/** GET by tag and digest and HEAD: byte-for-byte, stored media type, digest and length headers. */
async function expectServed(r: TestRegistry, name: string, tag: string | undefined, body: Buffer, mediaType: string): Promise<void> {
  const digest = sha256(body);
  for (const ref of tag ? [tag, digest] : [digest]) {
    const res = await getManifest(r, name, ref);
    expect(res.status).toBe(200);
    expect(Buffer.compare(res.body as Buffer, body)).toBe(0);
    expect(res.headers['content-type']).toBe(mediaType);
    expect(res.headers['docker-content-digest']).toBe(digest);
    expect(res.headers['content-length']).toBe(String(body.length));
    const head = await r.http().head(`/v2/${name}/manifests/${ref}`);
    expect(head.status).toBe(200);
    expect(head.headers['content-type']).toBe(mediaType);
    expect(head.headers['docker-content-digest']).toBe(digest);
    expect(head.headers['content-length']).toBe(String(body.length));
  }
}

describe('the four manifest media types', () => {
  const cases: Array<[string, (r: TestRegistry, name: string) => Promise<Buffer>]> = [
    [
      OCI_MANIFEST,
      async (r, name) => {
        const [config] = await pushBlobs(r, name, 1, OCI_CONFIG);
        return imageManifest(config!, await pushBlobs(r, name, 3));
      },
    ],
    [
      DOCKER_MANIFEST,
      async (r, name) => {
        const [config] = await pushBlobs(r, name, 1, 'application/vnd.docker.container.image.v1+json');
        const layers = await pushBlobs(r, name, 2, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
        return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config, layers }, null, 3));
      },
    ],
    [
      OCI_INDEX,
      async (r, name) => {
        const children: Descriptor[] = [];
        for (const arch of ['amd64', 'arm64']) {
          const { body } = await pushImage(r, name, `child-${arch}`);
          children.push({ mediaType: OCI_MANIFEST, digest: sha256(body), size: body.length, platform: { architecture: arch, os: 'linux' } });
        }
        return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }));
      },
    ],
    [
      DOCKER_LIST,
      async (r, name) => {
        const [config] = await pushBlobs(r, name, 1, 'application/vnd.docker.container.image.v1+json');
        const layers = await pushBlobs(r, name, 1, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
        const child = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config, layers }));
        await putManifest(r, name, sha256(child), child, DOCKER_MANIFEST);
        const list = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [{ mediaType: DOCKER_MANIFEST, digest: sha256(child), size: child.length, platform: { architecture: 'amd64', os: 'linux' } }] };
        return Buffer.from(JSON.stringify(list));
      },
    ],
  ];

  describe.each(cases)('%s', (mediaType, build) => {
    const name = `types/${mediaType.split('.').slice(-2).join('-').replace(/[^a-z0-9-]/g, '')}`;
    let body: Buffer;
    beforeAll(async () => {
      body = await build(reg, name);
    });

    it('PUT by tag → 201 with Location and Docker-Content-Digest; GET/HEAD byte-for-byte', async () => {
      const res = await put(reg, name, 'v1', body, mediaType);
      expect(res.status).toBe(201);
      expect(res.headers.location).toBe(`/v2/${name}/manifests/${sha256(body)}`);
      expect(res.headers['docker-content-digest']).toBe(sha256(body));
      await expectServed(reg, name, 'v1', body, mediaType);
    });

    it('PUT by digest → 201, served by digest', async () => {
      const other = `${name}-bydigest`;
      const res = await put(reg, other, sha256(body), body, mediaType);
      expect(res.status).toBe(201);
      expect(res.headers['docker-content-digest']).toBe(sha256(body));
      await expectServed(reg, other, undefined, body, mediaType);
      const tags = await reg.http().get(`/v2/${other}/tags/list`);
      expect(tags.body.tags).toEqual([]);
    });

    it('PUT without Content-Type stores the media type the body declares', async () => {
      const other = `${name}-notype`;
      const res = await put(reg, other, 'latest', body);
      expect(res.status).toBe(201);
      await expectServed(reg, other, 'latest', body, mediaType);
    });

    it('DELETE by tag → 202 removes only the tag; DELETE by digest → 202 removes the manifest', async () => {
      const other = `${name}-delete`;
      await putManifest(reg, other, 'gone', body, mediaType);
      await putManifest(reg, other, 'kept', body, mediaType);
      expect((await reg.http().delete(`/v2/${other}/manifests/gone`)).status).toBe(202);
      expectOciError(await getManifest(reg, other, 'gone'), 404, 'MANIFEST_UNKNOWN');
      await expectServed(reg, other, 'kept', body, mediaType);
      expect((await reg.http().delete(`/v2/${other}/manifests/${sha256(body)}`)).status).toBe(202);
      expectOciError(await getManifest(reg, other, sha256(body)), 404, 'MANIFEST_UNKNOWN');
      expectOciError(await getManifest(reg, other, 'kept'), 404, 'MANIFEST_UNKNOWN');
      expect((await reg.http().head(`/v2/${other}/manifests/kept`)).status).toBe(404);
      // The original repository is untouched.
      await expectServed(reg, name, 'v1', body, mediaType);
    });
  });
});

describe('BuildKit cache shapes', () => {
  /**
   * A manifest of the same shape as a fixture (same media types, annotations, layout, formatting) whose every
   * descriptor points at a blob pushed here: the fixture's own bytes when the fixture set holds them (cache
   * configs, image config), small random stand-ins otherwise.
   */
  async function sameShape(r: TestRegistry, name: string, f: Fixture): Promise<Buffer> {
    const replace = async (d: Descriptor): Promise<Descriptor> => {
      const known = fixtureByDigest.get(d.digest);
      if (known) {
        await pushBlob(r, name, known.bytes);
        return d;
      }
      const stand = blob(Math.min(d.size, 512));
      await pushBlob(r, name, stand.data);
      return { ...d, digest: stand.digest, size: stand.data.length };
    };
    const doc = structuredClone(f.doc) as Record<string, unknown> & { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (doc.manifests) doc.manifests = await Promise.all(doc.manifests.map(replace));
    if (doc.config) doc.config = await replace(doc.config);
    if (doc.layers) doc.layers = await Promise.all(doc.layers.map(replace));
    return Buffer.from(pretty(f) ? JSON.stringify(doc, null, 2) : JSON.stringify(doc));
  }
  const pretty = (f: Fixture) => f.bytes.includes('\n');

  it('regenerating a fixture without replacing anything gives its exact bytes (the shape is faithful)', () => {
    for (const f of manifestFixtures) {
      const again = Buffer.from(pretty(f) ? JSON.stringify(f.doc, null, 2) : JSON.stringify(f.doc));
      expect(Buffer.compare(again, f.bytes), f.file).toBe(0);
    }
  });

  describe.each(manifestFixtures.map((f) => [f.file, f] as const))('%s', (file, f) => {
    const name = `cache/${file.replace(/\.raw\.json$/, '').replace(/[^a-z0-9]+/g, '-')}`;
    const mediaType = f.doc.mediaType as string;

    it('a manifest of the same shape round-trips byte-for-byte with its media type', async () => {
      const body = await sameShape(reg, name, f);
      await putManifest(reg, name, 'buildcache', body, mediaType);
      await expectServed(reg, name, 'buildcache', body, mediaType);
    });

    it('the fixture itself is refused with 400 MANIFEST_BLOB_UNKNOWN while its layers are absent, and nothing is stored', async () => {
      const fresh = `${name}-raw`;
      // Blobs the fixture set does hold (cache config, image config) are pushed first and so are not reported.
      const refs: Descriptor[] = Array.isArray(f.doc.manifests)
        ? (f.doc.manifests as Descriptor[])
        : [f.doc.config as Descriptor, ...(f.doc.layers as Descriptor[])];
      for (const d of refs) {
        const known = fixtureByDigest.get(d.digest);
        if (known) await pushBlob(reg, fresh, known.bytes);
      }
      const missing = [...new Set(refs.map((d) => d.digest).filter((d) => !fixtureByDigest.has(d)))];
      expect(missing.length).toBeGreaterThan(0);
      const before = await snapshot(reg.dataDir);
      for (const ref of ['buildcache', f.digest]) {
        const res = await put(reg, fresh, ref, f.bytes, mediaType);
        expectOciError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
        const detail = res.body.errors[0].detail as { digests: string[] };
        expect(detail.digests).toEqual(missing.slice(0, detail.digests.length));
        expect(detail.digests.length).toBe(Math.min(missing.length, 20));
      }
      expect(await snapshot(reg.dataDir)).toEqual(before);
      expectOciError(await getManifest(reg, fresh, 'buildcache'), 404, 'MANIFEST_UNKNOWN');
      expectOciError(await getManifest(reg, fresh, f.digest), 404, 'MANIFEST_UNKNOWN');
    });
  });

  it.each(blobFixtures.map((f) => [f.file, f] as const))('blob fixture %s is stored under its registry digest', async (_file, f) => {
    const readme = readFileSync(FIXTURES + 'README.md', 'utf8');
    expect(readme).toContain(`${f.file} | ${f.digest.slice(0, 19)}`);
    const res = await reg.http().post(`/v2/cache/blobs/blobs/uploads/?digest=${f.digest}`).set('Content-Type', 'application/octet-stream').send(f.bytes);
    expect(res.status).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(f.digest);
    const get = await reg.http().get(`/v2/cache/blobs/blobs/${f.digest}`).buffer(true).parse(binaryParser);
    expect(Buffer.compare(get.body as Buffer, f.bytes)).toBe(0);
  });

  it('accepts an index of layers + cache config with no platform and unknown layer types', async () => {
    const name = 'cache/unknown-types';
    const layers = [
      ...(await pushBlobs(reg, name, 1, 'application/vnd.oci.image.layer.v1.tar')),
      ...(await pushBlobs(reg, name, 1, 'application/vnd.oci.image.layer.v1.tar+zstd')),
      ...(await pushBlobs(reg, name, 1, 'application/vnd.example.layer.v9+lz4')),
    ];
    const config = (await pushBlobs(reg, name, 1, CACHE_CONFIG))[0]!;
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...layers, config] }));
    await putManifest(reg, name, 'main', body, OCI_INDEX);
    await expectServed(reg, name, 'main', body, OCI_INDEX);
  });

  it('accepts a mode=max sized index (> 1 MiB, under the 4 MiB default limit)', async () => {
    const name = 'cache/big';
    const layers = await pushBlobs(reg, name, 2);
    const entries = Array.from({ length: 9000 }, (_, i) => ({ ...layers[i % 2]!, annotations: { 'buildkit/createdat': `2026-01-01T00:00:${i}Z`, 'containerd.io/uncompressed': sha256(String(i)) } }));
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }));
    expect(body.length).toBeGreaterThan(1024 * 1024);
    await putManifest(reg, name, 'main', body, OCI_INDEX);
    await expectServed(reg, name, 'main', body, OCI_INDEX);
  });
});

describe('tags', () => {
  it('last writer wins when a tag is overwritten; the old manifest stays by digest', async () => {
    const name = 'tags/overwrite';
    const a = await pushImage(reg, name, 'main');
    const b = await pushImage(reg, name, 'main');
    expect(a.digest).not.toBe(b.digest);
    await expectServed(reg, name, 'main', b.body, OCI_MANIFEST);
    await expectServed(reg, name, undefined, a.body, OCI_MANIFEST);
  });

  it('concurrent writers of one tag: the tag ends on one of them, consistently', async () => {
    const name = 'tags/race';
    const [config] = await pushBlobs(reg, name, 1, OCI_CONFIG);
    const layers = await pushBlobs(reg, name, 8);
    const bodies = layers.map((l) => imageManifest(config!, [l]));
    const results = await Promise.all(bodies.map((body) => put(reg, name, 'main', body, OCI_MANIFEST)));
    expect(results.map((r) => r.status)).toEqual(bodies.map(() => 201));
    const res = await getManifest(reg, name, 'main');
    const served = res.body as Buffer;
    expect(bodies.some((b) => Buffer.compare(b, served) === 0)).toBe(true);
    expect(res.headers['docker-content-digest']).toBe(sha256(served));
  });

  it('pushing the same manifest again is idempotent', async () => {
    const name = 'tags/same';
    const { body, digest } = await pushImage(reg, name, 'v1');
    expect(await putManifest(reg, name, 'v1', body, OCI_MANIFEST)).toBe(digest);
    await expectServed(reg, name, 'v1', body, OCI_MANIFEST);
  });
});

describe('digests and names', () => {
  it('stores a manifest PUT by a sha512 digest under that digest', async () => {
    const name = 'digests/sha512';
    const [config] = await pushBlobs(reg, name, 1, OCI_CONFIG);
    const body = imageManifest(config!, []);
    const digest = `sha512:${createHash('sha512').update(body).digest('hex')}`;
    const res = await put(reg, name, digest, body, OCI_MANIFEST);
    expect(res.status).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(digest);
    expect(res.headers.location).toBe(`/v2/${name}/manifests/${digest}`);
    const got = await getManifest(reg, name, digest);
    expect(got.status).toBe(200);
    expect(Buffer.compare(got.body as Buffer, body)).toBe(0);
    expect(got.headers['docker-content-digest']).toBe(digest);
    expect((await reg.http().delete(`/v2/${name}/manifests/${digest}`)).status).toBe(202);
    expect((await reg.http().head(`/v2/${name}/manifests/${digest}`)).status).toBe(404);
  });

  it.each(['org/blobs', 'org/blobs/uploads', 'org/manifests', 'org/tags', 'org/referrers', 'blobs/manifests/tags'])(
    'routes a repository named like the API (%s) as that repository',
    async (name) => {
      const { body, digest } = await pushImage(reg, name, 'latest');
      await expectServed(reg, name, 'latest', body, OCI_MANIFEST);
      expect((await reg.http().get(`/v2/${name}/tags/list`)).body).toEqual({ name, tags: ['latest'] });
      expect((await reg.http().get(`/v2/${name}/referrers/${digest}`)).status).toBe(200);
      const location = (await reg.http().post(`/v2/${name}/blobs/uploads/`)).headers.location as string;
      expect(location).toMatch(new RegExp(`^/v2/${name}/blobs/uploads/[0-9a-f-]{36}$`));
      expect((await reg.http().get(location)).status).toBe(204);
      expect((await reg.http().delete(location)).status).toBe(204);
    },
  );
});

describe('manifest errors', () => {
  const name = 'errors/app';
  let config: Descriptor;
  let layers: Descriptor[];
  beforeAll(async () => {
    [config] = (await pushBlobs(reg, name, 1, OCI_CONFIG)) as [Descriptor];
    layers = await pushBlobs(reg, name, 2);
  });

  async function expectRefused(body: Buffer, contentType: string | undefined, status: number, code: string, ref = 'bad'): Promise<void> {
    const before = await snapshot(reg.dataDir);
    const res = await put(reg, name, ref, body, contentType);
    expectOciError(res, status, code);
    expect(await snapshot(reg.dataDir)).toEqual(before);
    expect((await reg.http().head(`/v2/${name}/manifests/${ref}`)).status).toBe(404);
    expect((await reg.http().head(`/v2/${name}/manifests/${sha256(body)}`)).status).toBe(404);
    await expectServing(reg);
  }

  it('invalid JSON → 400 MANIFEST_INVALID', async () => {
    await expectRefused(Buffer.from('{"schemaVersion":2,'), OCI_MANIFEST, 400, 'MANIFEST_INVALID');
    await expectRefused(Buffer.from('\u0000\u0001binary'), OCI_MANIFEST, 400, 'MANIFEST_INVALID');
    await expectRefused(Buffer.alloc(0), OCI_MANIFEST, 400, 'MANIFEST_INVALID');
  });

  it('structurally invalid manifests → 400 MANIFEST_INVALID', async () => {
    await expectRefused(Buffer.from(JSON.stringify({ schemaVersion: 1, name, tag: 'x', fsLayers: [] })), OCI_MANIFEST, 400, 'MANIFEST_INVALID');
    await expectRefused(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers })), OCI_MANIFEST, 400, 'MANIFEST_INVALID');
    await expectRefused(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_LAYER, digest: 'sha256:../../etc/passwd', size: 1 }] })), OCI_INDEX, 400, 'MANIFEST_INVALID');
  });

  it('Content-Type that contradicts the body mediaType → 400 MANIFEST_INVALID', async () => {
    const body = imageManifest(config, layers);
    await expectRefused(body, OCI_INDEX, 400, 'MANIFEST_INVALID');
    await expectRefused(body, DOCKER_MANIFEST, 400, 'MANIFEST_INVALID');
    await expectRefused(body, DOCKER_LIST, 400, 'MANIFEST_INVALID');
  });

  it('an unsupported manifest media type → 400 MANIFEST_INVALID', async () => {
    const body = imageManifest(config, layers, { mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' });
    await expectRefused(body, 'application/vnd.docker.distribution.manifest.v1+prettyjws', 400, 'MANIFEST_INVALID');
  });

  it('a missing config or layer → 400 MANIFEST_BLOB_UNKNOWN naming it', async () => {
    const ghost = { mediaType: OCI_LAYER, digest: sha256('never pushed'), size: 12 };
    const before = await snapshot(reg.dataDir);
    const res = await put(reg, name, 'bad', imageManifest(config, [...layers, ghost]), OCI_MANIFEST);
    expectOciError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
    expect(res.body.errors[0].detail.digests).toEqual([ghost.digest]);
    const noConfig = await put(reg, name, 'bad', imageManifest({ ...config, digest: sha256('no config') }, layers), OCI_MANIFEST);
    expectOciError(noConfig, 400, 'MANIFEST_BLOB_UNKNOWN');
    expect(await snapshot(reg.dataDir)).toEqual(before);
  });

  it('an index naming a missing child manifest → 400 MANIFEST_BLOB_UNKNOWN', async () => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha256('no child'), size: 100 }] }));
    await expectRefused(body, OCI_INDEX, 400, 'MANIFEST_BLOB_UNKNOWN');
  });

  it('does not require foreign layers (with urls) to be present', async () => {
    const foreign = { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: sha256('windows base'), size: 100, urls: ['https://example.com/layer'] };
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { ...config, mediaType: 'application/vnd.docker.container.image.v1+json' }, layers: [foreign, ...layers] }));
    await putManifest(reg, name, 'foreign', body, DOCKER_MANIFEST);
  });

  it('PUT by a digest the body does not hash to → 400 DIGEST_INVALID', async () => {
    await expectRefused(imageManifest(config, layers), OCI_MANIFEST, 400, 'DIGEST_INVALID', sha256('other bytes'));
  });

  it('GET/HEAD/DELETE of unknown manifests → 404 MANIFEST_UNKNOWN', async () => {
    expectOciError(await getManifest(reg, name, 'nope'), 404, 'MANIFEST_UNKNOWN');
    expectOciError(await getManifest(reg, name, sha256('nope')), 404, 'MANIFEST_UNKNOWN');
    expect((await reg.http().head(`/v2/${name}/manifests/nope`)).status).toBe(404);
    expectOciError(await getManifest(reg, 'no/such/repo', 'latest'), 404, ['MANIFEST_UNKNOWN', 'NAME_UNKNOWN']);
    expectOciError(await reg.http().delete(`/v2/${name}/manifests/nope`), 404, 'MANIFEST_UNKNOWN');
    expectOciError(await reg.http().delete(`/v2/${name}/manifests/${sha256('nope')}`), 404, 'MANIFEST_UNKNOWN');
  });

  it('a manifest is only visible in the repository it was pushed to', async () => {
    const { digest } = await pushImage(reg, 'errors/own', 'v1');
    expectOciError(await getManifest(reg, 'errors/other', digest), 404, ['MANIFEST_UNKNOWN', 'NAME_UNKNOWN']);
  });

  it('DELETE answers 405 UNSUPPORTED when deletion is disabled', async () => {
    const noDelete = await startRegistry({ storage: { deleteEnabled: false } });
    try {
      const { digest } = await pushImage(noDelete, 'org/app', 'v1');
      expectOciError(await noDelete.http().delete('/v2/org/app/manifests/v1'), 405, 'UNSUPPORTED');
      expectOciError(await noDelete.http().delete(`/v2/org/app/manifests/${digest}`), 405, 'UNSUPPORTED');
      expect((await noDelete.http().head('/v2/org/app/manifests/v1')).status).toBe(200);
    } finally {
      await noDelete.close();
    }
  });
});

describe('manifest size limit', () => {
  let small: TestRegistry;
  const LIMIT = 2048;
  beforeAll(async () => {
    small = await startRegistry({ registry: { maxManifestBytes: LIMIT } });
  });
  afterAll(async () => {
    await small.close();
  });

  function padded(config: Descriptor, size: number): Buffer {
    const base = imageManifest(config, [], { annotations: { pad: '' } });
    return imageManifest(config, [], { annotations: { pad: 'x'.repeat(size - base.length) } });
  }

  it('accepts a manifest of exactly the limit and refuses one byte more with 413', async () => {
    const [config] = await pushBlobs(small, 'org/app', 1, OCI_CONFIG);
    const exact = padded(config!, LIMIT);
    expect(exact.length).toBe(LIMIT);
    await putManifest(small, 'org/app', 'exact', exact, OCI_MANIFEST);
    const over = padded(config!, LIMIT + 1);
    const before = await snapshot(small.dataDir);
    const res = await put(small, 'org/app', 'over', over, OCI_MANIFEST);
    expectOciError(res, 413, ['SIZE_INVALID', 'MANIFEST_INVALID']);
    expect(await snapshot(small.dataDir)).toEqual(before);
    expect((await small.http().head('/v2/org/app/manifests/over')).status).toBe(404);
  });

  it('refuses an oversized chunked manifest (no Content-Length) with 413', async () => {
    const [config] = await pushBlobs(small, 'org/app', 1, OCI_CONFIG);
    const over = padded(config!, LIMIT * 4);
    const before = await snapshot(small.dataDir);
    const req = small.http().put('/v2/org/app/manifests/chunked').set('Content-Type', OCI_MANIFEST);
    for (let i = 0; i < over.length; i += 1000) req.write(over.subarray(i, i + 1000));
    expectOciError(await req, 413, ['SIZE_INVALID', 'MANIFEST_INVALID']);
    expect(await snapshot(small.dataDir)).toEqual(before);
    await expectServing(small);
  });

  it('refuses a huge declared manifest with 413 and keeps serving', async () => {
    const res = await put(small, 'org/app', 'huge', Buffer.alloc(1024 * 1024, 0x20), OCI_MANIFEST);
    expectOciError(res, 413, ['SIZE_INVALID', 'MANIFEST_INVALID']);
    await expectServing(small);
  });
});

describe('subject', () => {
  it('answers OCI-Subject on PUT of a manifest with a subject (the subject need not exist)', async () => {
    const name = 'subject/app';
    const subject = { mediaType: OCI_MANIFEST, digest: sha256('absent subject'), size: 123 };
    const [config] = await pushBlobs(reg, name, 1, 'application/vnd.oci.empty.v1+json');
    const body = imageManifest(config!, [], { artifactType: 'application/vnd.example.sig', subject });
    const res = await put(reg, name, sha256(body), body, OCI_MANIFEST);
    expect(res.status).toBe(201);
    expect(res.headers['oci-subject']).toBe(subject.digest);
    const plain = await pushImage(reg, name, 'plain');
    const again = await put(reg, name, 'plain', plain.body, OCI_MANIFEST);
    expect(again.headers['oci-subject']).toBeUndefined();
  });
});

it('the fixture digests are what the README says (sanity of the copied bytes)', () => {
  const readme = readFileSync(FIXTURES + 'README.md', 'utf8');
  for (const f of fixtures) {
    expect(readme).toContain(`| ${f.file} | sha256:${createHash('sha256').update(f.bytes).digest('hex').slice(0, 12)}`);
  }
});
