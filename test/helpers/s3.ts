/**
 * A real S3-compatible server for the tier tests: s3rver in a child process on 127.0.0.1 (an ephemeral port, kept
 * across a restart so that a daemon pointed at it sees an outage and a recovery), and a loopback proxy in front of
 * it that counts requests and can flip a byte of what the store returns. Tracked for cleanup() like daemons.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { REPO_ROOT, makeTempDir, onCleanup, track } from './daemon.js';

// The SDK is pinned to a Node 20 release on purpose; its notice about later releases is noise here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const CHILD = join(REPO_ROOT, 'test', 'helpers', 's3rver-child.cjs');
/** The tests' S3 account: s3rver's built-in one, which the radosgw helper creates too. */
export const S3_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };

export interface S3Server {
  endpoint: string;
  port: number;
  bucket: string;
  stop(): Promise<void>;
  /** Starts it again on the same port and directory (the objects stay). */
  start(): Promise<void>;
  client: S3Client;
  /** The object's bytes, read with the SDK. */
  getObject(key: string): Promise<Buffer | undefined>;
  keys(prefix?: string): Promise<string[]>;
}

async function runChild(dir: string, port: number, bucket: string): Promise<{ proc: ChildProcess; port: number }> {
  const proc = track(spawn(process.execPath, ['--openssl-legacy-provider', CHILD, dir, String(port), bucket], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const bound = await new Promise<number>((resolve, reject) => {
    let out = '';
    proc.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    proc.once('exit', (code) => reject(new Error(`s3rver exited (${code}): ${err}`)));
  });
  return { proc, port: bound };
}

export async function startS3(bucket = 'cache'): Promise<S3Server> {
  const dir = await makeTempDir('buildcached-s3-');
  let child = await runChild(dir, 0, bucket);
  const port = child.port;
  let running = true;
  return storeServer(`http://127.0.0.1:${port}`, port, bucket, {
    stop: async () => {
      if (!running) return;
      running = false;
      const exited = new Promise((r) => child.proc.once('exit', r));
      child.proc.kill('SIGKILL');
      await exited;
    },
    start: async () => {
      if (running) return;
      child = await runChild(dir, port, bucket);
      running = true;
    },
  });
}

/** An S3Server over a store at `endpoint` that `control` stops and starts, with the tests' account. */
export function storeServer(endpoint: string, port: number, bucket: string, control: Pick<S3Server, 'stop' | 'start'>): S3Server {
  const newClient = () => new S3Client({
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ENV.AWS_ACCESS_KEY_ID, secretAccessKey: S3_ENV.AWS_SECRET_ACCESS_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  let client = newClient();
  onCleanup(() => client.destroy());
  return {
    endpoint,
    port,
    bucket,
    get client() {
      return client;
    },
    stop: control.stop,
    start: async () => {
      await control.start();
      // A new client after a restart: none of the old one's keep-alive sockets to the stopped server is reused.
      client.destroy();
      client = newClient();
    },
    getObject: async (key) => {
      try {
        const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        return Buffer.from(await r.Body!.transformToByteArray());
      } catch (e) {
        if ((e as { name?: string }).name === 'NoSuchKey') return undefined;
        throw e;
      }
    },
    keys: async (prefix = '') => {
      const out: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) out.push(o.Key!);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out.sort();
    },
  };
}

export interface S3Proxy {
  endpoint: string;
  /** Requests seen, as "METHOD /path" (query strings dropped). */
  requests: string[];
  count(method: string, pathIncludes: string): number;
  /** While on, every GET response body for a path containing `match` has one byte flipped. */
  flip(match: string | undefined): void;
}

/** A loopback proxy in front of `target` that counts requests (s3rver does not tell of reads) and can corrupt. */
export async function startS3Proxy(target: S3Server): Promise<S3Proxy> {
  const requests: string[] = [];
  let flipMatch: string | undefined;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    requests.push(`${req.method} ${path}`);
    const up = http.request({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      const corrupt = req.method === 'GET' && flipMatch !== undefined && path.includes(flipMatch);
      let flipped = false;
      upRes.on('data', (c: Buffer) => {
        if (corrupt && !flipped && c.length > 0) {
          c = Buffer.from(c);
          c[0] = c[0]! ^ 0xff;
          flipped = true;
        }
        res.write(c);
      });
      upRes.on('end', () => res.end());
      upRes.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(() => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  }));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    count: (method, pathIncludes) => requests.filter((r) => r.startsWith(`${method} `) && r.includes(pathIncludes)).length,
    flip: (m) => (flipMatch = m),
  };
}

/** The daemon's config file text for a tier on `endpoint`, plus anything else. */
export function tierConfig(endpoint: string, bucket: string, extra = ''): string {
  return `tier:\n  s3:\n    bucket: ${bucket}\n    prefix: bc\n    endpoint: ${endpoint}\n    uploadConcurrency: 4\n${extra}`;
}
