/**
 * The Dockerfile, built and run: buildah builds both stages (`bud --isolation chroot`, vfs, Docker format so the
 * HEALTHCHECK is kept) from a local base made of a debootstrap rootfs and this machine's Node (see
 * helpers/debian-base.ts: Docker Hub is out of reach here), then runs the image's own ENTRYPOINT and CMD in a
 * container on the host's network, listening on an ephemeral 127.0.0.1 port. skopeo pushes an image into it and
 * pulls it back byte for byte; the daemon runs as the image's non-root user and keeps its data in the image's
 * volume; the image's HEALTHCHECK command passes while it serves and fails once it stopped on SIGTERM.
 * Everything buildah makes lives in a private storage root in a temp dir, removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, descendants, makeTempDir, onCleanup, REPO_ROOT, requireTools, skipWithoutTools, track, waitForListening } from '../helpers/daemon.js';
import { commitLocalBase, debianRootfsTar } from '../helpers/debian-base.js';
import { hashFile, readOciLayout, writeOciLayout, type GeneratedImage } from '../helpers/oci-image.js';
import { RegistryClient } from '../helpers/registry-client.js';
import { containersEnv, run, runOk, type ContainersEnv, type ToolResult } from '../helpers/tools.js';
import { MiB } from '../helpers/content.js';

const TOOLS = { buildah: 'buildah', debootstrap: 'debootstrap', skopeo: 'skopeo' };
// debootstrap and buildah's chroot isolation need root; CI runs as root, so there it never skips.
const notRoot = process.getuid?.() !== 0 && process.env.CI !== 'true';
if (notRoot) console.warn('[e2e] skipping the Docker image test: debootstrap and buildah --isolation chroot need root');
const skip = notRoot || skipWithoutTools('the Docker image test', TOOLS);

const BASE = 'localhost/buildcached-e2e-base:node20';
const IMAGE = 'localhost/buildcached-e2e:latest';
const DATA = '/var/lib/buildcached';
const UID = 10001;

/** The part of a Docker-format image config the test checks and runs. */
interface ImageConfig {
  User: string;
  Entrypoint: string[];
  Cmd: string[];
  Volumes: Record<string, unknown>;
  Healthcheck?: { Test: string[] };
  StopSignal: NodeJS.Signals;
}

