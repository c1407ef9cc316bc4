import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectOciError, startRegistry, type TestRegistry } from './harness.js';

let reg: TestRegistry;
beforeAll(async () => {
  reg = await startRegistry();
});
afterAll(async () => {
  await reg.close();
});

describe('GET /v2/', () => {
  it('answers 200 {} with the API version header', async () => {
    const res = await reg.http().get('/v2/');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({});
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('answers without the trailing slash and to HEAD', async () => {
    const res = await reg.http().get('/v2');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({});
    const head = await reg.http().head('/v2/');
    expect(head.status).toBe(200);
    expect(head.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('does not reveal the framework', async () => {
    const res = await reg.http().get('/v2/');
    expect(res.headers['x-powered-by']).toBeUndefined();
  });
});

describe('health', () => {
  it('answers /healthz and /readyz', async () => {
    expect((await reg.http().get('/healthz')).status).toBe(200);
    expect((await reg.http().get('/readyz')).status).toBe(200);
  });
});

describe('unknown paths and methods', () => {
  const d = `sha256:${'a'.repeat(64)}`;

  it.each([
    ['POST', '/v2/'],
    ['DELETE', '/v2/'],
    ['PUT', '/v2/_catalog'],
    ['POST', '/v2/org/app/tags/list'],
    ['DELETE', '/v2/org/app/referrers/' + d],
    ['GET', '/v2/org/app/blobs/uploads/'],
    ['PUT', '/v2/org/app/blobs/uploads/'],
    ['POST', '/v2/org/app/blobs/uploads/0b7c1f3e-6f0a-4d3f-9f43-6c2f7c9a1b2c'],
    ['PUT', `/v2/org/app/blobs/${d}`],
    ['POST', `/v2/org/app/blobs/${d}`],
    ['PATCH', `/v2/org/app/blobs/${d}`],
    ['POST', '/v2/org/app/manifests/latest'],
    ['PATCH', '/v2/org/app/manifests/latest'],
  ])('%s %s on a known route → 405 UNSUPPORTED with Allow', async (method, path) => {
    const res = await reg.http()[method.toLowerCase() as 'get'](path);
    expectOciError(res, 405, 'UNSUPPORTED');
    expect(res.headers.allow).toBeTruthy();
    expect(res.headers.allow).not.toContain(method);
  });

  it('lists the methods a route serves in Allow', async () => {
    const manifest = await reg.http().post('/v2/org/app/manifests/latest');
    expect(manifest.headers.allow!.split(', ').sort()).toEqual(['DELETE', 'GET', 'HEAD', 'PUT']);
    const start = await reg.http().get('/v2/org/app/blobs/uploads/');
    expect(start.headers.allow).toBe('POST');
  });

  it.each([
    ['GET', '/v2/org/app'],
    ['GET', '/v2/org/app/'],
    ['GET', '/v2/org/app/blobs'],
    ['GET', '/v2/org/app/manifests'],
    ['GET', '/v2/org/app/tags'],
    ['GET', '/v2/org/app/unknown/thing'],
    ['POST', '/v2/org/app/things'],
    ['GET', '/v2/_catalog/extra'],
    ['GET', '/v3/'],
    ['GET', '/'],
    ['DELETE', '/nothing-here'],
  ])('%s %s matches no route → 404', async (method, path) => {
    const res = await reg.http()[method.toLowerCase() as 'get'](path);
    expect(res.status).toBe(404);
    expect(res.body.errors?.[0]?.code).toBeTruthy();
  });
});
