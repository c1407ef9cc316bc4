/**
 * buildah as a CI cache client: `bud --layers --cache-to/--cache-from` pushes every step's layer to
 * <registry>/cache/app and a later build on a machine with an empty store (a fresh storage root) pulls the RUN
 * step's result instead of running it again. The RUN step writes random bytes, so identical bytes in the second
 * build can only have come through the cache; a third build without --cache-from shows the step really differs
 * when it runs.
 */
import { copyFile, readFile, writeFile, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, makeTempDir, onCleanup, requireTools, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { RegistryClient } from '../helpers/registry-client.js';
import { authFixture, PASSWORDS } from '../helpers/auth-fixture.js';
import { containersEnv, run, runOk, type ContainersEnv, type ToolResult } from '../helpers/tools.js';

const TOOLS = { buildah: 'buildah', busybox: 'busybox-static' };
const skip = skipWithoutTools('buildah e2e tests', TOOLS);

const DOCKERFILE = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox head -c 4096 /dev/urandom > /rand; /bin/busybox echo built > /marker"]
`;

/** FROM scratch needs a statically linked busybox (package busybox-static), not the dynamic one. */
async function assertStaticBusybox(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(8192);
    await fh.read(head, 0, head.length, 0);
    if (head.includes('ld-linux') || head.includes('ld-musl')) {
      throw new Error(`${path} is dynamically linked; FROM scratch needs busybox-static (apt-get install busybox-static)`);
    }
  } finally {
    await fh.close();
  }
}

interface Store {
  root: string;
  runroot: string;
}

describe.skipIf(skip)('buildah bud --cache-to/--cache-from against buildcached', () => {
  let daemon: Daemon;
  let ce: ContainersEnv;
  let work: string;
  let ctx: string;
  let storageConf: string;
  const stores: Store[] = [];

  async function newStore(name: string): Promise<Store> {
    const s = { root: join(work, name, 'root'), runroot: join(work, name, 'runroot') };
    await mkdir(s.root, { recursive: true });
    await mkdir(s.runroot, { recursive: true });
    stores.push(s);
    return s;
  }

  const buildah = (s: Store, args: string[], ok = true): Promise<ToolResult> =>
    (ok ? runOk : run)(
      'buildah',
      ['--root', s.root, '--runroot', s.runroot, '--storage-driver', 'vfs', '--registries-conf', ce.registriesConf, ...args],
      { env: { ...ce.env, CONTAINERS_STORAGE_CONF: storageConf, BUILDAH_ISOLATION: 'chroot' }, cwd: work, timeoutMs: 120_000 },
    );

  /** One CI job: a build on store `s`, optionally importing the cache. */
  function build(s: Store, tag: string, cacheFrom: boolean, target: Daemon = daemon, extra: string[] = []): Promise<ToolResult> {
    const cacheRef = `${target.hostPort}/cache/app`;
    return buildah(s, [
      'bud',
      ...extra,
      '--isolation',
      'chroot',
      '--layers',
      '--retry',
      '0',
      '--tls-verify=false',
      '--signature-policy',
      ce.policy,
      '--cache-to',
      cacheRef,
      ...(cacheFrom ? ['--cache-from', cacheRef] : []),
      '-t',
      `localhost/e2e-app:${tag}`,
      ctx,
    ]);
  }

  /** The files the RUN step produced, read from a working container of the built image. */
  async function builtFiles(s: Store, tag: string): Promise<{ rand: Buffer; marker: string }> {
    const ctr = (await buildah(s, ['from', '--pull=never', `localhost/e2e-app:${tag}`])).stdout.trim();
    const mnt = (await buildah(s, ['mount', ctr])).stdout.trim();
    try {
      return { rand: await readFile(join(mnt, 'rand')), marker: await readFile(join(mnt, 'marker'), 'utf8') };
    } finally {
      await buildah(s, ['umount', ctr]);
      await buildah(s, ['rm', ctr]);
    }
  }

  /** The build output, split per Dockerfile step ("STEP 3/3: RUN …" up to the next STEP). */
  function steps(output: string): string[] {
    return output.split(/^(?=STEP \d+\/\d+: )/m).filter((s) => s.startsWith('STEP '));
  }

  beforeAll(async () => {
    requireTools(TOOLS);
    await assertStaticBusybox('/bin/busybox');
    ce = await containersEnv();
    work = await makeTempDir('buildcached-buildah-');
    ctx = join(work, 'ctx');
    await mkdir(ctx);
    await copyFile('/bin/busybox', join(ctx, 'busybox'));
    await writeFile(join(ctx, 'Dockerfile'), DOCKERFILE);
    storageConf = join(work, 'storage.conf');
    await writeFile(storageConf, `[storage]\ndriver = "vfs"\nrunroot = "${work}/default-runroot"\ngraphroot = "${work}/default-root"\n`);
    // vfs layers are plain directories; remove buildah's containers first so nothing is left holding them.
    onCleanup(async () => {
      for (const s of stores) {
        await buildah(s, ['rm', '--all'], false).catch(() => undefined);
        await buildah(s, ['umount', '--all'], false).catch(() => undefined);
      }
    });
    daemon = await startDaemon();
  }, 60_000);

  afterAll(cleanup);

  it('a second build on an empty store is served from the registry cache, byte for byte', async () => {
    const client = new RegistryClient(daemon.url);

    // Job 1: nothing cached yet; the RUN step runs and every step's result is pushed.
    const s1 = await newStore('job1');
    const first = await build(s1, 'one', true);
    const firstOut = first.stdout + first.stderr;
    expect(firstOut).toMatch(/Pushing cache/);
    expect(firstOut).not.toMatch(/Cache pulled from remote/);
    const tags = JSON.parse((await client.req('GET', '/v2/cache/app/tags/list')).body.toString()) as { tags: string[] };
    // One cache image per cached step (COPY and RUN).
    expect(tags.tags.length).toBeGreaterThanOrEqual(2);
    const firstId = first.stdout.trim().split('\n').pop();

    const requestsBefore = daemon.logLines().length;

    // Job 2: a fresh machine (empty storage root) with the same Dockerfile and context.
    const s2 = await newStore('job2');
    const second = await build(s2, 'two', true);
    const secondOut = second.stdout + second.stderr;
    const runStep = steps(secondOut).find((s) => /^STEP \d+\/\d+: RUN/.test(s));
    expect(runStep, secondOut).toBeDefined();
    const pulled = new RegExp(`Cache pulled from remote ${daemon.hostPort.replace(/\./g, '\\.')}/cache/app:([0-9a-f]+)`).exec(runStep!);
    expect(pulled, `RUN step was not served from the cache:\n${secondOut}`).not.toBeNull();
    expect(tags.tags).toContain(pulled![1]);
    expect(runStep).toMatch(/Using cache/);
    // The image is the very same one.
    expect(second.stdout.trim().split('\n').pop()).toBe(firstId);

    // It was pulled from buildcached: manifest and blob GETs answered 200.
    const pulls = daemon.logLines().slice(requestsBefore).filter((l) => l.method === 'GET' && l.status === 200);
    expect(pulls.some((l) => l.route === '/v2/<name>/manifests/<reference>' && l.repo === 'cache/app')).toBe(true);
    expect(pulls.some((l) => l.route === '/v2/<name>/blobs/<digest>' && l.repo === 'cache/app')).toBe(true);

    const one = await builtFiles(s1, 'one');
    const two = await builtFiles(s2, 'two');
    expect(one.marker).toBe('built\n');
    expect(one.rand.length).toBe(4096);
    expect(two.rand.equals(one.rand)).toBe(true);
    expect(two.marker).toBe(one.marker);

    // Control: job 3 on an empty store without --cache-from really runs the step, giving other random bytes.
    const s3 = await newStore('job3');
    const third = await build(s3, 'three', false);
    expect(third.stdout + third.stderr).not.toMatch(/Cache pulled from remote/);
    const three = await builtFiles(s3, 'three');
    expect(three.marker).toBe('built\n');
    expect(three.rand.equals(one.rand)).toBe(false);
  }, 180_000);

  it('with auth on, a build pushes its cache with --creds and the next one imports it with a docker config.json', async () => {
    const fx = await authFixture();
    const config = join(fx.dir, 'auth.yaml');
    await writeFile(config, JSON.stringify({ auth: fx.auth }));
    const secured = await startDaemon({ args: ['--config', config, '--workers', '2'] });
    try {
      const first = await build(await newStore('auth1'), 'auth-one', true, secured, ['--creds', `ci:${PASSWORDS.ci}`]);
      expect(first.stdout + first.stderr).toMatch(/Pushing cache/);
      const authfile = join(work, 'auth-config.json');
      await writeFile(authfile, JSON.stringify({ auths: { [secured.hostPort]: { auth: Buffer.from(`ci:${PASSWORDS.ci}`).toString('base64') } } }));
      const second = await build(await newStore('auth2'), 'auth-two', true, secured, ['--authfile', authfile]);
      expect(second.stdout + second.stderr).toMatch(/Cache pulled from remote/);
      expect(second.stdout.trim().split('\n').pop()).toBe(first.stdout.trim().split('\n').pop());
      // Both went through the token endpoint as ci, and nothing was refused once they held a token.
      const lines = secured.logLines();
      expect(lines.some((l) => l.route === '/token' && l.user === 'ci')).toBe(true);
      expect(lines.filter((l) => l.status === 403)).toEqual([]);
    } finally {
      await secured.stop();
      await fx.close();
    }
  }, 240_000);

  it('served every request without a server error', () => {
    const bad = daemon.logLines().filter((l) => typeof l.status === 'number' && (l.status >= 500 || l.status === 0));
    expect(bad).toEqual([]);
  });
});
