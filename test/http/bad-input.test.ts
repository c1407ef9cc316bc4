/**
 * Hostile and malformed input. Every request is sent byte-exact on a raw socket (no client-side normalisation of
 * `..` or percent-encoding), and after each one: the expected status, nothing written anywhere under (or next to)
 * the data dir, and the daemon still serving.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_MANIFEST,
  blob,
  expectServing,
  pushBlob,
  pushImage,
  rawRequest,
  rawSimple,
  sha256,
  snapshot,
  startRegistry,
  type RawResponse,
  type TestRegistry,
} from './harness.js';

let outer: string;
let reg: TestRegistry;
let known: { data: Buffer; digest: string };
let image: { digest: string; body: Buffer };
const SECRET = 'top-secret-outside-the-data-dir';

beforeAll(async () => {
  // The data dir sits inside `outer`, next to a file a traversal would be after; snapshots cover both.
  outer = await mkdtemp(join(tmpdir(), 'buildcached-bad-'));
  await writeFile(join(outer, 'secret'), SECRET);
  reg = await startRegistry({}, { dataDir: join(outer, 'data') });
  known = blob(256);
  await pushBlob(reg, 'org/app', known.data);
  image = await pushImage(reg, 'org/app', 'latest');
});
afterAll(async () => {
  await reg.close();
  await rm(outer, { recursive: true, force: true });
});

const D = () => known.digest;
const HEX = () => known.digest.slice(7);

function codeOf(res: RawResponse): string | undefined {
  const body = res.body as { errors?: Array<{ code?: string }> } | undefined;
  return body?.errors?.[0]?.code;
}

/** Sends, checks status (and OCI code when given), then checks that nothing changed and the daemon serves. */
async function expectRefused(
  send: () => Promise<RawResponse>,
  status: number | number[],
  codes?: string[],
): Promise<RawResponse> {
  const before = await snapshot(outer);
  const res = await send();
  if (Array.isArray(status)) expect(status, res.text.slice(0, 300)).toContain(res.status);
  else expect(res.status, res.text.slice(0, 300)).toBe(status);
  if (codes) {
    expect(codes, res.text.slice(0, 300)).toContain(codeOf(res));
    const err = (res.body as { errors: Array<Record<string, unknown>> }).errors[0]!;
    expect(typeof err.message).toBe('string');
    expect(err).toHaveProperty('detail');
  }
  expect(res.text).not.toContain(SECRET);
  expect(res.text).not.toContain('root:x:0:0');
  expect(await snapshot(outer)).toEqual(before);
  await expectServing(reg);
  return res;
}

const INVALID = ['NAME_INVALID', 'DIGEST_INVALID', 'TAG_INVALID'];

describe('malformed repository names', () => {
  const names = [
    'UPPER',
    'org/App',
    'a..b',
    'a___b',
    'a-_b',
    '-a',
    'a-',
    '_a',
    'a.',
    'x'.repeat(256),
    `${'a'.repeat(200)}/${'b'.repeat(60)}`,
    'org/app/',
    'a:b',
    'a@b',
  ];
  it.each(names.map((n) => [n.length > 40 ? `${n.slice(0, 20)}…(${n.length})` : n, n]))('%s → 400 NAME_INVALID on every route', async (_label, name) => {
    await expectRefused(() => rawSimple(reg, 'GET', `/v2/${name}/tags/list`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'GET', `/v2/${name}/manifests/latest`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'HEAD', `/v2/${name}/manifests/latest`), 400);
    await expectRefused(() => rawSimple(reg, 'PUT', `/v2/${name}/manifests/latest`, { 'Content-Type': OCI_MANIFEST }, image.body.toString()), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'DELETE', `/v2/${name}/manifests/latest`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'GET', `/v2/${name}/blobs/${D()}`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'HEAD', `/v2/${name}/blobs/${D()}`), 400);
    await expectRefused(() => rawSimple(reg, 'DELETE', `/v2/${name}/blobs/${D()}`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'POST', `/v2/${name}/blobs/uploads/`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'POST', `/v2/${name}/blobs/uploads/?digest=${D()}`, {}, known.data.toString('latin1')), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'GET', `/v2/${name}/referrers/${D()}`), 400, ['NAME_INVALID']);
  });
});

