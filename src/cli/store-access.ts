import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Admin } from '../cache/admin.js';
import { createLogger } from '../observability/logger.js';
import { openStore } from '../store.js';
import { acquireDataDir, isAlive, readOwner } from '../storage/data-dir.js';
import { Layout } from '../storage/layout.js';

/** One admin operation, either sent to the running daemon's /admin/v1 API or run on the store directly. */
export interface AdminCall<T> {
  method: 'GET' | 'POST';
  path: string;
  direct(admin: Admin): Promise<T>;
}

/**
 * The CLI never edits a store behind a running daemon's back: when a daemon holds the data directory the call
 * goes through its admin API (so its in-memory indexes and the single evictor stay in charge); otherwise the CLI
 * takes the data directory lock itself, so a daemon starting meanwhile waits its turn.
 */
export async function callAdmin<T>(config: Config, call: AdminCall<T>): Promise<T> {
  const layout = new Layout(resolve(config.storage.dir));
  const owner = await readOwner(layout);
  if (owner?.url && owner.pid !== process.pid && isAlive(owner.pid)) {
    const res = await fetch(`${owner.url}${call.path}`, { method: call.method });
    const body = (await res.json()) as T & { errors?: { message: string }[] };
    if (!res.ok) throw new Error(`daemon (pid ${owner.pid}) answered ${res.status}: ${body.errors?.[0]?.message ?? ''}`);
    return body;
  }
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level);
  const release = await acquireDataDir(layout, (err) => {
    throw err;
  });
  try {
    const store = await openStore(config, log);
    try {
      return await call.direct(store.admin);
    } finally {
      await store.close();
    }
  } finally {
    await release();
  }
}
