/**
 * Strict HTTP: requests whose framing is uncertain are refused before any handler runs (nothing written), and
 * every refusal made below the routes (framing, the HTTP parser, Expect) carries an OCI error body and closes
 * the connection. Sent byte-exact on raw sockets.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_MANIFEST,
  expectServing,
  pushImage,
  rawRequest,
  rawSimple,
  snapshot,
  startRegistry,
  type RawResponse,
  type TestRegistry,
} from './harness.js';

let reg: TestRegistry;
let image: { digest: string; body: Buffer };
let session: string;

beforeAll(async () => {
  reg = await startRegistry();
  image = await pushImage(reg, 'org/app', 'latest');
  const start = await rawSimple(reg, 'POST', '/v2/org/app/blobs/uploads/');
  session = start.headers.location!;
});
afterAll(async () => {
  await reg.close();
});

function errorOf(res: RawResponse): { code: string; message: string; detail: unknown } {
  const body = res.body as { errors?: Array<{ code: string; message: string; detail: unknown }> };
  expect(Array.isArray(body?.errors), res.text.slice(0, 300)).toBe(true);
  return body.errors![0]!;
}

/** A refusal below the routes: the status, an OCI body with one of `codes`, `Connection: close`, then closed. */
function expectRefusal(res: RawResponse, status: number, codes: string[]): void {
  expect(res.status, res.text.slice(0, 300)).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.headers.connection).toBe('close');
  const e = errorOf(res);
  expect(codes).toContain(e.code);
  expect(typeof e.message).toBe('string');
  expect(e).toHaveProperty('detail');
  expect(res.closed).toBe(true);
  // One response, nothing after it: no request behind the refused one was served.
  expect(res.text.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
}

async function sessionOffset(): Promise<string | undefined> {
  return (await rawSimple(reg, 'GET', session)).headers.range;
}

/** Sessions on disk right now. */
const sessions = () => readdir(join(reg.dataDir, 'uploads'));