describe('path traversal and encoded separators', () => {
  const targets = (): Array<[string, string]> => [
    ['GET', '/v2/../etc/passwd'],
    ['GET', '/v2/..'],
    ['GET', '/v2/org/../../../etc/tags/list'],
    ['GET', `/v2/org/../app/blobs/${D()}`],
    ['GET', '/v2/org/app/blobs/..'],
    ['GET', '/v2/org/app/blobs/../../../../secret'],
    ['GET', `/v2/org/app/blobs/sha256:../../../../secret`],
    ['PUT', '/v2/org/app/manifests/..'],
    ['GET', '/v2/org/app/manifests/../../../secret'],
    ['GET', '/v2/org/app/manifests/%2e%2e'],
    ['GET', '/v2/%2e%2e/%2e%2e/secret/manifests/latest'],
    ['GET', '/v2/org%2f..%2f..%2fsecret/manifests/latest'],
    ['GET', '/v2/org%2Fapp/tags/list'],
    ['GET', `/v2/org/app/blobs/..%2f..%2f..%2fsecret`],
    ['GET', '/v2/org/app/blobs/uploads/..%2f..%2fblobs'],
    ['PATCH', '/v2/org/app/blobs/uploads/../../../tmp'],
    ['PUT', `/v2/org/app/blobs/uploads/..?digest=${D()}`],
    ['DELETE', '/v2/org/app/blobs/uploads/.'],
    ['GET', '/v2/org/app%00/tags/list'],
    ['GET', '/v2/org/app/manifests/latest%00'],
    ['GET', `/v2/org/app/blobs/${D()}%00.json`],
    ['GET', '/v2//etc/passwd/manifests/latest'],
    ['GET', '/v2/org//app/tags/list'],
    ['GET', '/v2/./org/app/tags/list'],
    ['GET', '/v2/org/./app/tags/list'],
    ['GET', '/v2/org\\..\\..\\secret/tags/list'],
    ['POST', '/v2/org/../../x/blobs/uploads/'],
    ['PUT', `/v2/org/app/manifests/%2e%2e%2f%2e%2e%2fsecret`],
  ];

  it('refuses each with 400 before touching the disk', async () => {
    for (const [method, target] of targets()) {
      await expectRefused(() => rawSimple(reg, method, target, method === 'PUT' ? { 'Content-Type': OCI_MANIFEST } : {}, method === 'PUT' ? image.body.toString() : ''), 400, INVALID);
    }
  });

  it('refuses a raw NUL or control byte in the request line (the HTTP parser answers 400)', async () => {
    for (const target of ['/v2/org/app\u0000/tags/list', `/v2/org/app/blobs/${D()}\u0000`, '/v2/org/app/manifests/lat\u0001est']) {
      await expectRefused(() => rawRequest(reg, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`), 400);
    }
  });

  it('accepts the absolute-form request-target (RFC 9112 §3.2.2) and still refuses traversal in it', async () => {
    const { port } = reg.server.address() as { port: number };
    const ok = await rawSimple(reg, 'GET', `http://127.0.0.1:${port}/v2/`);
    expect(ok.status).toBe(200);
    const tags = await rawSimple(reg, 'GET', `http://127.0.0.1:${port}/v2/org/app/tags/list`);
    expect(tags.status).toBe(200);
    expect((tags.body as { tags: string[] }).tags).toEqual(['latest']);
    await expectRefused(() => rawSimple(reg, 'GET', `http://127.0.0.1:${port}/v2/../../secret`), 400, INVALID);
    await expectRefused(() => rawSimple(reg, 'GET', `http://127.0.0.1:${port}/v2/org/app/manifests/%2e%2e`), 400, INVALID);
  });

  it('answers 404 for paths outside /v2, absolute or not', async () => {
    for (const target of ['/etc/passwd', '//etc/passwd', '/../../etc/passwd', '/secret']) {
      await expectRefused(() => rawSimple(reg, 'GET', target), [400, 404]);
    }
  });
});

describe('absolute paths and traversal in query parameters', () => {
  it.each([
    ['from=/etc', `mount=${'$D'}&from=/etc`, ['NAME_INVALID']],
    ['from=/etc/passwd (encoded)', `mount=${'$D'}&from=%2Fetc%2Fpasswd`, ['NAME_INVALID']],
    ['from=../../etc', `mount=${'$D'}&from=../../etc`, ['NAME_INVALID']],
    ['from with NUL', `mount=${'$D'}&from=org%2Fapp%00`, ['NAME_INVALID']],
    ['from=ORG', `mount=${'$D'}&from=ORG`, ['NAME_INVALID']],
    ['mount=/etc/passwd', 'mount=/etc/passwd&from=org/app', ['DIGEST_INVALID']],
    ['mount=../../secret', 'mount=..%2F..%2Fsecret', ['DIGEST_INVALID']],
    ['mount=sha256:../..', `mount=sha256:..%2F..%2F${'a'.repeat(58)}`, ['DIGEST_INVALID']],
    ['digest=/etc/passwd', 'digest=/etc/passwd', ['DIGEST_INVALID']],
    ['digest=sha256:/etc/passwd', 'digest=sha256:%2Fetc%2Fpasswd', ['DIGEST_INVALID']],
    ['digest upper-case hex', `digest=sha256:${'A'.repeat(64)}`, ['DIGEST_INVALID']],
  ])('POST uploads ?%s → 400', async (_what, query, codes) => {
    const q = query.replace('$D', D());
    const res = await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/target/blobs/uploads/?${q}`, { 'Content-Type': 'application/octet-stream' }, 'hello'), 400, codes);
    expect(res.headers.location).toBeUndefined();
  });

  it('PUT upload ?digest= with a path → 400 DIGEST_INVALID, session untouched', async () => {
    const start = await rawSimple(reg, 'POST', '/v2/org/app/blobs/uploads/');
    expect(start.status).toBe(202);
    const location = start.headers.location!;
    for (const q of ['/etc/passwd', '..%2F..%2Fsecret', `sha256:${HEX().slice(0, 60)}/../`]) {
      await expectRefused(() => rawSimple(reg, 'PUT', `${location}?digest=${q}`, { 'Content-Type': 'application/octet-stream' }, 'data'), 400, ['DIGEST_INVALID']);
    }
    const status = await rawSimple(reg, 'GET', location);
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe('0-0');
  });

  it('listing parameters are only compared or filtered, never used as paths', async () => {
    const tags = await expectRefused(() => rawSimple(reg, 'GET', '/v2/org/app/tags/list?last=/etc/passwd'), 200);
    expect((tags.body as { tags: string[] }).tags).toEqual(['latest']);
    const up = await expectRefused(() => rawSimple(reg, 'GET', '/v2/org/app/tags/list?last=../../../secret'), 200);
    expect((up.body as { tags: string[] }).tags).toEqual(['latest']);
    const cat = await expectRefused(() => rawSimple(reg, 'GET', '/v2/_catalog?last=%2Fetc%2Fpasswd'), 200);
    expect((cat.body as { repositories: string[] }).repositories).toEqual(['org/app']);
    const refs = await expectRefused(() => rawSimple(reg, 'GET', `/v2/org/app/referrers/${image.digest}?artifactType=/etc/passwd`), 200);
    expect((refs.body as { manifests: unknown[] }).manifests).toEqual([]);
    await expectRefused(() => rawSimple(reg, 'GET', '/v2/org/app/tags/list?n=/etc'), 400, ['PAGINATION_NUMBER_INVALID']);
  });

  it('refuses repeated (ambiguous) parameters with 400 and the code of their kind, storing nothing', async () => {
    const other = blob(5);
    await expectRefused(
      () => rawSimple(reg, 'POST', `/v2/org/app/blobs/uploads/?digest=${other.digest}&digest=${D()}`, { 'Content-Type': 'application/octet-stream' }, other.data.toString('latin1')),
      400,
      ['DIGEST_INVALID'],
    );
    await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/app/blobs/uploads/?mount=${D()}&mount=${D()}&from=org/app`), 400, ['DIGEST_INVALID']);
    await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/target/blobs/uploads/?mount=${D()}&from=org/app&from=/etc`), 400, ['NAME_INVALID']);
    await expectRefused(() => rawSimple(reg, 'GET', '/v2/org/app/tags/list?n=1&n=2'), 400, ['PAGINATION_NUMBER_INVALID']);
    await expectRefused(() => rawSimple(reg, 'GET', '/v2/_catalog?n=1&n=1'), 400, ['PAGINATION_NUMBER_INVALID']);
  });
});

describe('malformed tags', () => {
  it.each(['.hidden', '-dash', 'a+b', 'x'.repeat(129), '~x'])('PUT with tag %s → 400 TAG_INVALID', async (tag) => {
    await expectRefused(() => rawSimple(reg, 'PUT', `/v2/org/app/manifests/${tag}`, { 'Content-Type': OCI_MANIFEST }, image.body.toString()), 400, ['TAG_INVALID']);
  });

  it.each(['.hidden', '-dash', 'x'.repeat(129)])('GET/HEAD/DELETE with tag %s → 404 MANIFEST_UNKNOWN (no such manifest can exist)', async (tag) => {
    await expectRefused(() => rawSimple(reg, 'GET', `/v2/org/app/manifests/${tag}`), 404, ['MANIFEST_UNKNOWN']);
    await expectRefused(() => rawSimple(reg, 'HEAD', `/v2/org/app/manifests/${tag}`), 404);
    await expectRefused(() => rawSimple(reg, 'DELETE', `/v2/org/app/manifests/${tag}`), 404, ['MANIFEST_UNKNOWN']);
  });
});

describe('malformed digests', () => {
  const digests = () => [
    'sha256:abc',
    `sha256:${HEX().toUpperCase()}`,
    `SHA256:${HEX()}`,
    `md5:${HEX()}`,
    `sha512:${HEX()}`,
    `sha256:${HEX()}0`,
    `sha256:${'g'.repeat(64)}`,
    `sha256:${HEX().slice(0, 63)}`,
    'sha256:',
    `:${HEX()}`,
  ];

  it('blob routes → 400 DIGEST_INVALID', async () => {
    for (const d of digests()) {
      await expectRefused(() => rawSimple(reg, 'GET', `/v2/org/app/blobs/${d}`), 400, ['DIGEST_INVALID']);
      await expectRefused(() => rawSimple(reg, 'HEAD', `/v2/org/app/blobs/${d}`), 400);
      await expectRefused(() => rawSimple(reg, 'DELETE', `/v2/org/app/blobs/${d}`), 400, ['DIGEST_INVALID']);
    }
  });

  it('manifest routes by digest → 400 DIGEST_INVALID', async () => {
    for (const d of digests()) {
      await expectRefused(() => rawSimple(reg, 'GET', `/v2/org/app/manifests/${d}`), 400, ['DIGEST_INVALID']);
      await expectRefused(() => rawSimple(reg, 'PUT', `/v2/org/app/manifests/${d}`, { 'Content-Type': OCI_MANIFEST }, image.body.toString()), 400, ['DIGEST_INVALID']);
    }
  });

  it('referrers → 400 DIGEST_INVALID', async () => {
    for (const d of digests()) await expectRefused(() => rawSimple(reg, 'GET', `/v2/org/app/referrers/${d}`), 400, ['DIGEST_INVALID']);
  });

  it('monolithic upload and mount → 400 DIGEST_INVALID', async () => {
    for (const d of digests()) {
      await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/app/blobs/uploads/?digest=${d}`, {}, 'x'), 400, ['DIGEST_INVALID']);
      await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/app/blobs/uploads/?mount=${d}&from=org/app`), 400, ['DIGEST_INVALID']);
    }
  });
});

describe('malformed framing', () => {
  it('refuses a non-numeric or negative Content-Length (HTTP parser, 400)', async () => {
    for (const cl of ['abc', '-1', '1e3', '0x10']) {
      await expectRefused(() => rawRequest(reg, `POST /v2/org/app/blobs/uploads/?digest=${sha256('x')} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: ${cl}\r\n\r\nx`), 400);
    }
  });

  it('refuses conflicting Content-Length headers and Content-Length with chunked (request smuggling)', async () => {
    const d = sha256('x');
    await expectRefused(() => rawRequest(reg, `POST /v2/org/app/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx`), 400);
    await expectRefused(
      () => rawRequest(reg, `POST /v2/org/app/blobs/uploads/?digest=${d} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n`),
      400,
    );
  });

  it('refuses a manifest PUT whose body is shorter than its Content-Length (client gone): nothing stored', async () => {
    const before = await snapshot(outer);
    const head = `PUT /v2/org/app/manifests/partial HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: ${image.body.length + 50}\r\n\r\n`;
    const res = await rawRequest(reg, Buffer.concat([Buffer.from(head), image.body]), 300);
    expect(res.status).toBeUndefined(); // still waiting for the rest of the body when the client gave up
    expect(await snapshot(outer)).toEqual(before);
    expect((await rawSimple(reg, 'GET', '/v2/org/app/manifests/partial')).status).toBe(404);
    await expectServing(reg);
  });

  it('answers a huge Range end by clamping, and a huge Content-Range with 416', async () => {
    const ranged = await rawSimple(reg, 'GET', `/v2/org/app/blobs/${D()}`, { Range: 'bytes=250-99999999999999999999999' });
    expect(ranged.status).toBe(206);
    expect(ranged.headers['content-range']).toBe('bytes 250-255/256');
    const start = await rawSimple(reg, 'POST', '/v2/org/app/blobs/uploads/');
    await expectRefused(() => rawSimple(reg, 'PATCH', start.headers.location!, { 'Content-Range': '0-99999999999999999999' }, 'abc'), 416);
  });
});

describe('content checks', () => {
  it('a blob pushed under the wrong digest leaves no file and no temp file', async () => {
    const b = blob(64);
    const wrong = sha256('wrong');
    const res = await expectRefused(() => rawSimple(reg, 'POST', `/v2/org/app/blobs/uploads/?digest=${wrong}`, { 'Content-Type': 'application/octet-stream' }, b.data.toString('latin1')), 400, ['DIGEST_INVALID']);
    expect(res.headers['docker-content-digest']).toBeUndefined();
    expect((await rawSimple(reg, 'HEAD', `/v2/org/app/blobs/${wrong}`)).status).toBe(404);
    expect((await rawSimple(reg, 'HEAD', `/v2/org/app/blobs/${b.digest}`)).status).toBe(404);
  });

  it('a manifest whose Content-Type contradicts its mediaType is refused', async () => {
    await expectRefused(() => rawSimple(reg, 'PUT', '/v2/org/app/manifests/mismatch', { 'Content-Type': 'application/vnd.oci.image.index.v1+json' }, image.body.toString()), 400, ['MANIFEST_INVALID']);
  });

  it('an invalid JSON manifest is refused', async () => {
    await expectRefused(() => rawSimple(reg, 'PUT', '/v2/org/app/manifests/broken', { 'Content-Type': OCI_MANIFEST }, '{"schemaVersion": 2, "config": '), 400, ['MANIFEST_INVALID']);
  });

  it('a manifest naming missing blobs is refused', async () => {
    const body = image.body.toString().replace(/"digest":"sha256:[0-9a-f]{64}"/, `"digest":"${sha256('absent')}"`);
    await expectRefused(() => rawSimple(reg, 'PUT', '/v2/org/app/manifests/missing', { 'Content-Type': OCI_MANIFEST }, body), 400, ['MANIFEST_BLOB_UNKNOWN']);
  });

  it('an unknown upload id is refused on every method', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'zzz', '..', 'etc%2fpasswd']) {
      for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) {
        const target = `/v2/org/app/blobs/uploads/${id}${method === 'PUT' ? `?digest=${sha256('')}` : ''}`;
        await expectRefused(() => rawSimple(reg, method, target), [400, 404], ['BLOB_UPLOAD_UNKNOWN', 'NAME_INVALID']);
      }
    }
  });
});
