/**
 * The server's limits, on raw sockets: headers, idle and keep-alive timeouts (short here, so that the waits stay
 * short; nothing asserts how fast), the connection cap, and the bound on manifest bodies held in memory.
 */
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_MANIFEST,
  blob,
  expectServing,
  imageManifest,
  pushBlob,
  pushBlobs,
  pushImage,
  putManifest,
  rawRequest,
  rawSimple,
  sha256,
  snapshot,
  startRegistry,
  waitFor,
  type TestRegistry,
} from './harness.js';

/** A raw connection that records what it received and whether the server closed it. */
interface Conn {
  sock: Socket;
  text(): string;
  closed(): boolean;
  /** Resolves once the server has closed the connection (rejects after `ms`). */
  waitClosed(ms?: number): Promise<void>;
}

function open(reg: TestRegistry): Promise<Conn> {
  const { port } = reg.server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let received = '';
    let closed = false;
    sock.on('data', (c: Buffer) => (received += c.toString('latin1')));
    sock.on('close', () => (closed = true));
    sock.on('error', () => {});
    sock.once('connect', () =>
      resolve({
        sock,
        text: () => received,
        closed: () => closed,
        waitClosed: (ms = 15_000) => waitFor(async () => closed, ms, 'the server to close the connection'),
      }),
    );
    sock.once('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function codeIn(text: string): string | undefined {
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  return (JSON.parse(body) as { errors: Array<{ code: string }> }).errors[0]?.code;
}

describe('timeouts', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ http: { headersTimeout: '1s', idleTimeout: '2s', keepAliveTimeout: '300ms' } });
  });
  afterAll(async () => {
    await reg.close();
  });

  it('closes a connection that never sends a request, with 408 and an OCI body', async () => {
    const c = await open(reg);
    await c.waitClosed();
    expect(c.text()).toMatch(/^HTTP\/1\.1 408 /);
    expect(codeIn(c.text())).toBe('UNSUPPORTED');
  });

  it('closes a connection whose headers trickle in (slowloris), though bytes keep arriving', async () => {
    const c = await open(reg);
    c.sock.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const drip = setInterval(() => c.sock.write('X-Slow: 1\r\n'), 100);
    try {
      await c.waitClosed();
    } finally {
      clearInterval(drip);
    }
    expect(c.text()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('closes an idle keep-alive connection after its response', async () => {
    const c = await open(reg);
    c.sock.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await c.waitClosed();
    expect(c.text()).toMatch(/^HTTP\/1\.1 200 /);
    expect(c.text().match(/HTTP\/1\.1/g)).toHaveLength(1);
  });

  it('cuts a PATCH whose body stops arriving, and the session keeps none of it', async () => {
    const start = await rawSimple(reg, 'POST', '/v2/org/app/blobs/uploads/');
    const location = start.headers.location!;
    const c = await open(reg);
    c.sock.write(`PATCH ${location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
    await c.waitClosed();
    expect(c.text()).toBe('');
    await waitFor(async () => (await rawSimple(reg, 'GET', location)).headers.range === '0-0', 5000, 'the partial chunk to be removed');
  });

  it('cuts a monolithic blob upload whose body stops arriving: no blob, no temp file', async () => {
    const b = blob(100_000);
    const before = await snapshot(reg.dataDir);
    const c = await open(reg);
    c.sock.write(`POST /v2/org/app/blobs/uploads/?digest=${b.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${b.data.length}\r\n\r\n`);
    c.sock.write(b.data.subarray(0, 1000));
    await c.waitClosed();
    await waitFor(async () => JSON.stringify(await snapshot(reg.dataDir)) === JSON.stringify(before), 5000, 'the temp file to go');
    expect((await rawSimple(reg, 'HEAD', `/v2/org/app/blobs/${b.digest}`)).status).toBe(404);
  });

  it('does not cut a body that keeps moving, however long it takes', async () => {
    const b = blob(12);
    const c = await open(reg);
    c.sock.write(`POST /v2/org/app/blobs/uploads/?digest=${b.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${b.data.length}\r\n\r\n`);
    // One byte every 500 ms: the whole body takes three idle timeouts, no gap is one.
    for (let i = 0; i < b.data.length; i++) {
      await sleep(500);
      expect(c.closed()).toBe(false);
      c.sock.write(b.data.subarray(i, i + 1));
    }
    await waitFor(async () => c.text().includes('\r\n\r\n'), 5000, 'the response');
    expect(c.text()).toMatch(/^HTTP\/1\.1 201 /);
    expect((await rawSimple(reg, 'HEAD', `/v2/org/app/blobs/${b.digest}`)).status).toBe(200);
    c.sock.destroy();
  });

  it('cuts a response the client stops reading', async () => {
    // Larger than the socket buffers on both ends can hold: Linux lets a receive buffer grow to tcp_rmem's maximum
    // (32 MiB on this project's CI machines) even while the client reads nothing, and a blob that fits there
    // arrives whole before the server's idle timeout can cut it.
    const big = blob(80 * 1024 * 1024);
    await pushBlob(reg, 'org/app', big.data);
    const c = await open(reg);
    let received = 0;
    c.sock.removeAllListeners('data');
    // Stop reading at the first bytes: the rest waits in the server, beyond what socket buffers hold.
    c.sock.on('data', (d: Buffer) => {
      if (received === 0) c.sock.pause();
      received += d.length;
    });
    c.sock.write(`GET /v2/org/app/blobs/${big.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    await waitFor(async () => received > 0, 5000, 'the first bytes');
    await sleep(4000);
    c.sock.resume();
    await c.waitClosed();
    expect(received).toBeLessThan(big.data.length);
    await expectServing(reg);
  });
});

describe('connection cap', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ http: { maxConnections: 2 } });
    await pushImage(reg, 'org/app', 'latest');
  });
  afterAll(async () => {
    await reg.close();
  });

  const connections = () => new Promise<number>((ok, fail) => reg.server.getConnections((e, n) => (e ? fail(e) : ok(n))));

  it('answers a connection over the cap 429 and closes it without running its request', async () => {
    const held = [await open(reg), await open(reg)];
    await waitFor(async () => (await connections()) === 2, 5000, 'two open connections');
    const refused = await rawRequest(reg, 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(refused.status, refused.text).toBe(429);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.headers.connection).toBe('close');
    expect(codeIn(refused.text)).toBe('TOOMANYREQUESTS');
    expect(refused.closed).toBe(true);

    // The held connections are served; once one goes, a new connection is too.
    held[0]!.sock.write('GET /v2/org/app/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    await held[0]!.waitClosed();
    expect(held[0]!.text()).toMatch(/^HTTP\/1\.1 200 /);
    await waitFor(async () => (await connections()) === 1, 5000, 'the connection to go');
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest')).status).toBe(200);
    held[1]!.sock.destroy();
  });
});

describe('manifest bodies held in memory', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ registry: { maxManifestBytes: '64KiB' }, http: { maxBufferedManifestBytes: '100KiB' } });
  });
  afterAll(async () => {
    await reg.close();
  });

  const put = (ref: string, headers: string) =>
    `PUT /v2/org/app/manifests/${ref} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${OCI_MANIFEST}\r\n${headers}\r\n`;

  it('refuses a manifest PUT with 429 while others hold the budget, and takes it again once they are done', async () => {
    const before = await snapshot(reg.dataDir);
    // A slow PUT holds 60 000 of the 102 400 bytes for as long as its body takes.
    const slow = await open(reg);
    slow.sock.write(`${put('slow', 'Content-Length: 60000\r\n')}${' '.repeat(1000)}`);
    await sleep(100);

    const declared = await rawRequest(reg, put('declared', 'Content-Length: 60000\r\nConnection: close\r\n'), 1000);
    expect(declared.status, declared.text).toBe(429);
    expect(declared.headers['retry-after']).toBe('1');
    expect(codeIn(declared.text)).toBe('TOOMANYREQUESTS');

    // Without Content-Length the bytes are taken as they arrive: refused once they pass what is left.
    const chunk = `${(50_000).toString(16)}\r\n${' '.repeat(50_000)}\r\n0\r\n\r\n`;
    const chunked = await rawRequest(reg, `${put('chunked', 'Transfer-Encoding: chunked\r\nConnection: close\r\n')}${chunk}`);
    expect(chunked.status, chunked.text).toBe(429);
    expect(codeIn(chunked.text)).toBe('TOOMANYREQUESTS');

    slow.sock.end(' '.repeat(59_000));
    await slow.waitClosed().catch(() => undefined);
    await waitFor(async () => slow.text().includes('\r\n\r\n'), 5000, 'the slow PUT to be answered');
    expect(slow.text()).toMatch(/^HTTP\/1\.1 400 /); // spaces are no manifest
    expect(await snapshot(reg.dataDir)).toEqual(before);

    // Everything was given back: a manifest as large as the limit fits, twice at once.
    const layers = await pushBlobs(reg, 'org/app', 1);
    const [config] = await pushBlobs(reg, 'org/app', 1, 'application/vnd.oci.image.config.v1+json');
    const padded = (n: number) => imageManifest(config!, layers, { annotations: { pad: 'p'.repeat(n) } });
    const size = padded(0).length;
    const a = padded(50_000 - size);
    const b = padded(50_000 - size + 1);
    await Promise.all([putManifest(reg, 'org/app', 'a', a, OCI_MANIFEST), putManifest(reg, 'org/app', 'b', b, OCI_MANIFEST)]);
    expect(sha256(a)).not.toBe(sha256(b));
  });
});
