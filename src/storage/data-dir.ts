import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import lockfile from 'proper-lockfile';
import { errnoCode } from '../core/errors.js';
import type { Layout } from './layout.js';

export class DataDirError extends Error {}

/**
 * Exclusive ownership of a data directory by one daemon. The lock (proper-lockfile: a lock folder whose mtime
 * is refreshed, so a crashed holder goes stale instead of blocking forever) is taken before anything is read;
 * the holder's pid is written beside it so that a refused second daemon can name it.
 */
export async function acquireDataDir(layout: Layout, onCompromised: (err: Error) => void): Promise<() => Promise<void>> {
  try {
    await mkdir(layout.root, { recursive: true });
    // As root, permission bits do not stop us; only an actual write proves the directory is usable.
    await writeFile(`${layout.root}/.write-probe`, '');
    await rm(`${layout.root}/.write-probe`);
  } catch (e) {
    throw new DataDirError(`data directory ${layout.root} is not writable: ${(e as Error).message}`);
  }
  const lock = () =>
    lockfile.lock(layout.root, {
      lockfilePath: `${layout.root}/daemon.lock`,
      stale: 30_000,
      update: 10_000,
      retries: 0,
      realpath: false,
      onCompromised,
    });
  let release: () => Promise<void>;
  try {
    release = await lock();
  } catch (e) {
    if (errnoCode(e) !== 'ELOCKED') throw e;
    const owner = await readOwner(layout);
    if (owner && isAlive(owner.pid)) {
      throw new DataDirError(`data directory ${layout.root} is in use by another buildcached (pid ${owner.pid})`);
    }
    // The holder died without releasing (kill -9, power loss): its lock would only go stale after 30 s, and a
    // supervisor restarting the daemon at once would be refused. Its recorded pid is gone, so take over.
    await rm(`${layout.root}/daemon.lock`, { recursive: true, force: true });
    try {
      release = await lock();
    } catch (again) {
      if (errnoCode(again) !== 'ELOCKED') throw again;
      const winner = (await readOwner(layout))?.pid ?? 'unknown';
      throw new DataDirError(`data directory ${layout.root} is in use by another buildcached (pid ${winner})`);
    }
  }
  await recordOwner(layout, {});
  return async () => {
    await rm(layout.pidFile, { force: true });
    await release();
  };
}

/** Who holds the data directory, and where it answers once it listens: the registry and the admin API. */
export interface Owner {
  pid: number;
  url?: string;
  /** `unix:/path` or `http://host:port`. */
  adminUrl?: string;
  /** Present when the admin API needs a bearer token: why the file is readable by its owner only. */
  adminToken?: string;
}

/** Replaced atomically (a reader never sees half of it) and created mode 0600, since it may hold the admin token. */
export async function recordOwner(layout: Layout, info: Omit<Owner, 'pid'>): Promise<void> {
  const tmp = `${layout.pidFile}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, `${JSON.stringify({ pid: process.pid, ...info })}\n`, { mode: 0o600 });
  await rename(tmp, layout.pidFile);
}

export async function readOwner(layout: Layout): Promise<Owner | undefined> {
  try {
    const o = JSON.parse(await readFile(layout.pidFile, 'utf8')) as Owner;
    return typeof o.pid === 'number' ? o : undefined;
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}
