import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OCI_INDEX,
  OCI_MANIFEST,
  expectOciError,
  imageManifest,
  pushBlobs,
  pushImage,
  putManifest,
  sha256,
  startRegistry,
  type TestRegistry,
} from './harness.js';

let reg: TestRegistry;
beforeAll(async () => {
  reg = await startRegistry();
});
afterAll(async () => {
  await reg.close();
});

/** Follows `Link: <...>; rel="next"` until the last page; returns the pages' items and the links seen. */
async function walk(first: string, key: 'tags' | 'repositories'): Promise<{ pages: string[][]; links: string[] }> {
  const pages: string[][] = [];
  const links: string[] = [];
  let next: string | undefined = first;
  for (let i = 0; next && i < 50; i++) {
    const res = await reg.http().get(next);
    expect(res.status).toBe(200);
    pages.push(res.body[key] as string[]);
    const link = res.headers.link as string | undefined;
    if (!link) break;
    links.push(link);
    const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
    expect(m, link).not.toBeNull();
    next = m![1];
  }
  return { pages, links };
}

describe('tags list', () => {
  const name = 'list/app';
  const tags = ['v1.10', 'latest', 'V2', 'main', '_x', 'v1.9', 'buildcache', 'a-b.c'];
  beforeAll(async () => {
    const { body } = await pushImage(reg, name, 'first');
    for (const t of tags) await putManifest(reg, name, t, body, OCI_MANIFEST);
  });
  const all = () => [...tags, 'first'].sort();

  it('lists every tag, sorted', async () => {
    const res = await reg.http().get(`/v2/${name}/tags/list`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({ name, tags: all() });
    expect(res.headers.link).toBeUndefined();
  });

  it('paginates with n and last, with a Link to the next page', async () => {
    const res = await reg.http().get(`/v2/${name}/tags/list?n=3`);
    expect(res.body.tags).toEqual(all().slice(0, 3));
    expect(res.headers.link).toBe(`</v2/${name}/tags/list?n=3&last=${encodeURIComponent(all()[2]!)}>; rel="next"`);
    const second = await reg.http().get(`/v2/${name}/tags/list?n=3&last=${encodeURIComponent(all()[2]!)}`);
    expect(second.body.tags).toEqual(all().slice(3, 6));
  });

  it('walks all pages through Link headers without gaps or repeats', async () => {
    const { pages } = await walk(`/v2/${name}/tags/list?n=2`, 'tags');
    expect(pages.flat()).toEqual(all());
    expect(pages.every((p) => p.length <= 2)).toBe(true);
    expect(pages.length).toBe(Math.ceil(all().length / 2));
  });

  it('has no Link on the exact last page, and answers past the end with an empty list', async () => {
    const res = await reg.http().get(`/v2/${name}/tags/list?n=${all().length}`);
    expect(res.body.tags).toEqual(all());
    expect(res.headers.link).toBeUndefined();
    const past = await reg.http().get(`/v2/${name}/tags/list?last=zzzz`);
    expect(past.body.tags).toEqual([]);
  });

  it('answers n=0 with an empty list', async () => {
    const res = await reg.http().get(`/v2/${name}/tags/list?n=0`);
    expect(res.status).toBe(200);
    expect(res.body.tags).toEqual([]);
  });

  it.each(['-1', 'abc', '1.5', '1e3', '99999999999'])('rejects n=%s with 400 PAGINATION_NUMBER_INVALID', async (n) => {
    expectOciError(await reg.http().get(`/v2/${name}/tags/list?n=${n}`), 400, 'PAGINATION_NUMBER_INVALID');
  });

  it('reflects a deleted tag', async () => {
    const other = 'list/deleted';
    await pushImage(reg, other, 'keep');
    const { digest } = await pushImage(reg, other, 'drop');
    expect((await reg.http().delete(`/v2/${other}/manifests/drop`)).status).toBe(202);
    expect((await reg.http().get(`/v2/${other}/tags/list`)).body.tags).toEqual(['keep']);
    expect((await reg.http().head(`/v2/${other}/manifests/${digest}`)).status).toBe(200);
  });

  it('answers 404 NAME_UNKNOWN for an unknown repository', async () => {
    expectOciError(await reg.http().get('/v2/no/such/repo/tags/list'), 404, 'NAME_UNKNOWN');
  });

  it('answers 400 NAME_INVALID for an invalid name', async () => {
    expectOciError(await reg.http().get('/v2/Upper/tags/list'), 400, 'NAME_INVALID');
  });
});

describe('catalog', () => {
  let cat: TestRegistry;
  const names = ['zeta', 'alpha/one', 'alpha/two', 'beta', 'alpha', 'mid/deep/er/path'];
  beforeAll(async () => {
    cat = await startRegistry();
    for (const n of names) await pushImage(cat, n, 'latest');
  });
  afterAll(async () => {
    await cat.close();
  });

  it('lists repositories, sorted', async () => {
    const res = await cat.http().get('/v2/_catalog');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ repositories: [...names].sort() });
  });

  it('paginates with n, last and Link', async () => {
    const sorted = [...names].sort();
    const res = await cat.http().get('/v2/_catalog?n=2');
    expect(res.body.repositories).toEqual(sorted.slice(0, 2));
    expect(res.headers.link).toBe(`</v2/_catalog?n=2&last=${encodeURIComponent(sorted[1]!)}>; rel="next"`);
    const pages: string[][] = [];
    let next: string | undefined = '/v2/_catalog?n=4';
    while (next) {
      const page = await cat.http().get(next);
      pages.push(page.body.repositories as string[]);
      next = (/^<([^>]+)>/.exec((page.headers.link as string | undefined) ?? '') ?? [])[1];
    }
    expect(pages).toEqual([sorted.slice(0, 4), sorted.slice(4)]);
    const after = await cat.http().get(`/v2/_catalog?last=${encodeURIComponent('alpha/two')}`);
    expect(after.body.repositories).toEqual(sorted.filter((n) => n > 'alpha/two'));
  });

  it('does not list a repository whose manifests were all deleted, nor one that only has blobs', async () => {
    const { digest } = await pushImage(cat, 'gone/soon', 'latest');
    await pushBlobs(cat, 'only/blobs', 1);
    expect((await cat.http().get('/v2/_catalog')).body.repositories).toContain('gone/soon');
    expect((await cat.http().delete(`/v2/gone/soon/manifests/${digest}`)).status).toBe(202);
    const res = await cat.http().get('/v2/_catalog');
    expect(res.body.repositories).not.toContain('gone/soon');
    expect(res.body.repositories).not.toContain('only/blobs');
  });

  it('rejects an invalid n', async () => {
    expectOciError(await cat.http().get('/v2/_catalog?n=x'), 400, 'PAGINATION_NUMBER_INVALID');
  });
});

