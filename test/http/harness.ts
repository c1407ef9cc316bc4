/**
 * In-process test registry for the HTTP suites: the real express app over a real store in a temp dir, served by
 * the daemon's own HTTP server (timeouts, framing checks, connection cap) on 127.0.0.1 on an ephemeral port
 * (supertest talks to the URL; raw `net` sockets can too).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Stream } from 'node:stream';
import { connect } from 'node:net';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request, { type Test } from 'supertest';
import { expect } from 'vitest';
import { loadConfig, mergeLayers } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { configuredApp } from '../../src/http/server.js';
import { localGuard } from '../../src/auth/login-limiter.js';
import { loginLimits } from '../../src/auth/setup.js';
import { createHttpServer } from '../../src/http/http-server.js';
import { createLogger } from '../../src/observability/logger.js';
import type { Registry } from '../../src/registry/registry.js';
import { openStore, type OpenedStore } from '../../src/store.js';
import { singleProcessMetrics } from '../../src/observability/store-metrics.js';
import { ownerAnalytics } from '../../src/process/single.js';

import { DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../src/registry/media-types.js';

export { DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST };
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const CACHE_CONFIG = 'application/vnd.buildkit.cacheconfig.v0';

export interface TestRegistry {
  url: string;
  dataDir: string;
  config: Config;
  registry: Registry;
  /** The stores behind it, for tests that drive background work (expiry, eviction) by hand. */
  store: OpenedStore;
  server: Server;
  /** A supertest client for this registry. */
  http(): ReturnType<typeof request>;
  /** Stops the server and removes the data dir (unless `keepDir`, to reopen it as a restarted daemon would). */
  close(opts?: { keepDir?: boolean }): Promise<void>;
}

