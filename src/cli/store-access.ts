import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Admin } from '../cache/admin.js';
import { errnoCode } from '../core/errors.js';
import { createLogger } from '../observability/logger.js';
import { openStore } from '../store.js';
import { acquireDataDir, isAlive, readOwner, type Owner } from '../storage/data-dir.js';
import { Layout } from '../storage/layout.js';
import { adminTarget } from '../http/admin-target.js';

/** An expected failure of a command (no store, no daemon answering, a refusal): printed as one line, no stack. */
export class CliError extends Error {}

/** One admin operation, either sent to the running daemon's /admin/v1 API or run on the store directly. */
export interface AdminCall<T> {
  method: 'GET' | 'POST';
  path: string;
  direct(admin: Admin): Promise<T>;
}

/**
 * One request to the daemon with node:http: fetch refuses the WHATWG "bad ports" (5060, 6000, …) that an operator
 * may well listen on, and cannot reach a unix socket. `target` is `unix:/path` or `http://host:port`.
 */
export function daemonRequest<T>(owner: Owner, target: string, method: string, path: string, token?: string): Promise<T> {
  const where = adminTarget(target);
  const headers: http.OutgoingHttpHeaders = token ? { Authorization: `Bearer ${token}` } : {};
  return new Promise((ok, fail) => {
    // `health` asks the registry listener of the daemon that daemon.json names, on this machine: whether it
    // answers, not who it is, so its certificate (made out to the public name) is not checked.
    const send = target.startsWith('https:')
      ? (o: http.RequestOptions, cb: (res: http.IncomingMessage) => void) => https.request({ ...o, rejectUnauthorized: false }, cb)
      : http.request;
    const req = send({ ...where, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => fail(new CliError(`the daemon (pid ${owner.pid}) at ${target} broke off its answer: ${e.message}`)));
      res.on('end', () => {
        let body: T & { errors?: { message?: string }[] };
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
        } catch {
          return fail(new CliError(`the daemon (pid ${owner.pid}) at ${target} answered ${res.statusCode} without JSON`));
        }
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          return fail(new CliError(`the daemon (pid ${owner.pid}) answered ${status}: ${body.errors?.[0]?.message ?? 'no message'}`));
        }
        ok(body);
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => fail(new CliError(`the daemon (pid ${owner.pid}) does not answer at ${target}: ${e.code ?? e.message}`)));
    req.end();
  });
}

/** The daemon holding this data directory, when one runs (its pid is alive). */
export async function runningDaemon(layout: Layout): Promise<Owner | undefined> {
  // daemon.json is its owner's only (it may hold the admin token): say so rather than take the daemon for absent.
  const readable = await access(layout.pidFile, constants.R_OK).then(() => true, (e: unknown) => errnoCode(e) !== 'EACCES');
  if (!readable) throw new CliError(`cannot read ${layout.pidFile}: permission denied; run this as the daemon's user or root`);
  const owner = await readOwner(layout);
  return owner && owner.pid !== process.pid && isAlive(owner.pid) ? owner : undefined;
}

/**
 * What makes a directory a store: a daemon created `blobs/` when it first opened it. A typo in --data must not
 * quietly create an empty store and report 0 B. As root, the CLI leaves a store that belongs to another user (the
 * daemon's) alone: files it wrote would be root's, and the daemon could not touch them again.
 */
async function assertStore(layout: Layout): Promise<void> {
  const blobs = await stat(layout.blobs).catch(() => undefined);
  if (!blobs?.isDirectory()) {
    throw new CliError(`no buildcached store in ${layout.root} (it has no blobs/ directory): check --data, BUILDCACHED_DATA or storage.dir`);
  }
  const uid = (await stat(layout.root)).uid;
  if (process.getuid?.() === 0 && uid !== 0) {
    throw new CliError(`${layout.root} belongs to uid ${uid}, and no daemon runs on it: run this command as that user (e.g. sudo -u buildcached …)`);
  }
}

/**
 * The CLI never edits a store behind a running daemon's back: when a daemon holds the data directory the call
 * goes through its admin API (so its in-memory indexes and the single evictor stay in charge); otherwise the CLI
 * takes the data directory lock itself, so a daemon starting meanwhile waits its turn.
 */
export async function callAdmin<T>(config: Config, call: AdminCall<T>): Promise<T> {
  const layout = new Layout(resolve(config.storage.dir));
  const owner = await runningDaemon(layout);
  if (owner) {
    if (!owner.adminUrl) {
      throw new CliError(`the daemon (pid ${owner.pid}) has not recorded its admin API in ${layout.pidFile} yet: it is starting, or older than this CLI`);
    }
    return daemonRequest<T>(owner, owner.adminUrl, call.method, call.path, owner.adminToken);
  }
  await assertStore(layout);
  // On stderr: stdout is the command's output (--json).
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, 2, config.log.format);
  const release = await acquireDataDir(layout, (err) => {
    throw err;
  });
  try {
    const store = await openStore(config, log, { serving: false });
    try {
      return await call.direct(store.admin);
    } finally {
      await store.close();
    }
  } finally {
    await release();
  }
}
