import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { Config } from './config/schema.js';
import { createApp } from './http/app.js';
import type { Logger } from './observability/logger.js';
import { Registry } from './registry/registry.js';
import { BlobStore } from './storage/blob-store.js';
import { acquireDataDir, recordOwner } from './storage/data-dir.js';
import { Admin } from './cache/admin.js';
import { Layout } from './storage/layout.js';
import { RepositoryStore } from './storage/repository-store.js';
import { UploadStore } from './storage/upload-store.js';
import { Recency } from './cache/recency.js';
import { Evictor } from './cache/evictor.js';
import { CacheTracker } from './cache/cache.js';
import { resolveBudget } from './cache/budget.js';

export interface RunningServer {
  url: string;
  server: Server;
  registry: Registry;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), releases the data dir. */
  close(): Promise<void>;
}

export class ListenError extends Error {}

/** A data directory opened for serving: the registry and the cache machinery around it. */
export interface OpenedStore {
  layout: Layout;
  registry: Registry;
  recency: Recency;
  evictor: Evictor;
  admin: Admin;
  /** Starts the timers: recency flushes, budget checks, upload expiry. */
  startBackground(): void;
  /** Stops the timers and persists recency. */
  close(): Promise<void>;
}

/** Opens the stores of a data directory (already locked by the caller) and builds the registry over them. */
export async function openStore(config: Config, log: Logger): Promise<OpenedStore> {
  const layout = new Layout(resolve(config.storage.dir));
  const blobs = new BlobStore(layout);
  const uploads = new UploadStore(layout, blobs, config.storage.uploadTtl);
  const repos = new RepositoryStore(layout);
  const recency = new Recency(layout.state, layout.tmp, config.storage.pushGraceSeconds);
  await recency.open();
  await blobs.open((digest, _size, mtimeMs) => recency.seedBlob(digest, Math.floor(mtimeMs / 1000)));
  const leftovers = await blobs.removeLeftovers();
  await uploads.open();
  const expired = await uploads.sweep();
  await repos.open();
  const budget = {
    maxBytes: await resolveBudget(config.storage.maxBytes, layout.root),
    high: config.storage.highWatermark,
    low: config.storage.lowWatermark,
    graceSeconds: config.storage.pushGraceSeconds,
  };
  const evictor = new Evictor(blobs, uploads, repos, recency, budget, log);
  const registry = new Registry(
    blobs,
    uploads,
    repos,
    { automaticCrossMount: config.registry.automaticCrossMount, deleteEnabled: config.storage.deleteEnabled },
    new CacheTracker(recency, evictor),
  );
  log.info(
    { blobs: blobs.count, bytes: blobs.bytes, budget: budget.maxBytes, repositories: repos.repositories().length, leftovers, expiredUploads: expired },
    'store opened',
  );
  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => Promise<unknown>, what: string) =>
    timers.push(setInterval(() => void fn().catch((err: unknown) => log.error({ err }, `${what} failed`)), ms).unref());
  return {
    layout,
    registry,
    recency,
    evictor,
    admin: new Admin(blobs, repos, recency, evictor),
    startBackground() {
      every(5_000, () => recency.flush(), 'recency flush');
      every(30_000, () => evictor.evictIfOver('high watermark'), 'eviction');
      every(Math.min(config.storage.uploadTtl / 4, 10 * 60_000), async () => {
        const n = await uploads.sweep();
        if (n) log.info({ removed: n }, 'expired upload sessions removed');
      }, 'upload expiry');
      void evictor.evictIfOver('start-up').catch((err: unknown) => log.error({ err }, 'eviction failed'));
    },
    async close() {
      for (const t of timers) clearInterval(t);
      await recency.flush();
    },
  };
}

/** The registry alone, for tests and tools that need no background work. */
export async function openRegistry(config: Config, log: Logger): Promise<Registry> {
  return (await openStore(config, log)).registry;
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((ok, fail) => {
    const onError = (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.code === 'EACCES' ? 'permission denied' : e.message;
      fail(new ListenError(`cannot listen on ${host}:${port}: ${why}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      ok(server.address() as AddressInfo);
    });
  });
}

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const layout = new Layout(resolve(config.storage.dir));
  const release = await acquireDataDir(layout, (err) => {
    log.fatal({ err }, 'lost the data directory lock; exiting to protect the store');
    process.exit(1);
  });
  let server: Server | undefined;
  try {
    const store = await openStore(config, log);
    const { registry } = store;
    const app = createApp(registry, log, { maxManifestBytes: config.registry.maxManifestBytes, admin: store.admin });
    // No request timeout: a multi-GiB layer upload from a slow CI runner may legitimately take many minutes.
    server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 }, app);
    const { host, port } = splitListen(config.listen);
    const addr = await listen(server, host, port);
    const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `http://${hostPart}:${addr.port}`;
    store.startBackground();
    const running = server;
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        const force = setTimeout(() => running.closeAllConnections(), config.shutdownTimeout).unref();
        await new Promise<void>((done) => running.close(() => done()));
        running.closeIdleConnections();
        clearTimeout(force);
        await store.close();
        await release();
      })());
    await recordOwner(layout, { url });
    log.info({ url, address: `${hostPart}:${addr.port}`, dataDir: layout.root }, `listening on ${url}`);
    return { url, server: running, registry, close };
  } catch (e) {
    server?.close();
    await release();
    throw e;
  }
}
