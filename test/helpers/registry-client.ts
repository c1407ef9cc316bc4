/**
 * A small OCI distribution client over node:http for e2e tests: full control over framing (Content-Length vs
 * chunked), streaming bodies and connection reuse, which fetch hides. Only ever pointed at 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Readable } from 'node:stream';

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export type Body = Buffer | string | Readable | AsyncIterable<Buffer> | undefined;

export interface RequestOptions {
  headers?: Record<string, string | number>;
  body?: Body;
  /** Force chunked transfer-encoding for Buffer bodies (no Content-Length). Streams are always chunked
   *  unless a Content-Length header is given. */
  chunked?: boolean;
  agent?: http.Agent;
  /** When false, the response body is discarded as it streams (large GETs); `sha256` still covers it. */
  keepBody?: boolean;
  /** Connect to this unix socket (the daemon's admin listener) instead of the URL's host and port. */
  socketPath?: string;
}

export interface StreamedResponse extends Response {
  /** sha256 digest (`sha256:hex`) of the response body, computed while it streamed. */
  digest: string;
  length: number;
}

export const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function isReadableLike(b: Body): b is Readable | AsyncIterable<Buffer> {
  return b !== undefined && typeof b !== 'string' && !Buffer.isBuffer(b);
}

/** One HTTP request; resolves with status, headers and body (and its sha256 as it streamed). */
export function request(method: string, url: string, opts: RequestOptions = {}): Promise<StreamedResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    if (!opts.socketPath && u.hostname !== '127.0.0.1') {
      reject(new Error(`refusing to send test traffic to ${u.hostname}: loopback only`));
      return;
    }
    const headers: Record<string, string | number> = { ...(opts.headers ?? {}) };
    const body = opts.body;
    if ((typeof body === 'string' || Buffer.isBuffer(body)) && !opts.chunked && headers['Content-Length'] === undefined) {
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const req = http.request(
      {
        method,
        ...(opts.socketPath ? { socketPath: opts.socketPath } : { hostname: u.hostname, port: u.port }),
        path: u.pathname + u.search,
        headers,
        agent: opts.agent ?? false,
      },
      (res) => {
        const hash = createHash('sha256');
        const chunks: Buffer[] = [];
        let length = 0;
        res.on('data', (c: Buffer) => {
          hash.update(c);
          length += c.length;
          if (opts.keepBody !== false) chunks.push(c);
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            digest: `sha256:${hash.digest('hex')}`,
            length,
          }),
        );
        res.on('error', reject);
        res.on('aborted', () => reject(new Error(`${method} ${url}: response aborted`)));
      },
    );
    req.on('error', reject);
    if (body === undefined) {
      req.end();
    } else if (typeof body === 'string' || Buffer.isBuffer(body)) {
      req.end(body);
    } else if (isReadableLike(body)) {
      void (async () => {
        try {
          for await (const chunk of body) {
            if (!req.write(chunk)) await new Promise<void>((r) => req.once('drain', () => r()));
          }
          req.end();
        } catch (e) {
          req.destroy(e as Error);
        }
      })();
    }
  });
}

/** Throws with the response body when the status is not the expected one. */
export function expectStatus(res: Response, status: number, what: string): void {
  if (res.status !== status) {
    throw new Error(`${what}: expected HTTP ${status}, got ${res.status}: ${res.body.toString('utf8').slice(0, 500)}`);
  }
}

export type PushStyle = 'monolithic-post' | 'post-put' | 'patch-chunks-put' | 'patch-chunked-te-put';

/**
 * Client for one registry: the push styles real clients use, manifests, pulls. Every response is checked.
 */
export class RegistryClient {
  constructor(
    readonly base: string,
    readonly agent?: http.Agent,
  ) {}

  req(method: string, path: string, opts: RequestOptions = {}): Promise<StreamedResponse> {
    return request(method, `${this.base}${path}`, { agent: this.agent, ...opts });
  }

