/**
 * skopeo (containers/image, the same code podman and buildah push with) against the real daemon: an OCI image with
 * a 64 MiB layer goes in and comes back out byte for byte; inspect, list-tags, delete; Docker v2s2 media types.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, makeTempDir, requireTools, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { hashFile, OCI_MANIFEST, readOciLayout, writeOciLayout, type GeneratedImage } from '../helpers/oci-image.js';
import { RegistryClient, sha256 } from '../helpers/registry-client.js';
import { containersEnv, runOk, type ContainersEnv } from '../helpers/tools.js';

const TOOLS = { skopeo: 'skopeo' };
const skip = skipWithoutTools('skopeo e2e tests', TOOLS);

const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const MiB = 1024 * 1024;

describe.skipIf(skip)('skopeo against buildcached', () => {
  let daemon: Daemon;
  let ce: ContainersEnv;
  let work: string;
  let big: GeneratedImage;
  let client: RegistryClient;

  const skopeo = (args: string[]) =>
    runOk('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, ...args], { env: ce.env, timeoutMs: 150_000 });
  const ref = (repoTag: string) => `docker://${daemon.hostPort}/${repoTag}`;

  beforeAll(async () => {
    requireTools(TOOLS);
    ce = await containersEnv();
    work = await makeTempDir('buildcached-skopeo-');
    [daemon, big] = await Promise.all([
      startDaemon(),
      writeOciLayout(join(work, 'src'), { layerSizes: [64 * MiB + 12_345, 1 * MiB, 10_000], tag: 'v1', label: 'big' }),
    ]);
    client = new RegistryClient(daemon.url);
  }, 120_000);

  afterAll(cleanup);

  it('copies a 3-layer image (one layer ≥ 64 MiB) in and back out, every blob byte-identical', async () => {
    expect(big.layers.some((l) => l.size >= 64 * MiB)).toBe(true);
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${big.dir}:v1`, ref('e2e/skopeo:v1')]);

    // What the registry holds is exactly what was pushed.
    const m = await client.getManifest('e2e/skopeo', 'v1');
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toBe(OCI_MANIFEST);
    expect(m.headers['docker-content-digest']).toBe(big.manifestDigest);
    expect(m.body.equals(big.manifestBytes)).toBe(true);
    for (const [digest, size] of big.blobs) {
      const b = await client.getBlobDigest('e2e/skopeo', digest);
      expect(b.status, digest).toBe(200);
      expect(b.headers['docker-content-digest']).toBe(digest);
      expect(b.length).toBe(size);
      expect(b.digest).toBe(digest);
      // Stored once, content-addressed, under DATA/blobs/sha256/<2 hex>/<hex>.
      const hex = digest.slice('sha256:'.length);
      expect((await stat(join(daemon.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex))).size).toBe(size);
    }

    // And back out through skopeo into a fresh OCI layout.
    const out = join(work, 'out');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', ref('e2e/skopeo:v1'), `oci:${out}:v1`]);
    const got = await readOciLayout(out, 'v1');
    expect(got.manifest.digest).toBe(big.manifestDigest);
    expect(got.manifestBytes.equals(big.manifestBytes)).toBe(true);
    expect([...got.blobs.keys()].sort()).toEqual([...big.blobs.keys()].sort());
    for (const [digest, size] of big.blobs) {
      expect(got.blobs.get(digest)).toEqual({ actual: digest, size });
      // Also compare file against file, not only digests recorded by names.
      const hex = digest.slice('sha256:'.length);
      expect(await hashFile(join(out, 'blobs', 'sha256', hex))).toBe(await hashFile(join(big.dir, 'blobs', 'sha256', hex)));
    }
  }, 180_000);

  it('skopeo inspect and inspect --raw show the stored manifest and config', async () => {
    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', ref('e2e/skopeo:v1')]);
    expect(raw.stdout.trimEnd()).toBe(big.manifestBytes.toString('utf8'));
    expect(sha256(raw.stdout.trimEnd())).toBe(big.manifestDigest);

    const configRaw = await skopeo(['inspect', '--config', '--raw', '--tls-verify=false', ref('e2e/skopeo:v1')]);
    expect(sha256(configRaw.stdout.trimEnd())).toBe(big.config.digest);

    const info = JSON.parse((await skopeo(['inspect', '--tls-verify=false', ref('e2e/skopeo:v1')])).stdout) as {
      Digest: string;
      Layers: string[];
      Architecture: string;
      Os: string;
      Labels: Record<string, string>;
      Name: string;
    };
    expect(info.Digest).toBe(big.manifestDigest);
    expect(info.Layers).toEqual(big.layers.map((l) => l.digest));
    expect(info.Architecture).toBe('amd64');
    expect(info.Os).toBe('linux');
    expect(info.Labels['buildcached.e2e']).toBe('big');
    expect(info.Name).toBe(`${daemon.hostPort}/e2e/skopeo`);
  }, 60_000);

  it('skopeo list-tags lists every tag; skopeo delete removes a tag and its manifest (404 afterwards)', async () => {
    const small = await writeOciLayout(join(work, 'small'), { layerSizes: [3000], tag: 'v2', label: 'small' });
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${small.dir}:v2`, ref('e2e/skopeo:v2')]);
    const tags = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', ref('e2e/skopeo')])).stdout) as {
      Repository: string;
      Tags: string[];
    };
    expect(tags.Repository).toBe(`${daemon.hostPort}/e2e/skopeo`);
    expect([...tags.Tags].sort()).toEqual(['v1', 'v2']);

    expect((await client.getManifest('e2e/skopeo', 'v2')).status).toBe(200);
    await skopeo(['delete', '--tls-verify=false', ref('e2e/skopeo:v2')]);

    const byTag = await client.getManifest('e2e/skopeo', 'v2');
    expect(byTag.status).toBe(404);
    expect(JSON.parse(byTag.body.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
    expect((await client.getManifest('e2e/skopeo', small.manifestDigest)).status).toBe(404);
    expect((await client.req('HEAD', `/v2/e2e/skopeo/manifests/v2`)).status).toBe(404);

    // The other image is untouched.
    const v1 = await client.getManifest('e2e/skopeo', 'v1');
    expect(v1.status).toBe(200);
    expect(v1.headers['docker-content-digest']).toBe(big.manifestDigest);
    const after = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', ref('e2e/skopeo')])).stdout) as { Tags: string[] };
    expect(after.Tags).toEqual(['v1']);
  }, 90_000);

  it('copies with --format v2s2: Docker media types are stored and served byte for byte', async () => {
    const img = await writeOciLayout(join(work, 'docker-src'), { layerSizes: [2 * MiB, 5000], tag: 'd1', label: 'docker' });
    await skopeo(['copy', '--format', 'v2s2', '--dest-tls-verify=false', `oci:${img.dir}:d1`, ref('e2e/skopeo-docker:d1')]);

    const m = await client.getManifest('e2e/skopeo-docker', 'd1', `${DOCKER_MANIFEST}, ${OCI_MANIFEST}`);
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toBe(DOCKER_MANIFEST);
    expect(m.headers['docker-content-digest']).toBe(sha256(m.body));
    const manifest = JSON.parse(m.body.toString('utf8')) as {
      mediaType: string;
      config: { mediaType: string; digest: string };
      layers: Array<{ mediaType: string; digest: string; size: number }>;
    };
    expect(manifest.mediaType).toBe(DOCKER_MANIFEST);
    expect(manifest.config.mediaType).toBe(DOCKER_CONFIG);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([DOCKER_LAYER_GZIP, DOCKER_LAYER_GZIP]);
    // Layers were already gzip: converted manifest, same layer bytes.
    expect(manifest.layers.map((l) => l.digest)).toEqual(img.layers.map((l) => l.digest));
    const head = await client.req('HEAD', `/v2/e2e/skopeo-docker/manifests/d1`);
    expect(head.headers['content-type']).toBe(DOCKER_MANIFEST);
    expect(head.headers['docker-content-digest']).toBe(sha256(m.body));

    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', ref('e2e/skopeo-docker:d1')]);
    expect(raw.stdout.trimEnd()).toBe(m.body.toString('utf8'));

    // dir: keeps the manifest exactly as served, and every blob as a file named by its hex digest.
    const out = join(work, 'docker-out');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', ref('e2e/skopeo-docker:d1'), `dir:${out}`]);
    expect(await hashFile(join(out, 'manifest.json'))).toBe(sha256(m.body));
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      expect(await hashFile(join(out, d.slice('sha256:'.length)))).toBe(d);
    }
  }, 120_000);

  it('served every request without a server error', () => {
    const bad = daemon.logLines().filter((l) => typeof l.status === 'number' && (l.status >= 500 || l.status === 0));
    expect(bad).toEqual([]);
  });
});
