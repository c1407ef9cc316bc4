import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/core/errors.js';
import { parseManifest, referrerArtifactType, requiredDigests } from '../../src/registry/manifest.js';
import { DOCKER_LIST, DOCKER_MANIFEST, INDEX_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/buildkit-cache/', import.meta.url));
const CACHE_CONFIG = 'application/vnd.buildkit.cacheconfig.v0';
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);

interface Fixture {
  file: string;
  bytes: Buffer;
  doc: Record<string, unknown>;
}
type Desc = { mediaType: string; digest: string; size: number; platform?: unknown };

const all = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((file): Fixture => {
    const bytes = readFileSync(FIXTURES + file);
    return { file, bytes, doc: JSON.parse(bytes.toString('utf8')) as Record<string, unknown> };
  });
const manifests = all.filter((f) => f.doc.schemaVersion === 2);
const indexes = manifests.filter((f) => Array.isArray(f.doc.manifests));
const images = manifests.filter((f) => !Array.isArray(f.doc.manifests));

const d = (c: string) => `sha256:${c.repeat(64)}`;

describe('BuildKit fixtures', () => {
  it('are the byte-exact files of the README (sha256 prefix listed there)', () => {
    const readme = readFileSync(FIXTURES + 'README.md', 'utf8');
    expect(all.length).toBe(18);
    for (const f of all) {
      const hex = createHash('sha256').update(f.bytes).digest('hex');
      expect(readme, f.file).toContain(`| ${f.file} | sha256:${hex.slice(0, 12)}`);
    }
  });

  it('hold the expected mix of manifests', () => {
    expect(manifests.length).toBe(10);
    expect(indexes.length).toBe(7);
    expect(images.length).toBe(3);
  });
});

describe.each(manifests.map((f) => [f.file, f] as const))('fixture %s', (_file, f) => {
  it('parses with its own media type as Content-Type', () => {
    const parsed = parseManifest(f.bytes, f.doc.mediaType as string);
    expect(parsed.mediaType).toBe(f.doc.mediaType);
  });

  it('parses with no Content-Type (media type from the body)', () => {
    expect(parseManifest(f.bytes, undefined).mediaType).toBe(f.doc.mediaType);
  });

  it('parses with Content-Type parameters', () => {
    expect(parseManifest(f.bytes, `${f.doc.mediaType as string}; charset=utf-8`).mediaType).toBe(f.doc.mediaType);
  });

  it('lists every descriptor as a reference, in order', () => {
    const parsed = parseManifest(f.bytes, f.doc.mediaType as string);
    const expected = Array.isArray(f.doc.manifests)
      ? (f.doc.manifests as Desc[])
      : [f.doc.config as Desc, ...(f.doc.layers as Desc[])];
    expect(parsed.references.map((r) => [r.mediaType, r.digest, r.size])).toEqual(
      expected.map((e) => [e.mediaType, e.digest, e.size]),
    );
    expect(requiredDigests(parsed)).toEqual([...new Set(expected.map((e) => e.digest))]);
    expect(parsed.subject).toBeUndefined();
  });

  it('is rejected when a byte is changed into invalid JSON', () => {
    const broken = Buffer.from(f.bytes);
    broken[broken.length - 1] = 0x2c; // the closing brace becomes a comma
    expect(() => parseManifest(broken, f.doc.mediaType as string)).toThrow(/not valid JSON/);
  });
});

describe.each(indexes.map((f) => [f.file, f] as const))('cache index %s', (_file, f) => {
  it('lists layer blobs and one cache config, none with a platform, and is accepted as an index', () => {
    const entries = f.doc.manifests as Desc[];
    expect(entries.every((e) => e.platform === undefined)).toBe(true);
    expect(entries.filter((e) => e.mediaType === CACHE_CONFIG)).toHaveLength(1);
    expect(entries.filter((e) => e.mediaType !== CACHE_CONFIG).every((e) => LAYER_TYPES.has(e.mediaType))).toBe(true);
    const parsed = parseManifest(f.bytes, f.doc.mediaType as string);
    expect(INDEX_MEDIA_TYPES.has(parsed.mediaType)).toBe(true);
    expect(parsed.references.filter((r) => r.mediaType === CACHE_CONFIG)).toHaveLength(1);
    expect(referrerArtifactType(parsed)).toBeUndefined();
  });
});