  async headBlob(repo: string, digest: string): Promise<StreamedResponse> {
    return this.req('HEAD', `/v2/${repo}/blobs/${digest}`);
  }

  /** Starts an upload session; returns its absolute URL. */
  async startUpload(repo: string): Promise<string> {
    const res = await this.req('POST', `/v2/${repo}/blobs/uploads/`);
    expectStatus(res, 202, `POST /v2/${repo}/blobs/uploads/`);
    const loc = res.headers.location;
    if (!loc) throw new Error('upload POST answered without Location');
    return new URL(loc, this.base).toString();
  }

  /** Appends `?digest=` (or `&digest=`) to an upload location. */
  static withDigest(location: string, digest: string): string {
    const u = new URL(location);
    u.searchParams.set('digest', digest);
    return u.toString();
  }

  /**
   * Pushes one blob in the given style; resolves with the final response (201 expected).
   * `chunkSize` is used by the PATCH styles.
   */
  async pushBlob(repo: string, data: Buffer, style: PushStyle, chunkSize = 1024 * 1024): Promise<StreamedResponse> {
    const digest = sha256(data);
    let res: StreamedResponse;
    switch (style) {
      case 'monolithic-post':
        res = await this.req('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, {
          body: data,
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        break;
      case 'post-put': {
        const loc = await this.startUpload(repo);
        res = await request('PUT', RegistryClient.withDigest(loc, digest), {
          agent: this.agent,
          body: data,
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        break;
      }
      case 'patch-chunks-put':
      case 'patch-chunked-te-put': {
        let loc = await this.startUpload(repo);
        for (let off = 0; off < data.length; off += chunkSize) {
          const chunk = data.subarray(off, Math.min(data.length, off + chunkSize));
          const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
          if (style === 'patch-chunks-put') headers['Content-Range'] = `${off}-${off + chunk.length - 1}`;
          const p = await request('PATCH', loc, {
            agent: this.agent,
            body: chunk,
            chunked: style === 'patch-chunked-te-put',
            headers,
          });
          expectStatus(p, 202, `PATCH chunk at ${off}`);
          if (p.headers.range !== `0-${off + chunk.length - 1}`) {
            throw new Error(`PATCH at ${off}: Range "${p.headers.range}", expected 0-${off + chunk.length - 1}`);
          }
          if (p.headers.location) loc = new URL(p.headers.location, this.base).toString();
        }
        res = await request('PUT', RegistryClient.withDigest(loc, digest), { agent: this.agent });
        break;
      }
    }
    expectStatus(res, 201, `push ${digest} (${style})`);
    if (res.headers['docker-content-digest'] !== digest) {
      throw new Error(`push ${digest} (${style}): Docker-Content-Digest is "${res.headers['docker-content-digest']}"`);
    }
    return res;
  }

  async putManifest(repo: string, ref: string, body: Buffer | string, mediaType: string): Promise<StreamedResponse> {
    return this.req('PUT', `/v2/${repo}/manifests/${ref}`, { body, headers: { 'Content-Type': mediaType } });
  }

  async getManifest(repo: string, ref: string, accept?: string): Promise<StreamedResponse> {
    return this.req('GET', `/v2/${repo}/manifests/${ref}`, {
      headers: {
        Accept:
          accept ??
          [
            'application/vnd.oci.image.index.v1+json',
            'application/vnd.oci.image.manifest.v1+json',
            'application/vnd.docker.distribution.manifest.list.v2+json',
            'application/vnd.docker.distribution.manifest.v2+json',
          ].join(', '),
      },
    });
  }

  /** GETs a blob without keeping it in memory; returns status and the sha256 of what was received. */
  async getBlobDigest(repo: string, digest: string): Promise<StreamedResponse> {
    return this.req('GET', `/v2/${repo}/blobs/${digest}`, { keepBody: false });
  }
}

export interface StreamingRequest {
  /** Writes one piece of the body, resolving once the socket accepted it (backpressure). */
  write(chunk: Buffer): Promise<void>;
  end(): void;
  /** Resolves with the response, or rejects when the connection failed (e.g. the daemon was killed). */
  response: Promise<StreamedResponse>;
  bytesWritten(): number;
}

/**
 * A request whose body the test writes piece by piece, pausing whenever it likes: a slow CI runner, or an upload
 * that is still in flight when the daemon is killed or told to stop. No Content-Length unless given in `headers`,
 * so the body goes out with chunked transfer-encoding.
 */
export function streamingRequest(method: string, url: string, headers: Record<string, string | number> = {}, agent?: http.Agent): StreamingRequest {
  const u = new URL(url);
  if (u.hostname !== '127.0.0.1') throw new Error(`refusing to send test traffic to ${u.hostname}: loopback only`);
  const req = http.request({ method, hostname: u.hostname, port: u.port, path: u.pathname + u.search, headers, agent: agent ?? false });
  let written = 0;
  let failure: Error | undefined;
  const response = new Promise<StreamedResponse>((resolve, reject) => {
    req.on('error', (e) => {
      failure = e;
      reject(e);
    });
    req.on('response', (res) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (c: Buffer) => {
        hash.update(c);
        chunks.push(c);
        length += c.length;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), digest: `sha256:${hash.digest('hex')}`, length }),
      );
      res.on('error', reject);
    });
  });
  // Callers may never await `response` when they expect the connection to die.
  response.catch(() => undefined);
  return {
    write: (chunk) =>
      new Promise<void>((resolve, reject) => {
        if (failure) return reject(failure);
        written += chunk.length;
        if (req.write(chunk)) return resolve();
        const onDrain = () => {
          req.off('error', onError);
          resolve();
        };
        const onError = (e: Error) => {
          req.off('drain', onDrain);
          reject(e);
        };
        req.once('drain', onDrain);
        req.once('error', onError);
      }),
    end: () => req.end(),
    response,
    bytesWritten: () => written,
  };
}

