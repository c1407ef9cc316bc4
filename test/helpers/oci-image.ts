/**
 * Writes OCI image layouts (https://github.com/opencontainers/image-spec/blob/main/image-layout.md) to disk for
 * e2e tests: N gzip layers of random bytes (each a real one-file tar), a config with matching diff_ids, a manifest
 * and index.json. Layers are streamed to disk while hashing, in 1 MiB pieces, so a 64 MiB layer never sits in
 * memory. Also reads layouts back (for comparing what a client copied out of the registry).
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

import { OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.js';

export { OCI_INDEX, OCI_MANIFEST };
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface GeneratedImage {
  dir: string;
  tag: string;
  manifestDigest: string;
  manifestBytes: Buffer;
  config: Descriptor;
  layers: Descriptor[];
  /** Every blob of the image (layers, config, manifest), digest → size. */
  blobs: Map<string, number>;
}

const CHUNK = 1024 * 1024;

/** A ustar header for one regular file. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => h.write(s, off, len, 'ascii');
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, '0') + '\0';
  put(name, 0, 100);
  put(octal(0o644, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(1_700_000_000, 12), 136, 12);
  put('        ', 148, 8);
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put('root', 265, 32);
  put('root', 297, 32);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

/** A tar stream holding one file of `size` random bytes. */
async function* randomTar(name: string, size: number): AsyncGenerator<Buffer> {
  yield tarHeader(name, size);
  for (let left = size; left > 0; left -= CHUNK) {
    yield randomFillSync(Buffer.allocUnsafe(Math.min(CHUNK, left)));
  }
  const pad = (512 - (size % 512)) % 512;
  yield Buffer.alloc(pad + 1024);
}

/** Pass-through that hashes and counts what flows by. */
class Tap extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

function blobPath(dir: string, digest: string): string {
  return join(dir, 'blobs', ...digest.split(':'));
}

async function writeBlob(dir: string, data: Buffer): Promise<Descriptor & { digest: string }> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  await writeFile(blobPath(dir, digest), data);
  return { mediaType: '', digest, size: data.length };
}

/** Streams a random gzip layer into the layout; returns its descriptor and its diff_id (uncompressed digest). */
async function writeLayer(dir: string, index: number, size: number): Promise<{ desc: Descriptor; diffId: string }> {
  const tmp = join(dir, 'blobs', 'sha256', `.tmp-layer-${index}`);
  const uncompressed = new Tap();
  const compressed = new Tap();
  // Level 1: random bytes do not compress anyway, so this is only framing, done fast.
  await pipeline(randomTar(`layer-${index}.bin`, size), uncompressed, createGzip({ level: 1 }), compressed, createWriteStream(tmp));
  const digest = `sha256:${compressed.hash.digest('hex')}`;
  await rename(tmp, blobPath(dir, digest));
  return {
    desc: { mediaType: OCI_LAYER_GZIP, digest, size: compressed.bytes },
    diffId: `sha256:${uncompressed.hash.digest('hex')}`,
  };
}

export interface ImageOptions {
  /** Sizes in bytes of the random file inside each layer. */
  layerSizes: number[];
  tag?: string;
  /** Extra annotation on the manifest, to make otherwise equal images differ. */
  label?: string;
}

/** Writes an OCI image layout with one image tagged `tag`. */
export async function writeOciLayout(dir: string, opts: ImageOptions): Promise<GeneratedImage> {
  const tag = opts.tag ?? 'latest';
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const [i, size] of opts.layerSizes.entries()) {
    const { desc, diffId } = await writeLayer(dir, i, size);
    layers.push(desc);
    diffIds.push(diffId);
  }
  const configJson = {
    created: '2026-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Labels: { 'buildcached.e2e': opts.label ?? 'image' } },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `e2e layer ${i}` })),
  };
  const config = { ...(await writeBlob(dir, Buffer.from(JSON.stringify(configJson)))), mediaType: OCI_CONFIG };
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config,
    layers,
    annotations: { 'org.opencontainers.image.title': opts.label ?? 'buildcached e2e image' },
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const m = await writeBlob(dir, manifestBytes);
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{ mediaType: OCI_MANIFEST, digest: m.digest, size: m.size, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  const blobs = new Map<string, number>([[m.digest, m.size], [config.digest, config.size], ...layers.map((l) => [l.digest, l.size] as [string, number])]);
  return { dir, tag, manifestDigest: m.digest, manifestBytes, config, layers, blobs };
}

/** sha256 of a file, streamed. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: CHUNK })) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

export interface LayoutContents {
  /** index.json descriptor of the image with this tag (ref.name annotation). */
  manifest: Descriptor;
  manifestBytes: Buffer;
  /** Every file under blobs/, digest (from its path) → actual sha256 of its content and size. */
  blobs: Map<string, { actual: string; size: number }>;
}

/** Reads an OCI layout as written by a client (skopeo copy … oci:DIR:tag), hashing every blob file. */
export async function readOciLayout(dir: string, tag: string): Promise<LayoutContents> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifest = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!manifest) throw new Error(`no image tagged ${tag} in ${dir}/index.json: ${JSON.stringify(index)}`);
  const blobs = new Map<string, { actual: string; size: number }>();
  for (const algorithm of await readdir(join(dir, 'blobs'))) {
    for (const hex of await readdir(join(dir, 'blobs', algorithm))) {
      const p = join(dir, 'blobs', algorithm, hex);
      blobs.set(`${algorithm}:${hex}`, { actual: await hashFile(p), size: (await stat(p)).size });
    }
  }
  const manifestBytes = await readFile(blobPath(dir, manifest.digest));
  return { manifest, manifestBytes, blobs };
}
