import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  binaryParser,
  blob,
  expectOciError,
  expectServing,
  pushBlob,
  rawSimple,
  sha256,
  sha512,
  snapshot,
  startRegistry,
  storedBlobDigests,
  waitFor,
  type TestRegistry,
} from './harness.js';

let reg: TestRegistry;
beforeAll(async () => {
  reg = await startRegistry();
});
afterAll(async () => {
  await reg.close();
});

const NAME = 'org/app';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function start(name = NAME, r = reg): Promise<string> {
  const res = await r.http().post(`/v2/${name}/blobs/uploads/`);
  expect(res.status).toBe(202);
  return res.headers.location as string;
}

async function progress(location: string, r = reg): Promise<string | undefined> {
  const res = await r.http().get(location);
  expect(res.status).toBe(204);
  return res.headers.range;
}

function patch(location: string, data: Buffer, contentRange?: string) {
  const req = reg.http().patch(location).set('Content-Type', 'application/octet-stream');
  if (contentRange !== undefined) req.set('Content-Range', contentRange);
  return req.send(data);
}

async function readBlob(digest: string, r = reg): Promise<Buffer> {
  const res = await r.http().get(`/v2/${NAME}/blobs/${digest}`).buffer(true).parse(binaryParser);
  expect(res.status).toBe(200);
  return res.body as Buffer;
}

async function tmpFiles(r = reg): Promise<string[]> {
  return readdir(join(r.dataDir, 'tmp')).catch(() => []);
}

function blobFile(r: TestRegistry, digest: string): string {
  const [algorithm, hex] = digest.split(':') as [string, string];
  return join(r.dataDir, 'blobs', algorithm, hex.slice(0, 2), hex);
}

describe('POST start', () => {
  it('opens a session: 202, Location, Range 0-0, Docker-Upload-UUID', async () => {
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads/`);
    expect(res.status).toBe(202);
    const id = res.headers['docker-upload-uuid'] as string;
    expect(id).toMatch(UUID);
    expect(res.headers.location).toBe(`/v2/${NAME}/blobs/uploads/${id}`);
    expect(res.headers.range).toBe('0-0');
    expect(res.headers['content-length']).toBe('0');
  });

  it('accepts the path without a trailing slash', async () => {
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads`);
    expect(res.status).toBe(202);
    expect(res.headers.location).toMatch(new RegExp(`^/v2/${NAME}/blobs/uploads/[0-9a-f-]{36}$`));
  });
});