/** Starts a registry on a fresh temp data dir; `layer` overrides config keys (e.g. registry.maxManifestBytes). */
export async function startRegistry(layer: Record<string, unknown> = {}, opts: { dataDir?: string; metrics?: boolean } = {}): Promise<TestRegistry> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'buildcached-http-')));
  try {
    const config = await loadConfig({
      env: {},
      overrides: mergeLayers({ log: { level: 'silent' } }, layer, { storage: { dir: dataDir } }),
    });
    const log = createLogger('silent');
    const store = await openStore(config, log);
    const registry = store.registry;
    const app = await configuredApp(config, registry, log, localGuard(loginLimits(config)), {
      ...(opts.metrics ? { metrics: singleProcessMetrics(store, config.metrics.topReferences) } : {}),
      ...ownerAnalytics(store),
    });
    const server = createHttpServer(app, config.http);
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(0, '127.0.0.1', () => ok());
    });
    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}`;
    return {
      url,
      dataDir,
      config,
      registry,
      store,
      server,
      http: () => request(url),
      async close(closeOpts = {}) {
        server.closeAllConnections();
        await new Promise<void>((done) => server.close(() => done()));
        if (!closeOpts.keepDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
      },
    };
  } catch (e) {
    await rm(dataDir, { recursive: true, force: true });
    throw e;
  }
}

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function sha512(data: Uint8Array | string): string {
  return `sha512:${createHash('sha512').update(data).digest('hex')}`;
}

/** Random content with its digest. */
export function blob(size = 1000): { data: Buffer; digest: string } {
  const data = randomBytes(size);
  return { data, digest: sha256(data) };
}

/** Pushes a blob the BuildKit way (POST, then one PUT with the whole body) and checks the 201. */
export async function pushBlob(reg: TestRegistry, name: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const start = await reg.http().post(`/v2/${name}/blobs/uploads/`);
  expect(start.status).toBe(202);
  const put = await reg
    .http()
    .put(`${start.headers.location as string}?digest=${digest}`)
    .set('Content-Type', 'application/octet-stream')
    .send(data);
  expect(put.status, JSON.stringify(put.body)).toBe(201);
  expect(put.headers['docker-content-digest']).toBe(digest);
  return digest;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  [k: string]: unknown;
}

/** Pushes random blobs and returns their descriptors. */
export async function pushBlobs(reg: TestRegistry, name: string, count: number, mediaType = OCI_LAYER): Promise<Descriptor[]> {
  const out: Descriptor[] = [];
  for (let i = 0; i < count; i++) {
    const b = blob(100 + i);
    await pushBlob(reg, name, b.data);
    out.push({ mediaType, digest: b.digest, size: b.data.length });
  }
  return out;
}

/** Every file under the data dir with its size: equal snapshots mean nothing was written or removed. */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(p);
      else out.push(`${p} ${(await stat(join(dir, p))).size}`);
    }
  };
  await walk('');
  return out.sort();
}

/** The files under blobs/ (committed blobs), as digests. */
export async function storedBlobDigests(dataDir: string): Promise<string[]> {
  return (await snapshot(join(dataDir, 'blobs'))).map((line) => {
    const [algorithm, , hex] = line.split(' ')[0]!.split('/');
    return `${algorithm}:${hex}`;
  });
}

/** Asserts an OCI error body: `{"errors":[{code,message,detail}]}` with the given status and code. */
export function expectOciError(res: { status: number; body: unknown; headers: Record<string, string> }, status: number, code: string | string[]): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  // Binary-parsed responses (manifest GETs) hold the error JSON as a Buffer.
  const raw = Buffer.isBuffer(res.body) ? (JSON.parse(res.body.toString('utf8')) as unknown) : res.body;
  const body = raw as { errors?: Array<{ code: string; message: string; detail?: unknown }> };
  expect(Array.isArray(body.errors)).toBe(true);
  expect(body.errors!.length).toBeGreaterThan(0);
  const e = body.errors![0]!;
  if (Array.isArray(code)) expect(code).toContain(e.code);
  else expect(e.code).toBe(code);
  expect(typeof e.message).toBe('string');
  expect(e).toHaveProperty('detail');
}

/** The daemon still answers the base endpoint. */
export async function expectServing(reg: TestRegistry): Promise<void> {
  const res = await reg.http().get('/v2/');
  expect(res.status).toBe(200);
  expect(res.body).toEqual({});
}

export interface RawResponse {
  /** Raw bytes the server sent before closing (may be empty). */
  text: string;
  status: number | undefined;
  /** Lower-cased header names of the first response. */
  headers: Record<string, string>;
  /** The first response's body (by Content-Length), parsed as JSON when it is JSON. */
  body: unknown;
  /** The server closed (or reset) the connection before `waitMs` passed. */
  closed: boolean;
}

function parseRaw(text: string, closed: boolean): RawResponse {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  const end = text.indexOf('\r\n\r\n');
  const headers: Record<string, string> = {};
  if (end >= 0) {
    for (const line of text.slice(0, end).split('\r\n').slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
  }
  let body: unknown = undefined;
  if (end >= 0) {
    const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : undefined;
    const raw = text.slice(end + 4, len === undefined ? undefined : end + 4 + len);
    try {
      body = /json/.test(headers['content-type'] ?? '') ? (JSON.parse(raw) as unknown) : raw;
    } catch {
      body = raw;
    }
  }
  return { text, status: m ? Number(m[1]) : undefined, headers, body, closed };
}

/**
 * Sends raw bytes on a fresh TCP connection to the registry and collects the response until the server closes or
 * `waitMs` passes. For requests supertest cannot form (NUL in the path, lying Content-Length).
 */
export function rawRequest(reg: TestRegistry, bytes: Buffer | string, waitMs = 2000): Promise<RawResponse> {
  const { port } = reg.server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = (closed: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(parseRaw(Buffer.concat(chunks).toString('latin1'), closed));
    };
    const timer = setTimeout(() => done(false), waitMs);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => done(true));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // The server may reset a connection it refused; whatever it sent before that still counts.
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') return done(true);
      clearTimeout(timer);
      reject(e);
    });
    sock.write(bytes);
  });
}

/** A request with exactly this method and request-target on the wire (no client-side normalisation). */
export function rawSimple(reg: TestRegistry, method: string, target: string, headers: Record<string, string> = {}, body = ''): Promise<RawResponse> {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const length = body || method === 'PUT' || method === 'POST' || method === 'PATCH' ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : '';
  return rawRequest(reg, `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${extra}${length}\r\n${body}`);
}

/** Polls `check` until it returns true (or throws after `timeoutMs`). */
export async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Builds an OCI image manifest over the given config and layers. */
export function imageManifest(config: Descriptor, layers: Descriptor[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers, ...extra }));
}

/** Pushes a manifest and checks the 201; returns its digest. */
export async function putManifest(reg: TestRegistry, name: string, ref: string, body: Buffer, mediaType: string): Promise<string> {
  const res = await sendBytes(reg.http().put(`/v2/${name}/manifests/${ref}`).set('Content-Type', mediaType), body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const digest = sha256(body);
  expect(res.headers['docker-content-digest']).toBe(digest);
  expect(res.headers.location).toBe(`/v2/${name}/manifests/${digest}`);
  return digest;
}

/** Pushes a small random config + layers and an image manifest referencing them under `ref`. */
export async function pushImage(reg: TestRegistry, name: string, ref: string, extra: Record<string, unknown> = {}): Promise<{ digest: string; body: Buffer }> {
  const [config] = await pushBlobs(reg, name, 1, OCI_CONFIG);
  const layers = await pushBlobs(reg, name, 2);
  const body = imageManifest(config!, layers, extra);
  return { digest: await putManifest(reg, name, ref, body, OCI_MANIFEST), body };
}

/**
 * Sends exactly these bytes. superagent JSON-serializes a Buffer body when the Content-Type is JSON-like
 * (`+json`), which would turn a manifest into `{"type":"Buffer",...}`.
 */
export function sendBytes(req: Test, body: Buffer): Test {
  return req.serialize((b: unknown) => b as string).send(body);
}

/** supertest's buffered body for binary responses. */
export const binaryParser: Parameters<Test['parse']>[0] = (res: Stream, cb: (err: Error | null, body: Buffer) => void) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
  res.on('error', (e: Error) => cb(e, Buffer.alloc(0)));
};
