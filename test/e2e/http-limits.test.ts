/**
 * Timeouts, the connection cap and strict framing on the real daemon with two worker processes, on raw sockets.
 * The timeouts are configured short so that the waits stay short; nothing asserts how fast anything is.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, makeTempDir, startDaemon, type Daemon } from '../helpers/daemon.js';
import { MT, RegistryClient, expectStatus, imageManifest, sha256 } from '../helpers/registry-client.js';
import { listDir } from '../helpers/store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A raw connection to the daemon that records what it received and whether the daemon closed it. */
class Conn {
  readonly sock: Socket;
  received = '';
  closed = false;
  constructor(port: number) {
    this.sock = connect(port, '127.0.0.1');
    this.sock.on('data', (c: Buffer) => (this.received += c.toString('latin1')));
    this.sock.on('close', () => (this.closed = true));
    this.sock.on('error', () => {});
  }
  static async open(port: number): Promise<Conn> {
    const c = new Conn(port);
    await new Promise<void>((ok, fail) => {
      c.sock.once('connect', ok);
      c.sock.once('error', fail);
    });
    return c;
  }
  waitClosed(timeoutMs?: number): Promise<void> {
    return until('the daemon to close the connection', () => this.closed, timeoutMs);
  }
  status(): number | undefined {
    const m = /^HTTP\/1\.1 (\d{3})/.exec(this.received);
    return m ? Number(m[1]) : undefined;
  }
  header(name: string): string | undefined {
    const head = this.received.slice(0, this.received.indexOf('\r\n\r\n'));
    const line = head.split('\r\n').find((l) => l.toLowerCase().startsWith(`${name}:`));
    return line?.slice(name.length + 1).trim();
  }
  errorCode(): string | undefined {
    const body = this.received.slice(this.received.indexOf('\r\n\r\n') + 4);
    return (JSON.parse(body) as { errors: Array<{ code: string }> }).errors[0]?.code;
  }
}

/** Sends raw bytes on a fresh connection and waits until the daemon closes it. */
async function rawExchange(port: number, bytes: string): Promise<Conn> {
  const c = await Conn.open(port);
  c.sock.write(bytes);
  await c.waitClosed();
  return c;
}

/** Every file under the parts of the data dir a request can write (blobs, sessions, repositories, temp files). */
async function written(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of await listDir(join(dataDir, rel))) {
      const p = `${rel}/${name}`;
      const sub = await listDir(join(dataDir, p)).catch(() => undefined);
      if (sub === undefined) out.push(p);
      else await walk(p);
    }
  };
  for (const top of ['blobs', 'uploads', 'repositories', 'tmp']) await walk(top);
  return out.sort();
}

async function configFile(http: Record<string, string | number>): Promise<string> {
  const path = join(await makeTempDir('buildcached-http-cfg-'), 'config.yaml');
  await writeFile(path, ['http:', ...Object.entries(http).map(([k, v]) => `  ${k}: ${v}`), ''].join('\n'));
  return path;
}

async function pushImage(c: RegistryClient, repo: string, tag: string): Promise<string> {
  const config = randomBytes(64);
  const layer = randomBytes(1000);
  for (const b of [config, layer]) await c.pushBlob(repo, b, 'monolithic-post');
  const body = imageManifest(config, [layer]);
  expectStatus(await c.putManifest(repo, tag, body, MT.OCI_MANIFEST), 201, 'manifest PUT');
  return sha256(body);
}

afterAll(cleanup);

describe('timeouts, two workers', () => {
  let daemon: Daemon;
  let client: RegistryClient;
  beforeAll(async () => {
    const config = await configFile({ headersTimeout: '1s', idleTimeout: '2s', keepAliveTimeout: '500ms' });
    daemon = await startDaemon({ args: ['--workers', '2', '--config', config] });
    expect(daemon.workerCount).toBe(2);
    client = new RegistryClient(daemon.url);
  });

  it('closes connections that send nothing, and idle keep-alive connections after their response', async () => {
    // Several of each, so that both workers get some.
    const silent = await Promise.all(Array.from({ length: 4 }, () => Conn.open(daemon.port)));
    const kept = await Promise.all(Array.from({ length: 4 }, () => Conn.open(daemon.port)));
    for (const c of kept) c.sock.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    for (const c of [...silent, ...kept]) await c.waitClosed();
    for (const c of silent) {
      expect(c.status()).toBe(408);
      expect(c.errorCode()).toBe('UNSUPPORTED');
    }
    for (const c of kept) {
      expect(c.status()).toBe(200);
      expect(c.received.match(/HTTP\/1\.1/g)).toHaveLength(1);
    }
  });

  it('cuts bodies that stop arriving and keeps nothing of them', async () => {
    const sessions = await Promise.all(Array.from({ length: 4 }, () => client.startUpload('org/app')));
    const before = await written(daemon.dataDir);
    const stalled = await Promise.all(
      sessions.map(async (loc, i) => {
        const c = await Conn.open(daemon.port);
        const path = new URL(loc).pathname;
        // Two stalled PATCHes, two stalled PUT ?digest= (BuildKit's monolithic upload), each part-way.
        const head =
          i % 2 === 0
            ? `PATCH ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n`
            : `PUT ${path}?digest=${sha256(randomBytes(8))} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n`;
        c.sock.write(head);
        c.sock.write(randomBytes(50_000));
        return c;
      }),
    );
    for (const c of stalled) await c.waitClosed();
    for (const c of stalled) expect(c.received).toBe('');
    // Whatever the stalled requests wrote is gone again: every session is back to empty, no blob, no temp file.
    await until('the partial writes to be removed', async () => JSON.stringify(await written(daemon.dataDir)) === JSON.stringify(before));
    for (const loc of sessions) {
      const s = await client.req('GET', new URL(loc).pathname);
      expectStatus(s, 204, 'session status');
      expect(s.headers.range).toBe('0-0');
    }
  });

  it('does not cut a body that keeps moving, though it takes several idle timeouts', async () => {
    const data = randomBytes(12);
    const digest = sha256(data);
    const loc = await client.startUpload('org/app');
    const c = await Conn.open(daemon.port);
    c.sock.write(`PUT ${new URL(loc).pathname}?digest=${digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${data.length}\r\n\r\n`);
    for (let i = 0; i < data.length; i++) {
      await sleep(500);
      expect(c.closed).toBe(false);
      c.sock.write(data.subarray(i, i + 1));
    }
    await until('the response', () => c.received.includes('\r\n\r\n'));
    expect(c.status()).toBe(201);
    expect(c.header('docker-content-digest')).toBe(digest);
    c.sock.destroy();
    const got = await client.getBlobDigest('org/app', digest);
    expect(got.digest).toBe(digest);
  });
});

