import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { Registry } from '../registry/registry.js';
import { createApp } from './app.js';
import type { Readiness } from './routes/health.js';
import { createHttpServer, type RegistryServer } from './http-server.js';
import { loadTls } from './tls.js';

export class ListenError extends Error {}

export interface HttpServer {
  url: string;
  server: RegistryServer;
  /** Reads the TLS files again and serves new connections with them; open ones keep theirs. On failure (logged)
   *  the certificate in use stays. Nothing to do without TLS. */
  reloadTls(): Promise<void>;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), then resolves. */
  close(): Promise<void>;
}

export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}

export function listen(server: RegistryServer, host: string, port: number): Promise<AddressInfo> {
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

/** Serves the registry over HTTP on the configured address (the admin API has its own listener: admin-server.ts). */
export async function serveHttp(config: Config, registry: Registry, log: Logger, readiness?: Readiness): Promise<HttpServer> {
  const app = createApp(registry, log, {
    maxManifestBytes: config.registry.maxManifestBytes,
    maxBufferedManifestBytes: config.http.maxBufferedManifestBytes,
    ...(readiness ? { readiness } : {}),
  });
  const tls = config.tls;
  const server = createHttpServer(app, config.http, {
    processes: config.workers,
    log,
    ...(tls ? { tls: { context: await loadTls(tls), requireClientCert: tls.clientCa !== undefined } } : {}),
  });
  const reloadTls = async () => {
    if (!tls) return;
    try {
      (server as HttpsServer).setSecureContext(await loadTls(tls));
      log.info({ cert: tls.cert }, 'TLS certificate reloaded');
    } catch (err) {
      log.error({ err }, 'TLS reload failed: still serving the previous certificate');
    }
  };
  const { host, port } = splitListen(config.listen);
  const addr = await listen(server, host, port);
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const force = setTimeout(() => server.closeAllConnections(), config.shutdownTimeout).unref();
      // Keep-alive connections busy now go idle later: close each as soon as it does, not at the timeout.
      const sweep = setInterval(() => server.closeIdleConnections(), 100);
      const closeAfter = (_req: IncomingMessage, res: ServerResponse) => res.setHeader('Connection', 'close');
      server.prependListener('request', closeAfter);
      server.prependListener('checkContinue', closeAfter);
      const closed = new Promise<void>((done) => server.close(() => done()));
      server.closeIdleConnections();
      await closed;
      clearInterval(sweep);
      clearTimeout(force);
    })());
  return { url: `${tls ? 'https' : 'http'}://${hostPart}:${addr.port}`, server, reloadTls, close };
}
