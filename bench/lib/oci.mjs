// The registry operations the benchmark performs, written the way the real clients do them.
import { headOf } from './data.mjs';
import { HttpError, expect, send } from './http.mjs';

const withQuery = (path, key, value) => `${path}${path.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
const bodyOf = (spec, start, end) => (spec.bytes ? spec.bytes.subarray(start ?? 0, end ?? spec.size) : { spec, start, end });

function checkDigestHeader(res, digest, what) {
  const got = res.headers['docker-content-digest'];
  if (got !== digest) throw new Error(`${what}: Docker-Content-Digest is ${got ?? '(missing)'}, expected ${digest}`);
}

async function startUpload(t, repo) {
  const res = await expect(t, { method: 'POST', path: `/v2/${repo}/blobs/uploads/` }, [202], 'POST upload');
  if (!res.headers.location) throw new Error('POST upload: no Location');
  return t.pathOf(res.headers.location);
}

/** BuildKit/containerd: POST, then one PUT ?digest= carrying the whole body. */
export async function pushMonolithic(t, repo, spec) {
  const loc = await startUpload(t, repo);
  const res = await expect(
    t,
    {
      method: 'PUT',
      path: withQuery(loc, 'digest', spec.digest),
      headers: { 'content-type': 'application/octet-stream' },
      body: bodyOf(spec),
    },
    [201],
    'PUT upload (monolithic)',
  );
  checkDigestHeader(res, spec.digest, 'PUT upload');
}

/** docker/skopeo style: POST, PATCH chunks with Content-Range, following each new Location, then PUT ?digest=. */
export async function pushChunked(t, repo, spec, chunk) {
  let loc = await startUpload(t, repo);
  for (let start = 0; start < spec.size; start += chunk) {
    const end = Math.min(spec.size, start + chunk);
    const res = await expect(
      t,
      {
        method: 'PATCH',
        path: loc,
        headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}` },
        body: bodyOf(spec, start, end),
      },
      [202],
      'PATCH chunk',
    );
    if (res.headers.range !== `0-${end - 1}`) throw new Error(`PATCH chunk: Range is ${res.headers.range}, expected 0-${end - 1}`);
    loc = t.pathOf(res.headers.location ?? loc);
  }
  const res = await expect(t, { method: 'PUT', path: withQuery(loc, 'digest', spec.digest) }, [201], 'PUT upload (final)');
  checkDigestHeader(res, spec.digest, 'PUT upload');
}

/** HEAD a blob: true if present, false on 404. */
export async function headBlob(t, repo, digest) {
  const res = await send(t, { method: 'HEAD', path: `/v2/${repo}/blobs/${digest}` });
  if (res.status === 200) return true;
  if (res.status === 404) return false;
  throw new HttpError(`HEAD blob`, res);
}

/**
 * GETs a blob and checks it: status, Content-Length, the byte count, and either its first bytes ('count', cheap: for
 * throughput runs) or its full sha256 ('hash': for correctness runs).
 */
export async function pullBlob(t, repo, spec, sink = 'count') {
  const res = await send(t, { method: 'GET', path: `/v2/${repo}/blobs/${spec.digest}`, sink });
  if (res.status !== 200) throw new Error(`GET blob ${spec.label}: HTTP ${res.status}`);
  if (Number(res.headers['content-length']) !== spec.size) {
    throw new Error(`GET blob ${spec.label}: Content-Length ${res.headers['content-length']}, expected ${spec.size}`);
  }
  if (res.bytes !== spec.size) throw new Error(`GET blob ${spec.label}: received ${res.bytes} bytes, expected ${spec.size}`);
  if (sink === 'hash' && res.digest !== spec.digest) throw new Error(`GET blob ${spec.label}: content hashes to ${res.digest}`);
  if (sink === 'count') {
    const want = spec.bytes ? spec.bytes.subarray(0, 32) : headOf(spec);
    if (!res.first?.equals(want)) throw new Error(`GET blob ${spec.label}: first bytes differ`);
  }
  return res.bytes;
}

export async function putManifest(t, repo, ref, mediaType, spec) {
  const res = await expect(
    t,
    { method: 'PUT', path: `/v2/${repo}/manifests/${ref}`, headers: { 'content-type': mediaType }, body: spec.bytes },
    [201],
    'PUT manifest',
  );
  checkDigestHeader(res, spec.digest, 'PUT manifest');
}

export async function getManifest(t, repo, ref, accept) {
  return expect(t, { method: 'GET', path: `/v2/${repo}/manifests/${ref}`, headers: { accept } }, [200], 'GET manifest');
}