describe('referrers', () => {
  const name = 'refs/app';
  const SIG = 'application/vnd.example.signature';
  const SBOM = 'application/vnd.example.sbom';
  let subject: string;
  let sig: { digest: string; size: number };
  let sbom: { digest: string; size: number };

  beforeAll(async () => {
    subject = (await pushImage(reg, name, 'latest')).digest;
    const subjectDesc = { mediaType: OCI_MANIFEST, digest: subject, size: 0 };
    const [empty] = await pushBlobs(reg, name, 1, 'application/vnd.oci.empty.v1+json');
    const sigBody = imageManifest(empty!, [], { artifactType: SIG, subject: subjectDesc, annotations: { 'org.example.signer': 'ci' } });
    await putManifest(reg, name, sha256(sigBody), sigBody, OCI_MANIFEST);
    sig = { digest: sha256(sigBody), size: sigBody.length };
    // No artifactType: the config media type is the artifact type.
    const [sbomConfig] = await pushBlobs(reg, name, 1, SBOM);
    const sbomBody = imageManifest(sbomConfig!, [], { subject: subjectDesc });
    await putManifest(reg, name, sha256(sbomBody), sbomBody, OCI_MANIFEST);
    sbom = { digest: sha256(sbomBody), size: sbomBody.length };
  });

  it('lists the manifests whose subject is the digest, as an OCI index', async () => {
    const res = await reg.http().get(`/v2/${name}/referrers/${subject}`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe(OCI_INDEX);
    expect(res.headers['oci-filters-applied']).toBeUndefined();
    expect(res.body.schemaVersion).toBe(2);
    expect(res.body.mediaType).toBe(OCI_INDEX);
    const entries = [...(res.body.manifests as Array<{ digest: string }>)].sort((a, b) => a.digest.localeCompare(b.digest));
    const expected = [
      { mediaType: OCI_MANIFEST, digest: sig.digest, size: sig.size, artifactType: SIG, annotations: { 'org.example.signer': 'ci' } },
      { mediaType: OCI_MANIFEST, digest: sbom.digest, size: sbom.size, artifactType: SBOM },
    ].sort((a, b) => a.digest.localeCompare(b.digest));
    expect(entries).toEqual(expected);
  });

  it('filters by artifactType and says so in OCI-Filters-Applied', async () => {
    const res = await reg.http().get(`/v2/${name}/referrers/${subject}?artifactType=${encodeURIComponent(SIG)}`);
    expect(res.status).toBe(200);
    expect(res.headers['oci-filters-applied']).toBe('artifactType');
    expect((res.body.manifests as Array<{ digest: string }>).map((m) => m.digest)).toEqual([sig.digest]);
    const none = await reg.http().get(`/v2/${name}/referrers/${subject}?artifactType=application/x-none`);
    expect(none.body.manifests).toEqual([]);
    expect(none.headers['oci-filters-applied']).toBe('artifactType');
  });

  it('answers an empty index for a subject without referrers, an unknown subject, or another repository', async () => {
    for (const path of [`/v2/${name}/referrers/${sig.digest}`, `/v2/${name}/referrers/${sha256('unknown')}`, `/v2/other/repo/referrers/${subject}`]) {
      const res = await reg.http().get(path);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe(OCI_INDEX);
      expect(res.body).toEqual({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
    }
  });

  it('stops listing a deleted referrer', async () => {
    const other = 'refs/deleting';
    const subj = (await pushImage(reg, other, 'latest')).digest;
    const [empty] = await pushBlobs(reg, other, 1, 'application/vnd.oci.empty.v1+json');
    const body = imageManifest(empty!, [], { artifactType: SIG, subject: { mediaType: OCI_MANIFEST, digest: subj, size: 1 } });
    await putManifest(reg, other, sha256(body), body, OCI_MANIFEST);
    expect((await reg.http().get(`/v2/${other}/referrers/${subj}`)).body.manifests).toHaveLength(1);
    expect((await reg.http().delete(`/v2/${other}/manifests/${sha256(body)}`)).status).toBe(202);
    expect((await reg.http().get(`/v2/${other}/referrers/${subj}`)).body.manifests).toEqual([]);
  });

  it('rejects an invalid digest or name', async () => {
    expectOciError(await reg.http().get(`/v2/${name}/referrers/sha256:abc`), 400, 'DIGEST_INVALID');
    expectOciError(await reg.http().get(`/v2/${name}/referrers/latest`), 400, 'DIGEST_INVALID');
    expectOciError(await reg.http().get(`/v2/UPPER/referrers/${subject}`), 400, 'NAME_INVALID');
  });
});
