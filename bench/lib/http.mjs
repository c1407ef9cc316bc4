// A small HTTP/1.1 client on node:http with one keep-alive agent per target. No third-party load tool: the same
// client drives every target, so its own cost is the same for all of them (and is part of the "limit" rows).
import http from 'node:http';
import https from 'node:https';
import { createHash } from 'node:crypto';
import { slices } from './data.mjs';

const IDLE_TIMEOUT_MS = 180_000;

export class Target {
  /**
   * @param {string} name  short name used in the tables (buildcached, distribution, limit)
   * @param {string} url   base URL, e.g. http://127.0.0.1:41234 (https: with `ca`)
   * @param {{headers?: object, ca?: Buffer, localAddress?: string}} [opts]
   */
  constructor(name, url, { headers = {}, ca, localAddress } = {}) {
    this.name = name;
    this.url = url;
    const u = new URL(url);
    this.host = u.hostname;
    this.port = Number(u.port);
    this.tls = u.protocol === 'https:';
    /** Sent with every request (e.g. Authorization). */
    this.headers = headers;
    this.ca = ca;
    const agentOptions = { keepAlive: true, maxSockets: 256, maxFreeSockets: 256, ...(localAddress ? { localAddress } : {}) };
    this.agent = this.tls ? new https.Agent({ ...agentOptions, ca, servername: 'localhost' }) : new http.Agent(agentOptions);
  }

  /** Path (with query) of a URL the server returned, which may be absolute (distribution) or relative (buildcached). */
  pathOf(location) {
    const u = new URL(location, this.url);
    return u.pathname + u.search;
  }

  /** The same target, reached from another loopback address (127.0.0.0/8): a CI job on a machine of its own. */
  from(localAddress) {
    return new Target(this.name, this.url, { headers: this.headers, ca: this.ca, localAddress });
  }

  close() {
    this.agent.destroy();
  }
}

function waitDrain(req) {
  return new Promise((resolve) => {
    const done = () => {
      req.off('drain', done).off('close', done);
      resolve();
    };
    req.once('drain', done).once('close', done);
  });
}

async function writeBody(req, body) {
  for (const s of slices(body.spec, body.start ?? 0, body.end ?? body.spec.size)) {
    if (req.destroyed) return;
    if (!req.write(s)) await waitDrain(req);
  }
  if (!req.destroyed) req.end();
}

/**
 * Sends one request.
 * @param {Target} target
 * @param {{method: string, path: string, headers?: object, body?: Buffer | {spec: object, start?: number, end?: number},
 *          sink?: 'none' | 'collect' | 'count' | 'hash'}} opts
 *   sink: what to do with the response body: discard it, collect it in memory, count it (and keep its first 32 bytes),
 *   or count and sha256 it.
 * @returns {Promise<{status: number, headers: object, bytes: number, body?: Buffer, first?: Buffer, digest?: string}>}
 */
export function send(target, opts) {
  const { method, path, body, sink = 'none' } = opts;
  const headers = { ...target.headers, ...opts.headers };
  if (Buffer.isBuffer(body)) headers['content-length'] = String(body.length);
  else if (body) headers['content-length'] = String((body.end ?? body.spec.size) - (body.start ?? 0));
  else if (method === 'PUT' || method === 'POST' || method === 'PATCH') headers['content-length'] = '0';
  return new Promise((resolve, reject) => {
    const req = (target.tls ? https : http).request({ host: target.host, port: target.port, method, path, headers, agent: target.agent });
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no activity for ${IDLE_TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.on('response', (res) => {
      let bytes = 0;
      const chunks = [];
      let first;
      const hash = sink === 'hash' ? createHash('sha256') : undefined;
      res.on('data', (c) => {
        if (bytes === 0 && sink !== 'none') first = c.subarray(0, 32);
        else if (first && first.length < 32) first = Buffer.concat([first, c]).subarray(0, 32);
        bytes += c.length;
        if (sink === 'collect') chunks.push(c);
        else if (hash) hash.update(c);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`${method} ${path}: response aborted after ${bytes} bytes`)));
      res.on('end', () =>
        resolve({
          status: res.statusCode,
          headers: res.headers,
          bytes,
          body: sink === 'collect' ? Buffer.concat(chunks) : undefined,
          first,
          digest: hash ? `sha256:${hash.digest('hex')}` : undefined,
        }),
      );
    });
    if (Buffer.isBuffer(body)) req.end(body);
    else if (body) writeBody(req, body).catch((e) => req.destroy(e));
    else req.end();
  });
}

/** An error that carries the registry's answer, so reports can show the OCI error code. */
export class HttpError extends Error {
  constructor(what, res) {
    let code = '';
    if (res.body && res.body.length) {
      try {
        const j = JSON.parse(res.body.toString('utf8'));
        code = j.errors?.map((e) => e.code + (e.message ? `: ${e.message}` : '')).join('; ') ?? '';
      } catch {
        code = res.body.toString('utf8').slice(0, 200);
      }
    }
    super(`${what}: HTTP ${res.status}${code ? ` ${code}` : ''}`);
    this.status = res.status;
    this.code = code;
  }
}

/** Sends and insists on one of the expected statuses; error bodies are collected for the message. */
export async function expect(target, opts, statuses, what) {
  const res = await send(target, { ...opts, sink: opts.sink ?? 'collect' });
  if (!statuses.includes(res.status)) throw new HttpError(what ?? `${opts.method} ${opts.path.split('?')[0]}`, res);
  return res;
}
