import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { serveAdmin, type AdminServer } from '../http/admin-server.js';
import { serveHttp, type Observers } from '../http/server.js';
import type { Logger } from '../observability/logger.js';
import { acquireDataDir, recordOwner } from '../storage/data-dir.js';
import { Layout } from '../storage/layout.js';
import { openStore, type OpenedStore } from '../store.js';
import { localGuard } from '../auth/login-limiter.js';
import { loginLimits } from '../auth/setup.js';
import { serveMetrics } from '../http/metrics-server.js';
import { singleProcessMetrics } from '../observability/store-metrics.js';

export interface Running {
  url: string;
  /** SIGHUP: every listener reads its TLS files again. */
  reloadTls(): void;
  close(): Promise<void>;
}

/** The daemon's hold on its data directory; losing it (a stale-lock takeover) ends the process. */
export function lockDataDir(layout: Layout, log: Logger): Promise<() => Promise<void>> {
  return acquireDataDir(layout, (err) => {
    log.fatal({ err }, 'lost the data directory lock; exiting to protect the store');
    process.exit(1);
  });
}

/** Records where the daemon answers (DATA/daemon.json, for the CLI) and says that it is up. */
export async function announce(layout: Layout, log: Logger, url: string, admin: AdminServer, workers: number, metricsUrl?: string): Promise<void> {
  await recordOwner(layout, { url, adminUrl: admin.url, ...(admin.token ? { adminToken: admin.token } : {}) });
  log.info({ url, adminUrl: admin.url, ...(metricsUrl ? { metricsUrl } : {}), dataDir: layout.root, workers }, `listening on ${url}`);
}

/** Why the daemon is degraded: its tier failed and has not succeeded since (local hits and pushes still work). */
export function tierDegraded(store: OpenedStore): string | undefined {
  const wb = store.tier?.writeBack;
  return wb?.degraded ? `S3 tier unreachable: ${wb.status().lastError ?? 'unknown error'}` : undefined;
}

/** The analytics fed straight into the store's owner, in the process that serves the request. */
export function ownerAnalytics(store: OpenedStore): Pick<Observers, 'activity' | 'lookup'> {
  return {
    activity: (a) => store.references.record(a),
    lookup: (hit) => store.hits.record(hit ? 1 : 0, hit ? 0 : 1),
  };
}

/** The whole daemon in one process: lock, store, background work, HTTP and the admin listener. */
export async function startSingle(config: Config, log: Logger): Promise<Running> {
  const layout = new Layout(resolve(config.storage.dir));
  const release = await lockDataDir(layout, log);
  /** What to undo, last first, should start-up fail half-way. */
  const opened: Array<() => Promise<void>> = [release];
  try {
    const store = await openStore(config, log);
    const admin = await serveAdmin(config, layout, store.admin, log);
    opened.push(admin.close);
    const tier = store.tier;
    if (tier) {
      store.blobs.subscribe((e) => tier.writeBack.observe(e));
      store.repos.subscribe((e) => tier.writeBack.observe(e));
    }
    const metrics = config.metrics.enabled ? singleProcessMetrics(store, config.metrics.topReferences) : undefined;
    const http = await serveHttp(config, store.registry, log, localGuard(loginLimits(config)), {
      ...(metrics ? { metrics } : {}),
      ...(config.analytics.enabled ? ownerAnalytics(store) : {}),
      readiness: async () => tierDegraded(store),
    });
    opened.push(http.close);
    const metricsServer = metrics && (await serveMetrics(config, metrics.source, log));
    if (metricsServer) opened.push(metricsServer.close);
    store.startBackground();
    await announce(layout, log, http.url, admin, 1, metricsServer?.url);
    return {
      url: http.url,
      reloadTls: () => void http.reloadTls(),
      close: async () => {
        await admin.close();
        await metricsServer?.close();
        await http.close();
        await store.close();
        await release();
      },
    };
  } catch (e) {
    for (const undo of opened.reverse()) await undo();
    throw e;
  }
}
