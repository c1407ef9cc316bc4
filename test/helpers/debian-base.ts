/**
 * A local stand-in for the Dockerfile's default base (node:20-bookworm-slim) where Docker Hub is out of reach: a
 * Debian minbase rootfs made by debootstrap (this machine's release, from the mirror its apt uses) with this
 * machine's own Node copied in (node and npm, laid out as the official image lays them out under /usr/local).
 * Debian's `nodejs` is Node 18 in bookworm, older than the daemon needs; copying the Node that runs the tests keeps
 * the image on the version the suite proves. The rootfs is the slow part (debootstrap, a minute or two), so its
 * tarball is kept under node_modules/.cache: later runs in the same checkout reuse it, `npm ci` drops it.
 */
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from './daemon.js';
import { runOk, type ToolResult } from './tools.js';

const CACHE_DIR = join(REPO_ROOT, 'node_modules', '.cache', 'buildcached-e2e');
const SOURCES_DIR = '/etc/apt/sources.list.d';

/** This machine's Debian codename (bookworm), from /etc/os-release. */
export function debianCodename(): string {
  const m = /^VERSION_CODENAME=(\S+)$/m.exec(readFileSync('/etc/os-release', 'utf8'));
  if (!m) throw new Error('/etc/os-release names no VERSION_CODENAME: not a Debian release debootstrap knows');
  return m[1]!.replace(/"/g, '');
}

/**
 * The mirror apt installs `codename` from: the first source whose suites include exactly that codename (so not
 * bookworm-security, nor a vendor's repository), in deb822 `.sources` files or one-line `sources.list` entries.
 */
export function aptMirror(codename: string): string {
  const files = ['/etc/apt/sources.list'];
  if (existsSync(SOURCES_DIR)) files.push(...readdirSync(SOURCES_DIR).sort().map((f) => join(SOURCES_DIR, f)));
  for (const file of files.filter(existsSync)) {
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
        if (field('Types').includes('deb') && field('Suites').includes(codename)) return field('URIs')[0]!;
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line.trim());
        if (m && m[2] === codename) return m[1]!;
      }
    }
  }
  throw new Error(`no apt source for ${codename} in /etc/apt: debootstrap needs the Debian mirror apt uses`);
}

export interface RootfsTar {
  path: string;
  /** True when an earlier run's tarball was reused. */
  cached: boolean;
}

/** A tarball of a debootstrap --variant=minbase rootfs of this machine's release, made once per checkout. */
export async function debianRootfsTar(): Promise<RootfsTar> {
  const codename = debianCodename();
  const path = join(CACHE_DIR, `debian-${codename}-minbase.tar`);
  if (existsSync(path)) return { path, cached: true };
  await mkdir(CACHE_DIR, { recursive: true });
  // Built beside the cache and renamed into place, so an interrupted run never leaves half a tarball to reuse.
  const tmp = await mkdtemp(join(CACHE_DIR, 'tmp-'));
  try {
    const rootfs = join(tmp, 'rootfs');
    await runOk('debootstrap', ['--variant=minbase', codename, rootfs, aptMirror(codename)], { timeoutMs: 900_000 });
    // What the official slim images leave out too: downloaded packages and apt's lists.
    await rm(join(rootfs, 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
    await rm(join(rootfs, 'var', 'lib', 'apt', 'lists'), { recursive: true, force: true });
    await mkdir(join(rootfs, 'var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
    await mkdir(join(rootfs, 'var', 'lib', 'apt', 'lists', 'partial'), { recursive: true });
    await runOk('tar', ['--numeric-owner', '-C', rootfs, '-cf', join(tmp, 'rootfs.tar'), '.'], { timeoutMs: 300_000 });
    await rename(join(tmp, 'rootfs.tar'), path);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return { path, cached: false };
}

/** Where this Node's npm lives: <prefix>/lib/node_modules/npm beside <prefix>/bin/node (nodesource, nodejs.org). */
function npmDir(): string {
  const dir = join(dirname(dirname(realpathSync(process.execPath))), 'lib', 'node_modules', 'npm');
  if (!existsSync(join(dir, 'bin', 'npm-cli.js'))) throw new Error(`no npm beside ${process.execPath} (looked in ${dir})`);
  return dir;
}

/**
 * The CA bundle this machine's Node trusts beyond its built-in roots. Where egress goes through a TLS-inspecting
 * proxy, the image's `npm ci` needs it to reach the npm registry; the official image has no such need.
 */
function extraCaFile(): string | undefined {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  return file && existsSync(file) ? file : undefined;
}

/**
 * Commits the base image `tag` into the store `buildah` runs against: the rootfs tarball unpacked into a scratch
 * container, this machine's node and npm under /usr/local, its extra CA bundle at the same path.
 */
export async function commitLocalBase(buildah: (args: string[]) => Promise<ToolResult>, rootfsTar: string, tag: string): Promise<void> {
  const ctr = (await buildah(['from', 'scratch'])).stdout.trim();
  const mnt = (await buildah(['mount', ctr])).stdout.trim();
  await runOk('tar', ['--numeric-owner', '-C', mnt, '-xf', rootfsTar], { timeoutMs: 300_000 });
  await mkdir(join(mnt, 'usr', 'local', 'lib', 'node_modules'), { recursive: true });
  await runOk('cp', ['-L', realpathSync(process.execPath), join(mnt, 'usr', 'local', 'bin', 'node')]);
  await runOk('cp', ['-a', npmDir(), join(mnt, 'usr', 'local', 'lib', 'node_modules', 'npm')]);
  await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(mnt, 'usr', 'local', 'bin', 'npm'));
  await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(mnt, 'usr', 'local', 'bin', 'npx'));
  const ca = extraCaFile();
  if (ca) {
    await mkdir(join(mnt, dirname(ca)), { recursive: true });
    await runOk('cp', ['-L', ca, join(mnt, ca)]);
  }
  await buildah(['umount', ctr]);
  await buildah([
    'config',
    '--env',
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    '--env',
    `NODE_VERSION=${process.versions.node}`,
    ...(ca ? ['--env', `NODE_EXTRA_CA_CERTS=${ca}`] : []),
    '--cmd',
    'node',
    ctr,
  ]);
  await buildah(['commit', '--rm', '--quiet', ctr, tag]);
}