describe('connection cap and strict framing, two workers', () => {
  let daemon: Daemon;
  let client: RegistryClient;
  let tagged: string;
  beforeAll(async () => {
    // Two connections per worker.
    const config = await configFile({ maxConnections: 4 });
    daemon = await startDaemon({ args: ['--workers', '2', '--config', config] });
    expect(daemon.workerCount).toBe(2);
    client = new RegistryClient(daemon.url);
    tagged = await pushImage(client, 'org/app', 'main');
  });

  /** The tag still resolves, on fresh connections to whichever workers answer. */
  async function expectTagKept(): Promise<void> {
    for (let i = 0; i < 6; i++) {
      const res = await client.getManifest('org/app', 'main');
      expectStatus(res, 200, 'GET the tag');
      expect(res.headers['docker-content-digest']).toBe(tagged);
    }
  }

  it('refuses a DELETE of a tag with Transfer-Encoding: xchunked before it runs', async () => {
    for (let i = 0; i < 6; i++) {
      const c = await rawExchange(daemon.port, 'DELETE /v2/org/app/manifests/main HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n');
      expect(c.status()).toBe(400);
      expect(c.header('connection')).toBe('close');
      expect(c.errorCode()).toBe('UNSUPPORTED');
    }
    await expectTagKept();
  });

  it('refuses a session POST with Transfer-Encoding: identity and leaves no session behind', async () => {
    const before = await written(daemon.dataDir);
    for (let i = 0; i < 6; i++) {
      const c = await rawExchange(daemon.port, 'POST /v2/org/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\n\r\n');
      expect(c.status()).toBe(400);
      expect(c.errorCode()).toBe('UNSUPPORTED');
    }
    expect(await listDir(join(daemon.dataDir, 'uploads'))).toEqual([]);
    expect(await written(daemon.dataDir)).toEqual(before);
  });

  it('refuses every other uncertain framing with nothing written', async () => {
    const before = await written(daemon.dataDir);
    const framings = [
      'Transfer-Encoding: gzip, chunked\r\n',
      'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n',
      'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n',
      'Content-Length: 5\r\nContent-Length: 6\r\n',
      'Content-Length: +5\r\n',
      'Content-Length: 99999999999999999\r\n',
    ];
    for (const f of framings) {
      for (const target of ['DELETE /v2/org/app/manifests/main', 'POST /v2/org/app/blobs/uploads/']) {
        const c = await rawExchange(daemon.port, `${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${f}\r\n5\r\nhello\r\n0\r\n\r\n`);
        expect(c.status(), `${target} with ${JSON.stringify(f)}`).toBe(400);
        expect(['UNSUPPORTED', 'SIZE_INVALID']).toContain(c.errorCode());
      }
    }
    expect(await written(daemon.dataDir)).toEqual(before);
    await expectTagKept();
  });

  it('answers parser-level refusals with an OCI body', async () => {
    const big = await rawExchange(daemon.port, `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.status()).toBe(431);
    expect(big.errorCode()).toBe('UNSUPPORTED');
    const line = await rawExchange(daemon.port, 'GET /v2/ HTTP/7.0\r\nHost: 127.0.0.1\r\n\r\n');
    expect(line.status()).toBe(400);
    expect(line.errorCode()).toBe('UNSUPPORTED');
    const expect417 = await rawExchange(daemon.port, 'DELETE /v2/org/app/manifests/main HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: later\r\n\r\n');
    expect(expect417.status()).toBe(417);
    expect(expect417.errorCode()).toBe('UNSUPPORTED');
    await expectTagKept();
  });

  it('holds the daemon to maxConnections over both workers, and serves again once connections go', async () => {
    const conns: Conn[] = [];
    for (let i = 0; i < 8; i++) conns.push(await Conn.open(daemon.port));
    // A refused connection is answered at once; an accepted one waits for its request.
    await sleep(1000);
    const refused = conns.filter((c) => c.closed);
    const held = conns.filter((c) => !c.closed);
    expect(held.length).toBeGreaterThanOrEqual(2);
    expect(held.length).toBeLessThanOrEqual(4);
    expect(refused.length).toBe(8 - held.length);
    for (const c of refused) {
      expect(c.status()).toBe(429);
      expect(c.header('retry-after')).toBe('1');
      expect(c.errorCode()).toBe('TOOMANYREQUESTS');
    }
    for (const c of held) c.sock.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    for (const c of held) await c.waitClosed();
    for (const c of held) expect(c.status()).toBe(200);
    await expectTagKept();
  });
});
