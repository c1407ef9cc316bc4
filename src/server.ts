import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { Config } from './config/schema.js';
import { createApp } from './http/app.js';
import type { Logger } from './observability/logger.js';
import { Registry } from './registry/registry.js';
import { BlobStore } from './storage/blob-store.js';
import { acquireDataDir } from './storage/data-dir.js';
import { Layout } from './storage/layout.js';
import { RepositoryStore } from './storage/repository-store.js';
import { UploadStore } from './storage/upload-store.js';

export interface RunningServer {
  url: string;
  server: Server;
  registry: Registry;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), releases the data dir. */
  close(): Promise<void>;
}

export class ListenError extends Error {}

/** Opens the stores of a data directory (already locked by the caller) and builds the registry over them. */
export async function openRegistry(config: Config, log: Logger): Promise<Registry> {
  const layout = new Layout(resolve(config.storage.dir));
  const blobs = new BlobStore(layout);
  const uploads = new UploadStore(layout, blobs, config.storage.uploadTtl);
  const repos = new RepositoryStore(layout);
  await blobs.open();
  const leftovers = await blobs.removeLeftovers();
  await uploads.open();
  const expired = await uploads.sweep();
  await repos.open();
  log.info({ blobs: blobs.count, repositories: repos.repositories().length, leftovers, expiredUploads: expired }, 'store opened');
  return new Registry(blobs, uploads, repos, {
    automaticCrossMount: config.registry.automaticCrossMount,
    deleteEnabled: config.storage.deleteEnabled,
  });
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
    const registry = await openRegistry(config, log);
    const app = createApp(registry, log, { maxManifestBytes: config.registry.maxManifestBytes });
    // No request timeout: a multi-GiB layer upload from a slow CI runner may legitimately take many minutes.
    server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 }, app);
    const { host, port } = splitListen(config.listen);
    const addr = await listen(server, host, port);
    const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `http://${hostPart}:${addr.port}`;
    const sweeper = setInterval(
      () => void registry.uploads.sweep().then((n) => n && log.info({ removed: n }, 'expired upload sessions removed')),
      Math.min(config.storage.uploadTtl / 4, 10 * 60_000),
    ).unref();
    const running = server;
    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        clearInterval(sweeper);
        const force = setTimeout(() => running.closeAllConnections(), config.shutdownTimeout).unref();
        await new Promise<void>((done) => running.close(() => done()));
        running.closeIdleConnections();
        clearTimeout(force);
        await release();
      })());
    log.info({ url, address: `${hostPart}:${addr.port}`, dataDir: layout.root }, `listening on ${url}`);
    return { url, server: running, registry, close };
  } catch (e) {
    server?.close();
    await release();
    throw e;
  }
}