describe('monolithic POST ?digest=', () => {
  it('stores the body as the blob: 201 with Location and Docker-Content-Digest', async () => {
    const b = blob(4096);
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads/?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(res.status).toBe(201);
    expect(res.headers.location).toBe(`/v2/${NAME}/blobs/${b.digest}`);
    expect(res.headers['docker-content-digest']).toBe(b.digest);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('accepts a chunked body (no Content-Length)', async () => {
    const b = blob(3000);
    const req = reg.http().post(`/v2/${NAME}/blobs/uploads/?digest=${b.digest}`).set('Content-Type', 'application/octet-stream');
    req.write(b.data.subarray(0, 1000));
    req.write(b.data.subarray(1000));
    const res = await req;
    expect(res.status).toBe(201);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('accepts a sha512 digest', async () => {
    const data = Buffer.from('sha512 content');
    const digest = sha512(data);
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads/?digest=${digest}`).set('Content-Type', 'application/octet-stream').send(data);
    expect(res.status).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(digest);
    const head = await reg.http().head(`/v2/${NAME}/blobs/${digest}`);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(data.length));
  });

  it('stores nothing on a digest mismatch: 400 DIGEST_INVALID, HEAD 404, no file', async () => {
    const b = blob(2000);
    const wrong = sha256('something else');
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads/?digest=${wrong}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expectOciError(res, 400, 'DIGEST_INVALID');
    for (const d of [wrong, b.digest]) {
      expect((await reg.http().head(`/v2/${NAME}/blobs/${d}`)).status).toBe(404);
      expect(existsSync(blobFile(reg, d))).toBe(false);
    }
    expect(await storedBlobDigests(reg.dataDir)).not.toContain(wrong);
    expect(await tmpFiles()).toEqual([]);
  });
});

describe('POST + one PUT (BuildKit/containerd)', () => {
  it('stores the whole body sent with PUT ?digest=', async () => {
    const b = blob(10_000);
    const location = await start();
    const res = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(res.status).toBe(201);
    expect(res.headers.location).toBe(`/v2/${NAME}/blobs/${b.digest}`);
    expect(res.headers['docker-content-digest']).toBe(b.digest);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
    // The session is gone once completed.
    expectOciError(await reg.http().get(location), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('accepts a Location that already has a query string', async () => {
    const b = blob(10);
    const location = await start();
    const res = await reg.http().put(`${location}?foo=bar&digest=${encodeURIComponent(b.digest)}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(res.status).toBe(201);
  });

  it('two pushes of the same content both succeed, one file results', async () => {
    const b = blob(200_000);
    const [l1, l2] = await Promise.all([start(), start()]);
    const [r1, r2] = await Promise.all(
      [l1!, l2!].map((l) => reg.http().put(`${l}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data)),
    );
    expect(r1!.status).toBe(201);
    expect(r2!.status).toBe(201);
    expect((await storedBlobDigests(reg.dataDir)).filter((d) => d === b.digest)).toHaveLength(1);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });
});

describe('PATCH chunks', () => {
  it('streams chunks with Content-Length: 202 with Range after each, then PUT without body', async () => {
    const b = blob(3000);
    const location = await start();
    let res = await patch(location, b.data.subarray(0, 1000));
    expect(res.status).toBe(202);
    expect(res.headers.range).toBe('0-999');
    expect(res.headers.location).toBe(location);
    expect(res.headers['docker-upload-uuid']).toBe(location.split('/').pop());
    res = await patch(location, b.data.subarray(1000, 2500));
    expect(res.status).toBe(202);
    expect(res.headers.range).toBe('0-2499');
    res = await patch(location, b.data.subarray(2500));
    expect(res.headers.range).toBe('0-2999');
    const put = await reg.http().put(`${location}?digest=${b.digest}`);
    expect(put.status).toBe(201);
    expect(put.headers['docker-content-digest']).toBe(b.digest);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('streams chunks with chunked transfer-encoding (docker CLI)', async () => {
    const b = blob(300_000);
    const location = await start();
    const req = reg.http().patch(location).set('Content-Type', 'application/octet-stream');
    for (let i = 0; i < b.data.length; i += 65_536) req.write(b.data.subarray(i, i + 65_536));
    const res = await req;
    expect(res.status).toBe(202);
    expect(res.headers.range).toBe(`0-${b.data.length - 1}`);
    const put = await reg.http().put(`${location}?digest=${b.digest}`);
    expect(put.status).toBe(201);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('accepts in-order Content-Range in the OCI form and the bytes s-e/total form', async () => {
    const b = blob(30);
    const location = await start();
    expect((await patch(location, b.data.subarray(0, 10), '0-9')).headers.range).toBe('0-9');
    expect((await patch(location, b.data.subarray(10, 20), 'bytes 10-19/*')).headers.range).toBe('0-19');
    expect((await patch(location, b.data.subarray(20, 30), 'bytes=20-29')).headers.range).toBe('0-29');
    expect((await reg.http().put(`${location}?digest=${b.digest}`)).status).toBe(201);
  });

  it('answers an out-of-order chunk with 416 and the current Range, keeping the session as it was', async () => {
    const b = blob(20);
    const location = await start();
    await patch(location, b.data.subarray(0, 10), '0-9');
    for (const range of ['20-29', '5-14', '0-9', '9-18', '11-20']) {
      const res = await patch(location, b.data.subarray(10, 20), range);
      expectOciError(res, 416, 'BLOB_UPLOAD_INVALID');
      expect(res.headers.range).toBe('0-9');
      expect(await progress(location)).toBe('0-9');
    }
    expect((await patch(location, b.data.subarray(10, 20), '10-19')).status).toBe(202);
    expect((await reg.http().put(`${location}?digest=${b.digest}`)).status).toBe(201);
  });

  it('answers a first chunk that does not start at 0 with 416 and Range 0-0', async () => {
    const location = await start();
    const res = await patch(location, Buffer.alloc(5), '5-9');
    expectOciError(res, 416, 'BLOB_UPLOAD_INVALID');
    expect(res.headers.range).toBe('0-0');
  });

  it.each(['9-5', 'abc', '-5', '5-', '0-4,5-9'])('rejects a malformed Content-Range %s with 416', async (range) => {
    const location = await start();
    await patch(location, Buffer.alloc(3));
    const res = await patch(location, Buffer.alloc(5), range);
    expect(res.status).toBe(416);
    expect(await progress(location)).toBe('0-2');
  });

  it('rejects a body longer than Content-Range declares, keeping the session', async () => {
    const location = await start();
    await patch(location, Buffer.alloc(4), '0-3');
    // Content-Length (20) disagrees with the Content-Range span (10).
    const withLength = await patch(location, Buffer.alloc(20), '4-13');
    expectOciError(withLength, 400, 'SIZE_INVALID');
    expect(await progress(location)).toBe('0-3');
    // Chunked: the span is only known to be wrong once the body is read; the partial chunk is cut off again.
    const req = reg.http().patch(location).set('Content-Type', 'application/octet-stream').set('Content-Range', '4-13');
    req.write(Buffer.alloc(15));
    req.write(Buffer.alloc(5));
    expectOciError(await req, 400, 'SIZE_INVALID');
    expect(await progress(location)).toBe('0-3');
    const shorter = reg.http().patch(location).set('Content-Type', 'application/octet-stream').set('Content-Range', '4-13');
    shorter.write(Buffer.alloc(5));
    expectOciError(await shorter, 400, 'SIZE_INVALID');
    expect(await progress(location)).toBe('0-3');
  });

  it('accepts an empty chunk without moving the offset', async () => {
    const location = await start();
    await patch(location, Buffer.from('abc'));
    const res = await patch(location, Buffer.alloc(0));
    expect(res.status).toBe(202);
    expect(res.headers.range).toBe('0-2');
  });
});

describe('PUT completion', () => {
  it('takes a final chunk with the PUT', async () => {
    const b = blob(2000);
    const location = await start();
    await patch(location, b.data.subarray(0, 1500));
    const res = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data.subarray(1500));
    expect(res.status).toBe(201);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('takes a final chunk with Content-Range', async () => {
    const b = blob(20);
    const location = await start();
    await patch(location, b.data.subarray(0, 10), '0-9');
    const res = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').set('Content-Range', '10-19').send(b.data.subarray(10));
    expect(res.status).toBe(201);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('completes an empty upload as the empty blob', async () => {
    const location = await start();
    const empty = sha256(Buffer.alloc(0));
    const res = await reg.http().put(`${location}?digest=${empty}`);
    expect(res.status).toBe(201);
    expect((await reg.http().head(`/v2/${NAME}/blobs/${empty}`)).headers['content-length']).toBe('0');
  });

  it('stores nothing on a digest mismatch: 400 DIGEST_INVALID, no blob, no leftovers', async () => {
    const b = blob(5000);
    const location = await start();
    await patch(location, b.data);
    const wrong = sha256('not this');
    const res = await reg.http().put(`${location}?digest=${wrong}`);
    expectOciError(res, 400, 'DIGEST_INVALID');
    for (const d of [wrong, b.digest]) {
      expect((await reg.http().head(`/v2/${NAME}/blobs/${d}`)).status).toBe(404);
      expect(existsSync(blobFile(reg, d))).toBe(false);
    }
    expect(await tmpFiles()).toEqual([]);
    await expectServing(reg);
  });

  it('answers an out-of-order final chunk with 416 and Range, keeping the session', async () => {
    const b = blob(20);
    const location = await start();
    await patch(location, b.data.subarray(0, 10));
    const res = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').set('Content-Range', '12-21').send(b.data.subarray(10));
    expectOciError(res, 416, 'BLOB_UPLOAD_INVALID');
    expect(res.headers.range).toBe('0-9');
    expect(await progress(location)).toBe('0-9');
    expect((await reg.http().head(`/v2/${NAME}/blobs/${b.digest}`)).status).toBe(404);
    const ok = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').set('Content-Range', '10-19').send(b.data.subarray(10));
    expect(ok.status).toBe(201);
  });

  it('requires ?digest= (400 DIGEST_INVALID) and keeps the session', async () => {
    const location = await start();
    await patch(location, Buffer.from('abc'));
    expectOciError(await reg.http().put(location), 400, 'DIGEST_INVALID');
    expectOciError(await reg.http().put(`${location}?digest=sha256:abc`), 400, 'DIGEST_INVALID');
    expectOciError(await reg.http().put(`${location}?digest=/etc/passwd`), 400, 'DIGEST_INVALID');
    expect(await progress(location)).toBe('0-2');
    expect((await reg.http().put(`${location}?digest=${sha256('abc')}`)).status).toBe(201);
  });
});

describe('session status and cancel', () => {
  it('GET answers 204 with Range, Location and Docker-Upload-UUID', async () => {
    const location = await start();
    let res = await reg.http().get(location);
    expect(res.status).toBe(204);
    expect(res.headers.range).toBe('0-0');
    expect(res.headers.location).toBe(location);
    expect(res.headers['docker-upload-uuid']).toBe(location.split('/').pop());
    await patch(location, Buffer.alloc(100));
    res = await reg.http().get(location);
    expect(res.status).toBe(204);
    expect(res.headers.range).toBe('0-99');
  });

  it('DELETE cancels: 204, then every use answers 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const location = await start();
    await patch(location, Buffer.alloc(10));
    const res = await reg.http().delete(location);
    expect(res.status).toBe(204);
    expectOciError(await reg.http().get(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await patch(location, Buffer.alloc(1)), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await reg.http().put(`${location}?digest=${sha256(Buffer.alloc(10))}`), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await reg.http().delete(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expect(existsSync(join(reg.dataDir, 'uploads', location.split('/').pop()!))).toBe(false);
  });

  it.each([
    ['a well-formed unknown id', '0b7c1f3e-6f0a-4d3f-9f43-6c2f7c9a1b2c'],
    ['a malformed id', 'not-a-session'],
    ['an upper-case id', '0B7C1F3E-6F0A-4D3F-9F43-6C2F7C9A1B2C'],
  ])('answers 404 BLOB_UPLOAD_UNKNOWN for %s on every method', async (_what, id) => {
    const before = await snapshot(reg.dataDir);
    const location = `/v2/${NAME}/blobs/uploads/${id}`;
    expectOciError(await reg.http().get(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await patch(location, Buffer.alloc(5)), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await reg.http().put(`${location}?digest=${sha256('x')}`).send(Buffer.from('x')), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await reg.http().delete(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expect(await snapshot(reg.dataDir)).toEqual(before);
  });

  it('sends no Content-Length with its 204 responses (RFC 9110 §8.6)', async () => {
    const location = await start();
    const status = await rawSimple(reg, 'GET', location);
    expect(status.status).toBe(204);
    expect(status.headers['content-length']).toBeUndefined();
    expect(status.headers.range).toBe('0-0');
    const cancel = await rawSimple(reg, 'DELETE', location);
    expect(cancel.status).toBe(204);
    expect(cancel.headers['content-length']).toBeUndefined();
  });

  it('expires idle sessions: 404 BLOB_UPLOAD_UNKNOWN afterwards', async () => {
    const location = await start();
    await patch(location, Buffer.alloc(10));
    // The expiry sweep the daemon runs on a timer, run now as if the upload TTL had passed.
    const removed = await reg.store.evictor.expireUploads(Date.now() + reg.config.storage.uploadTtl + 60_000);
    expect(removed).toBeGreaterThan(0);
    expectOciError(await reg.http().get(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await patch(location, Buffer.alloc(1)), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  it('does not let another repository use a session', async () => {
    const location = await start('org/one');
    const id = location.split('/').pop()!;
    const foreign = `/v2/org/two/blobs/uploads/${id}`;
    expectOciError(await reg.http().get(foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await patch(foreign, Buffer.alloc(5)), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(await reg.http().delete(foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
    expect(await progress(location)).toBe('0-0');
  });

  it('keeps a session across a restart', async () => {
    const first = await startRegistry();
    const b = blob(64);
    const location = await start(NAME, first);
    const p = await first.http().patch(location).set('Content-Type', 'application/octet-stream').send(b.data.subarray(0, 32));
    expect(p.status).toBe(202);
    await first.close({ keepDir: true });
    const second = await startRegistry({}, { dataDir: first.dataDir });
    try {
      expect(await progress(location, second)).toBe('0-31');
      const put = await second.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data.subarray(32));
      expect(put.status).toBe(201);
      expect(Buffer.compare(await readBlob(b.digest, second), b.data)).toBe(0);
    } finally {
      await second.close();
    }
  });
});

describe('cross-repository mount', () => {
  let existing: { data: Buffer; digest: string };
  beforeAll(async () => {
    existing = blob(700);
    await pushBlob(reg, 'org/source', existing.data);
  });

  it('mounts an existing blob with from=: 201, Location, Docker-Content-Digest, no session', async () => {
    const sessions = await readdir(join(reg.dataDir, 'uploads'));
    const res = await reg.http().post(`/v2/org/target/blobs/uploads/?mount=${existing.digest}&from=org/source`);
    expect(res.status).toBe(201);
    expect(res.headers.location).toBe(`/v2/org/target/blobs/${existing.digest}`);
    expect(res.headers['docker-content-digest']).toBe(existing.digest);
    expect(await readdir(join(reg.dataDir, 'uploads'))).toEqual(sessions);
    expect((await reg.http().head(`/v2/org/target/blobs/${existing.digest}`)).status).toBe(200);
  });

  it('accepts a url-encoded from (org%2Fsource)', async () => {
    const res = await reg.http().post(`/v2/org/target/blobs/uploads/?mount=${encodeURIComponent(existing.digest)}&from=org%2Fsource`);
    expect(res.status).toBe(201);
  });

  it('mounts without from when automatic cross-mount is on (the default)', async () => {
    const res = await reg.http().post(`/v2/org/target/blobs/uploads/?mount=${existing.digest}`);
    expect(res.status).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(existing.digest);
  });

  it('opens a session instead (202) for a mount without from when automatic cross-mount is off', async () => {
    const strict = await startRegistry({ registry: { automaticCrossMount: false } });
    try {
      await pushBlob(strict, 'org/source', existing.data);
      const res = await strict.http().post(`/v2/org/target/blobs/uploads/?mount=${existing.digest}`);
      expect(res.status).toBe(202);
      expect(res.headers.location).toMatch(/^\/v2\/org\/target\/blobs\/uploads\/[0-9a-f-]{36}$/);
      expect(res.headers.range).toBe('0-0');
      const withFrom = await strict.http().post(`/v2/org/target/blobs/uploads/?mount=${existing.digest}&from=org/source`);
      expect(withFrom.status).toBe(201);
    } finally {
      await strict.close();
    }
  });

  it('opens a usable session (202) when the blob to mount is unknown', async () => {
    const b = blob(100);
    const res = await reg.http().post(`/v2/org/target/blobs/uploads/?mount=${b.digest}&from=org/source`);
    expect(res.status).toBe(202);
    const location = res.headers.location as string;
    expect(location).toMatch(/^\/v2\/org\/target\/blobs\/uploads\/[0-9a-f-]{36}$/);
    const put = await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(put.status).toBe(201);
  });

  it('ignores ?digest= when mount= is present and the mount fails: a session, not a monolithic upload', async () => {
    const b = blob(10);
    const res = await reg.http().post(`/v2/org/target/blobs/uploads/?mount=${b.digest}&from=org/source&digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(res.status).toBe(202);
    expect((await reg.http().head(`/v2/org/target/blobs/${b.digest}`)).status).toBe(404);
  });
});

/** Opens a raw connection and sends a request head plus part of its body; returns the socket. */
function partialRequest(r: TestRegistry, head: string, bodyPart: Buffer): Promise<Socket> {
  const { port } = r.server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(head);
      sock.write(bodyPart, () => resolve(sock));
    });
    sock.on('error', reject);
  });
}

describe('client disconnect mid-body', () => {
  it('PATCH: the partial chunk is cut off, the session continues where it was', async () => {
    const b = blob(3000);
    const location = await start();
    await patch(location, b.data.subarray(0, 1000));
    const sock = await partialRequest(
      reg,
      `PATCH ${location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000\r\n\r\n`,
      Buffer.alloc(700, 0x41),
    );
    // Wait until the server has written the partial bytes, so the disconnect really happens mid-chunk.
    await waitFor(async () => (await progress(location)) === '0-1699', 5000, 'partial chunk on disk');
    sock.destroy();
    await waitFor(async () => (await progress(location)) === '0-999', 5000, 'partial chunk cut off');
    // The session lock may be held for a moment after the truncation; then the chunk is accepted in order.
    await waitFor(async () => (await patch(location, b.data.subarray(1000), '1000-2999')).status === 202, 5000, 'next chunk accepted');
    expect(await progress(location)).toBe('0-2999');
    const put = await reg.http().put(`${location}?digest=${b.digest}`);
    expect(put.status).toBe(201);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('PUT with a final chunk: nothing stored, the session is unchanged', async () => {
    const b = blob(2000);
    const location = await start();
    await patch(location, b.data.subarray(0, 500));
    const sock = await partialRequest(
      reg,
      `PUT ${location}?digest=${b.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1500\r\n\r\n`,
      b.data.subarray(500, 900),
    );
    await waitFor(async () => (await progress(location)) === '0-899', 5000, 'partial chunk on disk');
    sock.destroy();
    await waitFor(async () => (await progress(location)) === '0-499', 5000, 'partial chunk cut off');
    expect((await reg.http().head(`/v2/${NAME}/blobs/${b.digest}`)).status).toBe(404);
    await waitFor(
      async () => (await reg.http().put(`${location}?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data.subarray(500))).status === 201,
      5000,
      'completion accepted',
    );
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });

  it('monolithic POST: nothing stored, no temp file left, still serving', async () => {
    const b = blob(100_000);
    const sock = await partialRequest(
      reg,
      `POST /v2/${NAME}/blobs/uploads/?digest=${b.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: ${b.data.length}\r\n\r\n`,
      b.data.subarray(0, 30_000),
    );
    await waitFor(async () => (await tmpFiles()).length > 0, 5000, 'temp file being written');
    sock.destroy();
    await waitFor(async () => (await tmpFiles()).length === 0, 5000, 'temp file removed');
    expect((await reg.http().head(`/v2/${NAME}/blobs/${b.digest}`)).status).toBe(404);
    expect(existsSync(blobFile(reg, b.digest))).toBe(false);
    await expectServing(reg);
    // The same push, complete, then succeeds.
    const res = await reg.http().post(`/v2/${NAME}/blobs/uploads/?digest=${b.digest}`).set('Content-Type', 'application/octet-stream').send(b.data);
    expect(res.status).toBe(201);
  });
});

describe('Expect: 100-continue (curl, some HTTP libraries)', () => {
  it('answers 100 Continue, then takes the body', async () => {
    const b = blob(2048);
    const { port } = reg.server.address() as AddressInfo;
    const text = await new Promise<string>((resolve, reject) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.write(
          `POST /v2/${NAME}/blobs/uploads/?digest=${b.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n` +
            `Content-Type: application/octet-stream\r\nContent-Length: ${b.data.length}\r\nExpect: 100-continue\r\n\r\n`,
        );
      });
      let received = '';
      let sent = false;
      sock.on('data', (c: Buffer) => {
        received += c.toString('latin1');
        if (!sent && received.startsWith('HTTP/1.1 100')) {
          sent = true;
          sock.write(b.data);
        }
      });
      sock.on('end', () => resolve(received));
      sock.on('error', reject);
    });
    expect(text).toMatch(/^HTTP\/1\.1 100 Continue\r\n/);
    expect(text).toMatch(/HTTP\/1\.1 201 Created/);
    expect(Buffer.compare(await readBlob(b.digest), b.data)).toBe(0);
  });
});
