/**
 * Branch fallback (registry.fallback): a manifest GET or HEAD by a missing tag is answered with another tag's
 * manifest, exactly, plus Buildcached-Fallback; everything else is unchanged.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OCI_MANIFEST, binaryParser, expectOciError, pushImage, putManifest, startRegistry, type TestRegistry } from './harness.js';
import { sleep } from '../helpers/daemon.js';
import { authFixture, basic, PASSWORDS } from '../helpers/auth-fixture.js';

const RULES = [
  { repositories: ['cache/**'], tags: ['pr-*', 'feature-*'], to: ['main', 'master', '@recent'] },
  { repositories: ['recent/*'], tags: ['*'], to: ['@recent'] },
];

describe('with fallback rules', () => {
  let reg: TestRegistry;
  let main: { digest: string; body: Buffer };
  beforeAll(async () => {
    reg = await startRegistry({ registry: { fallback: RULES } });
    main = await pushImage(reg, 'cache/app', 'main');
  });
  afterAll(() => reg.close());

  it('GET and HEAD of a missing matching tag serve main\'s manifest byte for byte, with the header', async () => {
    const get = await reg.http().get('/v2/cache/app/manifests/pr-7').buffer(true).parse(binaryParser);
    expect(get.status).toBe(200);
    expect((get.body as Buffer).equals(main.body)).toBe(true);
    expect(get.headers['content-type']).toBe(OCI_MANIFEST);
    expect(get.headers['docker-content-digest']).toBe(main.digest);
    expect(get.headers['buildcached-fallback']).toBe('main');
    const head = await reg.http().head('/v2/cache/app/manifests/feature-x');
    expect(head.status).toBe(200);
    expect(head.headers['docker-content-digest']).toBe(main.digest);
    expect(head.headers['buildcached-fallback']).toBe('main');
    expect(reg.store.cache.fallbacks.get('cache/app')).toBe(2);
  });

  it('an existing tag is itself, without the header; other tags, other repositories and digests are untouched', async () => {
    const own = await reg.http().get('/v2/cache/app/manifests/main');
    expect(own.status).toBe(200);
    expect(own.headers['buildcached-fallback']).toBeUndefined();
    expectOciError(await reg.http().get('/v2/cache/app/manifests/release-1'), 404, 'MANIFEST_UNKNOWN');
    await pushImage(reg, 'other/app', 'main');
    expectOciError(await reg.http().get('/v2/other/app/manifests/pr-7'), 404, 'MANIFEST_UNKNOWN');
    expectOciError(await reg.http().get(`/v2/cache/app/manifests/sha256:${'0'.repeat(64)}`), 404, 'MANIFEST_UNKNOWN');
    const tags = await reg.http().get('/v2/cache/app/tags/list');
    expect(tags.body.tags).toEqual(['main']);
    // Never another repository's tag, even when this one has nothing to fall back to.
    expectOciError(await reg.http().get('/v2/cache/empty/manifests/pr-1'), 404, 'MANIFEST_UNKNOWN');
  });

  it('the first of `to` that exists wins: master when there is no main', async () => {
    const master = await pushImage(reg, 'cache/legacy', 'master');
    const res = await reg.http().head('/v2/cache/legacy/manifests/pr-1');
    expect(res.headers['docker-content-digest']).toBe(master.digest);
    expect(res.headers['buildcached-fallback']).toBe('master');
    // main appears: it now takes precedence.
    const main2 = await pushImage(reg, 'cache/legacy', 'main');
    const again = await reg.http().head('/v2/cache/legacy/manifests/pr-1');
    expect(again.headers['docker-content-digest']).toBe(main2.digest);
    expect(again.headers['buildcached-fallback']).toBe('main');
  });

  it('@recent is the tag most recently pushed, other than the one asked for', async () => {
    const a = await pushImage(reg, 'recent/app', 'a');
    await sleep(20);
    const b = await pushImage(reg, 'recent/app', 'b');
    const res = await reg.http().head('/v2/recent/app/manifests/new-branch');
    expect(res.headers['docker-content-digest']).toBe(b.digest);
    expect(res.headers['buildcached-fallback']).toBe('b');
    await sleep(20);
    // Pointing a at a new manifest makes it the most recent.
    const a2 = await pushImage(reg, 'recent/app', 'a');
    expect(a2.digest).not.toBe(a.digest);
    expect((await reg.http().head('/v2/recent/app/manifests/new-branch')).headers['buildcached-fallback']).toBe('a');
  });

  it('a push to the missing tag creates it, and from then on it is served itself', async () => {
    const own = await pushImage(reg, 'cache/app', 'pr-9');
    const res = await reg.http().get('/v2/cache/app/manifests/pr-9');
    expect(res.headers['docker-content-digest']).toBe(own.digest);
    expect(res.headers['buildcached-fallback']).toBeUndefined();
    // A delete of the fallback target by tag deletes main, not the missing tag's "view" of it.
    expect((await reg.http().delete('/v2/cache/app/manifests/pr-404')).status).toBe(404);
    expect((await reg.http().get('/v2/cache/app/manifests/main')).status).toBe(200);
  });

  it('a PUT under a missing tag is stored under that tag', async () => {
    await putManifest(reg, 'cache/app', 'feature-new', main.body, OCI_MANIFEST);
    const res = await reg.http().head('/v2/cache/app/manifests/feature-new');
    expect(res.headers['buildcached-fallback']).toBeUndefined();
  });
});

describe('without fallback rules', () => {
  it('a missing tag is 404 MANIFEST_UNKNOWN, as always', async () => {
    const reg = await startRegistry();
    try {
      await pushImage(reg, 'cache/app', 'main');
      expectOciError(await reg.http().get('/v2/cache/app/manifests/pr-7'), 404, 'MANIFEST_UNKNOWN');
    } finally {
      await reg.close();
    }
  });
});

describe('with auth on', () => {
  it('a fallback stays within what the caller may pull: same repository, same rules', async () => {
    const f = await authFixture();
    const seed = await startRegistry({ registry: { tenantIsolation: 'on' } });
    const main = await pushImage(seed, 'team/app', 'main');
    await pushImage(seed, 'private/app', 'main');
    await seed.close({ keepDir: true });
    const reg = await startRegistry({ auth: f.auth, registry: { fallback: [{ repositories: ['**'], tags: ['*'], to: ['main'] }] } }, { dataDir: seed.dataDir });
    try {
      const reader = basic('reader', PASSWORDS.reader);
      const ok = await reg.http().head('/v2/team/app/manifests/pr-1').set('Authorization', reader);
      expect(ok.status).toBe(200);
      expect(ok.headers['docker-content-digest']).toBe(main.digest);
      expect(ok.headers['buildcached-fallback']).toBe('main');
      expect((await reg.http().head('/v2/private/app/manifests/pr-1').set('Authorization', reader)).status).toBe(403);
      expect((await reg.http().head('/v2/team/app/manifests/pr-1')).status).toBe(401);
    } finally {
      await reg.close();
      await f.close();
    }
  });
});
