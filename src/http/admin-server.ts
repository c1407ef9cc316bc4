import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, lstat, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import express, { type RequestHandler } from 'express';
import type { AdminApi } from '../cache/admin.js';
import type { Config } from '../config/schema.js';
import { OciError, errnoCode } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import type { Layout } from '../storage/layout.js';
import { errorHandler, notFound } from './oci-errors.js';
import { requestLogMiddleware } from './request-log.js';
import { adminRoutes } from './routes/admin.js';
import { ListenError, listen, splitListen } from './server.js';

/** Linux's sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export interface AdminServer {
  /** `unix:/path/admin.sock` or `http://127.0.0.1:PORT`. */
  url: string;
  /** The bearer token every admin request must carry; undefined when none is needed (a unix socket, mode 0600). */
  token: string | undefined;
  /** Stops at once: admin calls are operator tools, and each of their steps is crash-safe on its own. */
  close(): Promise<void>;
}

/** Accepts only `Authorization: Bearer <token>`; a peer address or a forwarding header never stands in for it. */
function requireToken(token: string): RequestHandler {
  const expected = Buffer.from(`Bearer ${token}`);
  return (req, res, next) => {
    const got = Buffer.from(req.headers.authorization ?? '');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      res.set('WWW-Authenticate', 'Bearer realm="buildcached-admin"');
      throw new OciError('UNAUTHORIZED', 'the admin API needs Authorization: Bearer <admin token> (adminToken in daemon.json)');
    }
    next();
  };
}

/** The admin API alone: status, du, gc, prune, verify. The registry's listener never serves it. */
export function createAdminApp(admin: AdminApi, log: Logger, token: string | undefined): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');
  app.use(requestLogMiddleware(log));
  if (token) app.use(requireToken(token));
  app.use(adminRoutes(admin));
  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}

/**
 * A socket file left by a daemon that died is removed; one that still answers belongs to a running daemon (a custom
 * `admin.listen` path outside the locked data directory may be shared by mistake) and is left alone.
 */
async function clearStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return;
    throw e;
  }
  if (!isSocket) throw new ListenError(`cannot listen on unix:${path}: the path exists and is not a socket`);
  const answers = await new Promise<boolean>((done) => {
    const s = connect(path, () => {
      s.destroy();
      done(true);
    });
    s.on('error', () => done(false));
  });
  if (answers) throw new ListenError(`cannot listen on unix:${path}: another process serves that socket`);
  await rm(path, { force: true });
}

async function listenUnix(server: Server, path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new ListenError(`cannot listen on unix:${path}: a unix socket path has at most ${MAX_SOCKET_PATH} bytes; set admin.listen to a shorter unix:/PATH`);
  }
  await clearStaleSocket(path);
  await new Promise<void>((ok, fail) => {
    const onError = (e: NodeJS.ErrnoException) =>
      fail(new ListenError(`cannot listen on unix:${path}: ${e.code === 'EACCES' ? 'permission denied' : e.message}`));
    server.once('error', onError);
    // The socket is bound synchronously inside listen(): under this umask it is created 0600, so no other user can
    // connect in the moment before the chmod below.
    const umask = process.umask(0o177);
    try {
      server.listen(path, () => {
        server.off('error', onError);
        ok();
      });
    } finally {
      process.umask(umask);
    }
  });
  await chmod(path, 0o600);
}

/**
 * Serves the admin API on its own listener: by default the unix socket DATA/admin.sock (mode 0600: the daemon's
 * user and root), else `admin.listen` — another socket, or HOST:PORT, where a bearer token is always required
 * (`admin.token`, or a random one for this run). The CLI finds it, and the token, in DATA/daemon.json.
 */
export async function serveAdmin(config: Config, layout: Layout, admin: AdminApi, log: Logger): Promise<AdminServer> {
  const spec = config.admin.listen || `unix:${join(layout.root, 'admin.sock')}`;
  const socketPath = spec.startsWith('unix:') ? spec.slice('unix:'.length) : undefined;
  const token = config.admin.token || (socketPath ? undefined : randomBytes(32).toString('base64url'));
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, createAdminApp(admin, log, token));
  let url: string;
  if (socketPath) {
    await listenUnix(server, socketPath);
    url = `unix:${socketPath}`;
  } else {
    const { host, port } = splitListen(spec);
    const addr = await listen(server, host, port);
    url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  }
  return {
    url,
    token,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
