import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { Registry } from '../registry/registry.js';
import { createApp } from './app.js';
import { createHttpServer } from './http-server.js';

export class ListenError extends Error {}

export interface HttpServer {
  url: string;
  server: Server;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), then resolves. */
  close(): Promise<void>;
}

export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}

export function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
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
export async function serveHttp(config: Config, registry: Registry, log: Logger): Promise<HttpServer> {
  const app = createApp(registry, log, {
    maxManifestBytes: config.registry.maxManifestBytes,
    maxBufferedManifestBytes: config.http.maxBufferedManifestBytes,
  });
  const server = createHttpServer(app, config.http, { processes: config.workers, log });
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
  return { url: `http://${hostPart}:${addr.port}`, server, close };
}
