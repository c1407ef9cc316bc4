import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { serveHttp } from '../http/server.js';
import type { Logger } from '../observability/logger.js';
import { acquireDataDir, recordOwner } from '../storage/data-dir.js';
import { Layout } from '../storage/layout.js';
import { openStore } from '../store.js';

export interface Running {
  url: string;
  close(): Promise<void>;
}

/** The daemon's hold on its data directory; losing it (a stale-lock takeover) ends the process. */
export function lockDataDir(layout: Layout, log: Logger): Promise<() => Promise<void>> {
  return acquireDataDir(layout, (err) => {
    log.fatal({ err }, 'lost the data directory lock; exiting to protect the store');
    process.exit(1);
  });
}

/** The whole daemon in one process: lock, store, background work and HTTP. */
export async function startSingle(config: Config, log: Logger): Promise<Running> {
  const layout = new Layout(resolve(config.storage.dir));
  const release = await lockDataDir(layout, log);
  try {
    const store = await openStore(config, log);
    const http = await serveHttp(config, store.registry, store.admin, log);
    store.startBackground();
    await recordOwner(layout, { url: http.url });
    log.info({ url: http.url, dataDir: layout.root, workers: 1 }, `listening on ${http.url}`);
    return {
      url: http.url,
      close: async () => {
        await http.close();
        await store.close();
        await release();
      },
    };
  } catch (e) {
    await release();
    throw e;
  }
}
