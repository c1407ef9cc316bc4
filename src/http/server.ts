import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { Registry } from '../registry/registry.js';
import { createApp, type AppOptions } from './app.js';
import { createHttpServer, type RegistryServer } from './http-server.js';
import { loadTls } from './tls.js';
import type { LoginGuard } from '../auth/login-limiter.js';
import { loadAuthenticator } from '../auth/setup.js';
import { Layout } from '../storage/layout.js';

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

/** What the app is given beyond the configuration: metrics, analytics, readiness (see AppOptions). */
export type Observers = Pick<AppOptions, 'metrics' | 'activity' | 'lookup' | 'readiness'>;

/** The registry's request listener as the configuration describes it, authentication included. */
export async function configuredApp(config: Config, registry: Registry, log: Logger, loginGuard: LoginGuard, observers: Observers = {}): Promise<RequestListener> {
  const auth = config.auth;
  const layout = new Layout(resolve(config.storage.dir));
  return createApp(registry, log, {
    maxManifestBytes: config.registry.maxManifestBytes,
    maxBufferedManifestBytes: config.http.maxBufferedManifestBytes,
    ...(auth
      ? {
          auth: {
            authenticator: await loadAuthenticator(auth, layout, loginGuard, log),
            challenge: { realm: auth.realm, service: auth.service },
            tokens: { tokenTtlSeconds: Math.round(auth.tokenTtl / 1000), refreshTokenTtlSeconds: Math.round(auth.refreshTokenTtl / 1000) },
            layout,
          },
        }
      : {}),
    ...observers,
  });
}

/** Serves the registry over HTTP on the configured address (the admin API has its own listener: admin-server.ts). */
export async function serveHttp(config: Config, registry: Registry, log: Logger, loginGuard: LoginGuard, observers: Observers): Promise<HttpServer> {
  const app = await configuredApp(config, registry, log, loginGuard, observers);
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