const FRAMINGS: Array<[string, string, string[]]> = [
  ['an unknown transfer coding', 'Transfer-Encoding: xchunked\r\n', ['UNSUPPORTED']],
  ['identity', 'Transfer-Encoding: identity\r\n', ['UNSUPPORTED']],
  ['an empty Transfer-Encoding', 'Transfer-Encoding: \r\n', ['UNSUPPORTED']],
  ['a coding before chunked', 'Transfer-Encoding: gzip, chunked\r\n', ['UNSUPPORTED']],
  ['chunked not last', 'Transfer-Encoding: chunked, gzip\r\n', ['UNSUPPORTED']],
  ['chunked twice in one header', 'Transfer-Encoding: chunked, chunked\r\n', ['UNSUPPORTED']],
  ['an empty list element', 'Transfer-Encoding: ,chunked\r\n', ['UNSUPPORTED']],
  ['Transfer-Encoding repeated', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', ['UNSUPPORTED']],
  ['codings split over two headers', 'Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n', ['UNSUPPORTED']],
  // Node's parser names whichever of the two headers came second.
  ['Content-Length with Transfer-Encoding', 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', ['SIZE_INVALID', 'UNSUPPORTED']],
  ['Transfer-Encoding with Content-Length', 'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', ['SIZE_INVALID', 'UNSUPPORTED']],
  ['Content-Length with an unknown coding', 'Content-Length: 5\r\nTransfer-Encoding: identity\r\n', ['SIZE_INVALID', 'UNSUPPORTED']],
  ['a signed Content-Length', 'Content-Length: +5\r\n', ['SIZE_INVALID']],
  ['a hex Content-Length', 'Content-Length: 0x5\r\n', ['SIZE_INVALID']],
  ['a negative Content-Length', 'Content-Length: -5\r\n', ['SIZE_INVALID']],
  ['a Content-Length list', 'Content-Length: 5, 5\r\n', ['SIZE_INVALID']],
  ['an empty Content-Length', 'Content-Length: \r\n', ['SIZE_INVALID']],
  ['Content-Length repeated', 'Content-Length: 5\r\nContent-Length: 5\r\n', ['SIZE_INVALID']],
  ['Content-Length repeated, different', 'Content-Length: 5\r\nContent-Length: 6\r\n', ['SIZE_INVALID']],
  ['a Content-Length past 2^53', 'Content-Length: 99999999999999999\r\n', ['SIZE_INVALID']],
  ['a Content-Length past 2^64', 'Content-Length: 99999999999999999999999\r\n', ['SIZE_INVALID']],
];

/** Requests that would write something if they ran: a tag deletion, new sessions, a blob, a manifest, a chunk. */
const writers = (): Array<[string, string]> => [
  ['DELETE', '/v2/org/app/manifests/latest'],
  ['POST', '/v2/org/app/blobs/uploads/'],
  ['POST', '/v2/org/app/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'],
  ['PUT', '/v2/org/app/manifests/smuggled'],
  ['PATCH', session],
];

describe('framing is checked before any handler runs', () => {
  it.each(FRAMINGS)('%s → 400 with an OCI body, connection closed, nothing written', async (_label, headers, codes) => {
    for (const [method, target] of writers()) {
      const before = await snapshot(reg.dataDir);
      const type = method === 'PUT' ? `Content-Type: ${OCI_MANIFEST}\r\n` : '';
      const res = await rawRequest(reg, `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n${type}${headers}\r\n5\r\nhello\r\n0\r\n\r\n`);
      expectRefusal(res, 400, codes);
      expect(await snapshot(reg.dataDir), `${method} ${target}`).toEqual(before);
    }
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest')).status).toBe(200);
    expect(await sessionOffset()).toBe('0-0');
    await expectServing(reg);
  });

  it('the DELETE of a tag with Transfer-Encoding: xchunked deletes nothing', async () => {
    const res = await rawRequest(reg, 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n');
    expectRefusal(res, 400, ['UNSUPPORTED']);
    const tag = await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest');
    expect(tag.status).toBe(200);
    expect(tag.headers['docker-content-digest']).toBe(image.digest);
  });

  it('a POST of a session with Transfer-Encoding: identity leaves no session behind', async () => {
    const before = await sessions();
    const res = await rawRequest(reg, 'POST /v2/org/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\n\r\n');
    expectRefusal(res, 400, ['UNSUPPORTED']);
    expect(await sessions()).toEqual(before);
  });

  it('refuses Transfer-Encoding in an HTTP/1.0 request', async () => {
    const before = await sessions();
    const res = await rawRequest(reg, 'POST /v2/org/app/blobs/uploads/ HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    expectRefusal(res, 400, ['UNSUPPORTED']);
    expect(await sessions()).toEqual(before);
  });

  it('serves nothing pipelined behind a refused request (no smuggling past the refusal)', async () => {
    const smuggled = 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const res = await rawRequest(reg, `POST /v2/org/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n${smuggled}`);
    expectRefusal(res, 400, ['UNSUPPORTED']);
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest')).status).toBe(200);
  });

  it('refuses bad framing before sending 100 Continue, so the body is never invited', async () => {
    const res = await rawRequest(reg, 'POST /v2/org/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nTransfer-Encoding: identity\r\n\r\n');
    expect(res.text).not.toMatch(/100 Continue/);
    expectRefusal(res, 400, ['UNSUPPORTED']);
  });

  it('accepts chunked (in any letter case) and a plain Content-Length, with 100-continue too', async () => {
    const chunked = await rawRequest(reg, `PATCH ${session} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    expect(chunked.status, chunked.text).toBe(202);
    expect(chunked.headers.range).toBe('0-2');
    const plain = await rawRequest(reg, `PATCH ${session} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 003\r\nExpect: 100-continue\r\nConnection: close\r\n\r\ndef`);
    expect(plain.text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 202/);
    const status = await rawSimple(reg, 'GET', session);
    expect(status.headers.range).toBe('0-5');
    // Back to an empty session for the other tests.
    await rawSimple(reg, 'DELETE', session);
    session = (await rawSimple(reg, 'POST', '/v2/org/app/blobs/uploads/')).headers.location!;
  });
});

describe('parser refusals carry an OCI error body', () => {
  it('a malformed request line → 400', async () => {
    for (const line of ['GARBAGE', 'GET /v2/ HTTP/9.9', 'G@T /v2/ HTTP/1.1', 'GET /v2/ HTTP/1.1 extra', 'GET /v2/\u0000 HTTP/1.1']) {
      expectRefusal(await rawRequest(reg, `${line}\r\nHost: 127.0.0.1\r\n\r\n`), 400, ['UNSUPPORTED']);
    }
  });

  it('an HTTP/1.1 request without Host, or with two → 400, and it does not run', async () => {
    expectRefusal(await rawRequest(reg, 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\n\r\n'), 400, ['UNSUPPORTED']);
    expectRefusal(await rawRequest(reg, 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'), 400, ['UNSUPPORTED']);
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest')).status).toBe(200);
    const old = await rawRequest(reg, 'GET /v2/ HTTP/1.0\r\n\r\n');
    expect(old.status).toBe(200);
  });

  it('a malformed header → 400', async () => {
    expectRefusal(await rawRequest(reg, 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n'), 400, ['UNSUPPORTED']);
    expectRefusal(await rawRequest(reg, 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\r\n folded\r\n\r\n'), 400, ['UNSUPPORTED']);
  });

  it('headers too large → 431', async () => {
    const res = await rawRequest(reg, `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expectRefusal(res, 431, ['UNSUPPORTED']);
  });

  it('Expect other than 100-continue → 417, and the request does not run', async () => {
    const res = await rawRequest(reg, 'DELETE /v2/org/app/manifests/latest HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: teapot\r\n\r\n');
    expectRefusal(res, 417, ['UNSUPPORTED']);
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/latest')).status).toBe(200);
  });

  it('a bad chunk in the middle of a body → 400, and the session keeps only whole chunks', async () => {
    const res = await rawRequest(reg, `PATCH ${session} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n`);
    expectRefusal(res, 400, ['UNSUPPORTED']);
    await expect.poll(sessionOffset).toBe('0-0');
  });

  it('a HEAD refusal still closes cleanly', async () => {
    const res = await rawRequest(reg, 'HEAD /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\n\r\n');
    expect(res.status).toBe(400);
    expect(res.headers.connection).toBe('close');
    expect(res.closed).toBe(true);
  });
});

describe('the fallback 404 names what the path was after', () => {
  const cases: Array<[string, string]> = [
    ['/v2/org/app/manifests/', 'MANIFEST_UNKNOWN'],
    ['/v2/org/app/manifests/a/b', 'MANIFEST_UNKNOWN'],
    ['/v2/org/app/blobs/', 'BLOB_UNKNOWN'],
    ['/v2/org/app/blobs/sha256:abc/extra', 'BLOB_UNKNOWN'],
    ['/v2/org/app/blobs/uploads/id/extra', 'BLOB_UPLOAD_UNKNOWN'],
    ['/v2/org/app/tags/', 'NAME_UNKNOWN'],
    ['/v2/org/app/referrers/', 'NAME_UNKNOWN'],
    ['/v2/org/app/unknown-endpoint', 'UNSUPPORTED'],
    ['/v3/', 'UNSUPPORTED'],
    ['/favicon.ico', 'UNSUPPORTED'],
  ];
  it.each(cases)('%s → 404 %s', async (target, code) => {
    const res = await rawSimple(reg, 'GET', target);
    expect(res.status, res.text).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(errorOf(res).code).toBe(code);
  });
});