describe.skipIf(skip)('the Docker image, built with buildah and run', () => {
  let ce: ContainersEnv;
  let work: string;
  let storageConf: string;
  let config: ImageConfig;
  let ctr: string;
  let server: ChildProcess;
  let out = '';
  let err = '';
  let url: string;
  let hostPort: string;
  let daemonPid: number;
  let image: GeneratedImage;
  const times: Record<string, number> = {};

  const buildah = (args: string[], opts: { ok?: boolean; timeoutMs?: number } = {}): Promise<ToolResult> =>
    (opts.ok === false ? run : runOk)('buildah', [...storeArgs(), ...args], { env: toolEnv(), cwd: work, timeoutMs: opts.timeoutMs ?? 120_000 });
  const storeArgs = () => ['--root', join(work, 'root'), '--runroot', join(work, 'runroot'), '--storage-driver', 'vfs', '--registries-conf', ce.registriesConf];
  const toolEnv = () => ({ ...ce.env, CONTAINERS_STORAGE_CONF: storageConf, BUILDAH_ISOLATION: 'chroot' });
  /** `buildah run` in the working container: the image's user, its volume, the host's network. */
  const inContainer = (cmd: string[], ok = true) => buildah(['run', '--isolation', 'chroot', '--network', 'host', ctr, '--', ...cmd], { ok });
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      times[name] = Date.now() - t0;
    }
  };

  beforeAll(async () => {
    requireTools(TOOLS);
    ce = await containersEnv();
    work = await makeTempDir('buildcached-docker-');
    storageConf = join(work, 'storage.conf');
    await writeFile(storageConf, `[storage]\ndriver = "vfs"\nrunroot = "${work}/runroot"\ngraphroot = "${work}/root"\n`);
    // vfs layers are plain directories; containers and images go first so nothing is left holding them.
    onCleanup(async () => {
      await buildah(['rm', '--all'], { ok: false }).catch(() => undefined);
      await buildah(['rmi', '--all', '--force'], { ok: false }).catch(() => undefined);
    });

    const rootfs = await timed('rootfs', debianRootfsTar);
    times.rootfsCached = rootfs.cached ? 1 : 0;
    await timed('base', () => commitLocalBase((args) => buildah(args), rootfs.path, BASE));
    await timed('build', () =>
      buildah(['bud', '--isolation', 'chroot', '--format', 'docker', '--pull=never', '--build-arg', `BASE_IMAGE=${BASE}`, '-t', IMAGE, REPO_ROOT], {
        timeoutMs: 900_000,
      }),
    );
    const inspected = JSON.parse((await buildah(['inspect', '--type', 'image', IMAGE])).stdout) as { Docker: { config: ImageConfig } };
    config = inspected.Docker.config;
    ctr = await timed('container', async () => (await buildah(['from', '--pull=never', '--name', 'buildcached-e2e', IMAGE])).stdout.trim());

    // The image's own command, as `docker run` would start it, with the listen address moved to a free loopback port.
    await timed('start', async () => {
      server = track(
        spawn('buildah', [...storeArgs(), 'run', '--isolation', 'chroot', '--network', 'host', '-e', 'BUILDCACHED_LISTEN=127.0.0.1:0', ctr, '--', ...config.Entrypoint, ...config.Cmd], {
          env: { ...process.env, ...toolEnv() },
          cwd: work,
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
      server.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
      server.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
      const listening = await waitForListening(server, 60_000, () => out, () => err);
      url = String(listening.url);
      hostPort = new URL(url).host;
      daemonPid = Number(listening.pid);
    });
    image = await writeOciLayout(join(work, 'src'), { layerSizes: [3 * MiB + 17, 10_000], tag: 'v1', label: 'docker-image' });
  }, 1_800_000);

  afterAll(async () => {
    console.info(`[e2e] docker image: ${JSON.stringify(times)} (ms)`);
    await cleanup();
  }, 120_000);

  it('is built from two stages: the runtime has dist/ and production dependencies only', async () => {
    const mnt = (await buildah(['mount', ctr])).stdout.trim();
    try {
      expect(existsSync(join(mnt, 'app', 'dist', 'main.js'))).toBe(true);
      expect(existsSync(join(mnt, 'app', 'node_modules', 'express'))).toBe(true);
      expect(existsSync(join(mnt, 'app', 'node_modules', 'typescript'))).toBe(false);
      expect(existsSync(join(mnt, 'app', 'src'))).toBe(false);
      expect(readFileSync(join(mnt, 'etc', 'passwd'), 'utf8')).toMatch(new RegExp(`^buildcached:x:${UID}:`, 'm'));
    } finally {
      await buildah(['umount', ctr]);
    }
    expect(config.User).toBe('buildcached');
    expect(Object.keys(config.Volumes)).toEqual([DATA]);
    expect(config.Healthcheck?.Test).toEqual(['CMD', 'node', '/app/dist/main.js', 'health']);
  });

  it('answers /v2/ and /healthz on the port it reports, as the non-root user', async () => {
    const client = new RegistryClient(url);
    const base = await client.req('GET', '/v2/');
    expect(base.status).toBe(200);
    expect(base.headers['docker-distribution-api-version']).toBe('registry/2.0');
    const health = await client.req('GET', '/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body.toString())).toEqual({ status: 'ok' });

    // The pid the daemon logs is a host pid (chroot isolation has no pid namespace): a process of this container.
    expect(descendants(server.pid!)).toContain(daemonPid);
    const uids = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${daemonPid}/status`, 'utf8'))![1]!.split(/\s+/).map(Number);
    expect(uids).toEqual([UID, UID, UID, UID]);
  });

  it("the image's HEALTHCHECK command passes while the daemon serves", async () => {
    const check = await inContainer(config.Healthcheck!.Test.slice(1), false);
    expect(check.code, check.stderr).toBe(0);
  });

  it('skopeo pushes an image in and pulls it back byte for byte; the blobs land in the data volume', async () => {
    const skopeo = (args: string[]) => runOk('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, ...args], { env: ce.env });
    const ref = `docker://${hostPort}/e2e/docker-image:v1`;
    await timed('push', () => skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${image.dir}:v1`, ref]));
    const outDir = join(work, 'out');
    await timed('pull', () => skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', ref, `oci:${outDir}:v1`]));
    const got = await readOciLayout(outDir, 'v1');
    expect(got.manifestBytes.equals(image.manifestBytes)).toBe(true);
    expect([...got.blobs.keys()].sort()).toEqual([...image.blobs.keys()].sort());
    for (const digest of image.blobs.keys()) {
      const hex = digest.slice('sha256:'.length);
      expect(await hashFile(join(outDir, 'blobs', 'sha256', hex))).toBe(await hashFile(join(image.dir, 'blobs', 'sha256', hex)));
    }

    // Stored under DATA, owned by the image's user, as seen from inside the container…
    const listing = await inContainer([
      'node',
      '-e',
      `const fs = require('fs'), p = require('path'), d = p.join(${JSON.stringify(DATA)}, 'blobs', 'sha256'), r = {};
       for (const a of fs.readdirSync(d)) for (const f of fs.readdirSync(p.join(d, a))) { const s = fs.statSync(p.join(d, a, f)); r['sha256:' + f] = [s.uid, s.size]; }
       console.log(JSON.stringify(r));`,
    ]);
    const stored = JSON.parse(listing.stdout) as Record<string, [number, number]>;
    for (const [digest, size] of image.blobs) expect(stored[digest], digest).toEqual([UID, size]);
    // …and in a volume, not in the container's own filesystem.
    const mnt = (await buildah(['mount', ctr])).stdout.trim();
    try {
      expect(await readdir(join(mnt, DATA))).toEqual([]);
    } finally {
      await buildah(['umount', ctr]);
    }
  });

  it('stops cleanly on SIGTERM (its STOPSIGNAL), after which the HEALTHCHECK command fails', async () => {
    const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
    expect(config.StopSignal).toBe('SIGTERM');
    process.kill(daemonPid, config.StopSignal);
    expect(await exited).toBe(0);
    expect(out).toMatch(/"msg":"stopped"/);
    const check = await inContainer(config.Healthcheck!.Test.slice(1), false);
    expect(check.code).not.toBe(0);
  });
});