describe('fixture forms', () => {
  const byName = (part: string) => manifests.find((f) => f.file.includes(part))!;

  it('image-manifest=true is an OCI image manifest whose config is the cache config', () => {
    const f = byName('cache-manifest-image-manifest-true');
    const parsed = parseManifest(f.bytes, OCI_MANIFEST);
    expect(parsed.mediaType).toBe(OCI_MANIFEST);
    expect(parsed.references[0]!.mediaType).toBe(CACHE_CONFIG);
    expect(referrerArtifactType(parsed)).toBe(CACHE_CONFIG);
    // The config it names is the cache config fixture, byte for byte.
    const config = all.find((x) => x.file === 'v0.12.5-cacheconfig-image-manifest-true.raw.json')!;
    const hex = createHash('sha256').update(config.bytes).digest('hex');
    expect(parsed.references[0]).toMatchObject({ digest: `sha256:${hex}`, size: config.bytes.length });
  });

  it('oci-mediatypes=false is a Docker manifest list of Docker layers', () => {
    const f = byName('oci-mediatypes-false');
    const parsed = parseManifest(f.bytes, DOCKER_LIST);
    expect(parsed.mediaType).toBe(DOCKER_LIST);
    expect(parsed.references.some((r) => r.mediaType === 'application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe(true);
  });

  it('inline cache images are Docker v2 and OCI image manifests', () => {
    expect(parseManifest(byName('image-manifest-inline-cache').bytes, DOCKER_MANIFEST).mediaType).toBe(DOCKER_MANIFEST);
    expect(parseManifest(byName('image-manifest-oci-inline-cache').bytes, OCI_MANIFEST).mediaType).toBe(OCI_MANIFEST);
  });

  it('the index cache config entry names the cache config fixture', () => {
    const f = byName('v0.11.6-cache-index-mode-max-default');
    const config = all.find((x) => x.file === 'v0.11.6-cacheconfig-mode-max-default.raw.json')!;
    const hex = createHash('sha256').update(config.bytes).digest('hex');
    const entry = parseManifest(f.bytes, OCI_INDEX).references.find((r) => r.mediaType === CACHE_CONFIG);
    expect(entry).toMatchObject({ digest: `sha256:${hex}`, size: config.bytes.length });
  });
});

describe('parseManifest', () => {
  const image = (extra: Record<string, unknown> = {}) => ({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('1'), size: 10 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('2'), size: 20 }],
    ...extra,
  });
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v));

  it('infers the media type from the shape when neither header nor body names one', () => {
    const { mediaType: _omit, ...noType } = image();
    expect(parseManifest(enc(noType), undefined).mediaType).toBe(OCI_MANIFEST);
    expect(parseManifest(enc({ schemaVersion: 2, manifests: [] }), undefined).mediaType).toBe(OCI_INDEX);
    expect(parseManifest(enc({ schemaVersion: 2, manifests: [] }), 'application/json').mediaType).toBe(OCI_INDEX);
  });

  it('takes the media type from Content-Type when the body has none', () => {
    const { mediaType: _omit, ...noType } = image();
    expect(parseManifest(enc(noType), DOCKER_MANIFEST).mediaType).toBe(DOCKER_MANIFEST);
  });

  it('accepts unknown config and layer media types, and artifact manifests without layers', () => {
    const m = parseManifest(
      enc({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: 'application/vnd.example.sbom',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: d('3'), size: 2 },
      }),
      OCI_MANIFEST,
    );
    expect(m.references).toHaveLength(1);
    expect(referrerArtifactType(m)).toBe('application/vnd.example.sbom');
    const odd = parseManifest(
      enc(image({ layers: [{ mediaType: 'application/x-whatever', digest: d('4'), size: 0 }] })),
      OCI_MANIFEST,
    );
    expect(odd.references[1]!.mediaType).toBe('application/x-whatever');
  });

  it('records subject, annotations and artifactType', () => {
    const subject = { mediaType: OCI_MANIFEST, digest: d('9'), size: 100 };
    const m = parseManifest(enc(image({ subject, annotations: { 'org.example': 'x' } })), OCI_MANIFEST);
    expect(m.subject).toEqual(subject);
    expect(m.annotations).toEqual({ 'org.example': 'x' });
    expect(referrerArtifactType(m)).toBe('application/vnd.oci.image.config.v1+json');
  });

  it('does not require foreign layers (with urls) to exist', () => {
    const m = parseManifest(
      enc(
        image({
          layers: [
            { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: d('5'), size: 1, urls: ['https://example.com/l'] },
            { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('2'), size: 20 },
          ],
        }),
      ),
      OCI_MANIFEST,
    );
    expect(requiredDigests(m)).toEqual([d('1'), d('2')]);
  });

  it('lists a digest referenced twice once in requiredDigests', () => {
    const m = parseManifest(
      enc(image({ layers: [image().config, image().config] })),
      OCI_MANIFEST,
    );
    expect(m.references).toHaveLength(3);
    expect(requiredDigests(m)).toEqual([d('1')]);
  });

  const invalid: Array<[string, Buffer, string | undefined]> = [
    ['empty body', Buffer.alloc(0), OCI_MANIFEST],
    ['not JSON', Buffer.from('not json'), OCI_MANIFEST],
    ['truncated JSON', Buffer.from(JSON.stringify(image()).slice(0, 40)), OCI_MANIFEST],
    ['a JSON array', enc([image()]), OCI_MANIFEST],
    ['a JSON string', enc('manifest'), OCI_MANIFEST],
    ['null', enc(null), OCI_MANIFEST],
    ['schemaVersion 1', enc(image({ schemaVersion: 1 })), OCI_MANIFEST],
    ['schemaVersion as string', enc(image({ schemaVersion: '2' })), OCI_MANIFEST],
    ['no schemaVersion', enc({ ...image(), schemaVersion: undefined }), OCI_MANIFEST],
    ['Content-Type differs from mediaType', enc(image()), OCI_INDEX],
    ['docker Content-Type on an OCI body', enc(image()), DOCKER_MANIFEST],
    ['unknown mediaType in the body', enc(image({ mediaType: 'application/vnd.example+json' })), undefined],
    ['schema1 mediaType', enc(image({ mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' })), undefined],
    ['no config', enc({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }), OCI_MANIFEST],
    ['config is an array', enc(image({ config: [] })), OCI_MANIFEST],
    ['layers is an object', enc(image({ layers: {} })), OCI_MANIFEST],
    ['layer is a string', enc(image({ layers: ['sha256:x'] })), OCI_MANIFEST],
    ['index without manifests', enc({ schemaVersion: 2, mediaType: OCI_INDEX }), OCI_INDEX],
    ['index with manifests object', enc({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: {} }), OCI_INDEX],
    ['descriptor without mediaType', enc(image({ layers: [{ digest: d('2'), size: 1 }] })), OCI_MANIFEST],
    ['descriptor with empty mediaType', enc(image({ layers: [{ mediaType: '', digest: d('2'), size: 1 }] })), OCI_MANIFEST],
    ['descriptor with bad digest', enc(image({ layers: [{ mediaType: 'x/y', digest: 'sha256:abc', size: 1 }] })), OCI_MANIFEST],
    ['descriptor with upper-case digest', enc(image({ layers: [{ mediaType: 'x/y', digest: d('A'), size: 1 }] })), OCI_MANIFEST],
    ['descriptor with path digest', enc(image({ layers: [{ mediaType: 'x/y', digest: '../../etc/passwd', size: 1 }] })), OCI_MANIFEST],
    ['descriptor with negative size', enc(image({ layers: [{ mediaType: 'x/y', digest: d('2'), size: -1 }] })), OCI_MANIFEST],
    ['descriptor with fractional size', enc(image({ layers: [{ mediaType: 'x/y', digest: d('2'), size: 1.5 }] })), OCI_MANIFEST],
    ['descriptor with string size', enc(image({ layers: [{ mediaType: 'x/y', digest: d('2'), size: '1' }] })), OCI_MANIFEST],
    ['descriptor with no size', enc(image({ layers: [{ mediaType: 'x/y', digest: d('2') }] })), OCI_MANIFEST],
    ['non-string annotation', enc(image({ annotations: { a: 1 } })), OCI_MANIFEST],
    ['bad subject', enc(image({ subject: { digest: 'nope' } })), OCI_MANIFEST],
    ['index entry not an object', enc({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [null] }), OCI_INDEX],
  ];
  it.each(invalid)('rejects %s as MANIFEST_INVALID', (_what, body, contentType) => {
    try {
      parseManifest(body, contentType);
      expect.unreachable('parseManifest should throw');
    } catch (e) {
      expect(e).toBeInstanceOf(OciError);
      expect((e as OciError).code).toBe('MANIFEST_INVALID');
    }
  });

  it('parses a sub-array view of a larger buffer correctly', () => {
    const inner = enc(image());
    const big = Buffer.concat([Buffer.from('xxxx'), inner, Buffer.from('yyyy')]);
    const view = new Uint8Array(big.buffer, big.byteOffset + 4, inner.length);
    expect(parseManifest(view, OCI_MANIFEST).references).toHaveLength(2);
  });
});