export const MT = {
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  OCI_LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  BUILDKIT_CACHE_CONFIG: 'application/vnd.buildkit.cacheconfig.v0',
} as const;

export interface PushedManifest {
  repo: string;
  ref: string;
  digest: string;
  bytes: Buffer;
  mediaType: string;
  /** Blobs it references, digest → content. */
  blobs: Map<string, Buffer>;
}

/** An OCI image manifest over already-known blobs (config first). */
export function imageManifest(config: Buffer, layers: Buffer[], annotations: Record<string, string> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.OCI_MANIFEST,
      config: { mediaType: MT.OCI_CONFIG, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: MT.OCI_LAYER_GZIP, digest: sha256(l), size: l.length })),
      ...(Object.keys(annotations).length ? { annotations } : {}),
    }),
  );
}

/**
 * BuildKit's registry cache manifest (mode=max, image-manifest=false): an OCI index whose entries are the layer
 * blobs plus one application/vnd.buildkit.cacheconfig.v0 blob; no platform on any entry.
 */
export function buildkitCacheIndex(layers: Buffer[], cacheConfig: Buffer): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MT.OCI_INDEX,
      manifests: [
        ...layers.map((l, i) => ({
          mediaType: MT.OCI_LAYER_GZIP,
          digest: sha256(l),
          size: l.length,
          annotations: { 'buildkit/createdat': new Date(1_700_000_000_000 + i).toISOString(), 'containerd.io/uncompressed': sha256(`u${i}`) },
        })),
        { mediaType: MT.BUILDKIT_CACHE_CONFIG, digest: sha256(cacheConfig), size: cacheConfig.length },
      ],
    }),
  );
}

/** A small cache-config blob in BuildKit's shape, pointing at the given layers. */
export function buildkitCacheConfig(layers: Buffer[], salt: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      layers: layers.map((l, i) => ({ blob: sha256(l), parent: i - 1 })),
      records: layers.map((_, i) => ({ digest: sha256(`${salt}/record/${i}`), results: [{ layer: i, createdAt: '2026-01-01T00:00:00Z' }] })),
    }),
  );
}
