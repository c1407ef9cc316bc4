import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { framingProblem } from './framing.js';
import {
  CONNECT_REFUSAL,
  CONNECTION_REFUSAL,
  EXPECTATION_REFUSAL,
  framingRefusal,
  parserRefusal,
  refusalBytes,
  sendRefusal,
  type Refusal,
} from './oci-errors.js';

export type HttpConfig = Config['http'];

export interface HttpServerOptions {
  /** How many processes serve the port: each holds its share of `maxConnections`. */
  processes?: number;
  log?: Logger;
  /** HTTPS with these certificates (see tls.ts); `requireClientCert`: a client without one signed by `ca` is
   *  refused at the handshake. */
  tls?: { context: SecureContextOptions; requireClientCert: boolean };
}

/** An HTTP or HTTPS listener; both carry the same http.Server behaviour used here. */
export type RegistryServer = Server | HttpsServer;

/** How often a connection over the cap is logged, at most. */
const CAP_LOG_INTERVAL_MS = 10_000;

/**
 * The HTTP server every request goes through, around the app: timeouts, the connection cap, and refusals of
 * what must never reach a handler (uncertain framing, parser errors, `Expect` other than 100-continue), each
 * answered with an OCI error body before the connection is closed.
 */
export function createHttpServer(app: RequestListener, http: HttpConfig, opts: HttpServerOptions = {}): RegistryServer {
  const { log } = opts;
  // Sockets answered with a refusal: the connection closes once it is out, and nothing more on it is served.
  const refused = new WeakSet<Socket>();
  const refuse = (req: IncomingMessage, res: ServerResponse, r: Refusal) => {
    refused.add(req.socket);
    log?.info({ method: req.method, status: r.status, code: r.code, reason: r.message }, 'refused');
    sendRefusal(res, r);
  };

  const handle = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    // A request pipelined behind a refused one: its framing was read under a boundary that cannot be trusted.
    if (refused.has(req.socket)) return;
    const problem = framingProblem(req);
    if (problem) return refuse(req, res, framingRefusal(problem));
    // The socket went quiet for idleTimeout with this request in flight: cut it only when the client is the one
    // not moving (its body stopped arriving while the handler waits for it, or it stopped reading the response),
    // never while a handler is still working or a body is still moving.
    res.on('timeout', (socket: Socket) => {
      if ((!req.complete && req.readableLength === 0) || socket.writableLength > 0) socket.destroy();
    });
    if (expectsContinue) res.writeContinue();
    app(req, res);
  };

  const options = {
    // No whole-request deadline: a multi-GiB layer from a slow CI runner may take as long as it keeps moving.
    requestTimeout: 0,
    headersTimeout: http.headersTimeout,
    keepAliveTimeout: http.keepAliveTimeout,
    // Node checks the headers deadline on this period (30 s by default): keep it a fraction of the deadline.
    connectionsCheckingInterval: http.headersTimeout > 0 ? Math.min(30_000, Math.max(100, Math.floor(http.headersTimeout / 4))) : 30_000,
    insecureHTTPParser: false,
    // Checked with the framing, so that its refusal carries an OCI body too.
    requireHostHeader: false,
  };
  const listener = (req: IncomingMessage, res: ServerResponse) => handle(req, res, false);
  const tls = opts.tls;
  const server: RegistryServer = tls
    ? createHttpsServer(
        {
          ...options,
          ...tls.context,
          requestCert: tls.requireClientCert,
          rejectUnauthorized: tls.requireClientCert,
          // The handshake comes before the headers: a client that stalls in it gets no longer than in them.
          ...(http.headersTimeout > 0 ? { handshakeTimeout: http.headersTimeout } : {}),
        },
        listener,
      )
    : createServer(options, listener);
  server.setTimeout(http.idleTimeout);
  // The framing check runs before 100 Continue, so a refused upload is never invited to send its body.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => handle(req, res, true));
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => refuse(req, res, EXPECTATION_REFUSAL));
  // Without a listener Node drops a CONNECT's socket unanswered.
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {});
    socket.end(refusalBytes(CONNECT_REFUSAL), () => socket.destroy());
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (refused.has(socket)) return; // its refusal is on the way out and closes the connection
    const r = parserRefusal(err);
    // Node's own record of the response being written on this socket: once its headers are out, another
    // response would corrupt it, and closing is the only signal left.
    const current = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!r || !socket.writable || current?.headersSent) return void socket.destroy();
    refused.add(socket);
    log?.info({ status: r.status, code: r.code, reason: r.message }, 'refused');
    socket.end(refusalBytes(r), () => socket.destroy());
  });
  // Over TLS the refusal can only be read once the handshake is done, so the cap counts encrypted connections.
  capConnections(server, tls ? 'secureConnection' : 'connection', Math.max(1, Math.floor(http.maxConnections / (opts.processes ?? 1))), log);
  return server;
}

/**
 * Holds the server to `limit` open connections; one over it is answered 429 and closed without reaching the
 * HTTP parser. Node's own `server.maxConnections` cannot do this in a cluster worker (Node 20): a worker at its
 * limit hands the connection back to the primary, which offers it to the next worker, round and round while
 * the client waits, at full CPU in every process.
 */
function capConnections(server: RegistryServer, event: 'connection' | 'secureConnection', limit: number, log: Logger | undefined): void {
  // The server parses a connection in its own listener of `event`: only accepted ones are passed on to it.
  const parse = server.listeners(event) as Array<(socket: Socket) => void>;
  server.removeAllListeners(event);
  const response = refusalBytes(CONNECTION_REFUSAL);
  let open = 0;
  let refusedSince = 0;
  let loggedAt = 0;
  server.on(event, (socket: Socket) => {
    if (open >= limit) {
      socket.on('error', () => {});
      // Read what the client sends while the answer goes out, so that closing does not reset the connection
      // under it.
      socket.resume();
      socket.end(response, () => socket.destroy());
      refusedSince++;
      if (Date.now() - loggedAt >= CAP_LOG_INTERVAL_MS) {
        log?.warn({ limit, refused: refusedSince }, 'connection cap reached: refusing new connections');
        loggedAt = Date.now();
        refusedSince = 0;
      }
      return;
    }
    open++;
    socket.once('close', () => open--);
    for (const listener of parse) listener.call(server, socket);
  });
}
