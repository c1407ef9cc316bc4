import { describe, expect, it } from 'vitest';
import { cacheLookup } from '../../src/observability/metrics.js';
import { requestId } from '../../src/http/request-log.js';

const BLOB = '/v2/<name>/blobs/<digest>';
const MANIFEST = '/v2/<name>/manifests/<reference>';

describe('cacheLookup', () => {
  it('classifies blob HEAD/GET and manifest GET/HEAD; a found one is a hit, a 404 a miss', () => {
    expect(cacheLookup('HEAD', BLOB, 200)).toEqual({ kind: 'blob_head', hit: true });
    expect(cacheLookup('HEAD', BLOB, 404)).toEqual({ kind: 'blob_head', hit: false });
    expect(cacheLookup('GET', BLOB, 206)).toEqual({ kind: 'blob_get', hit: true });
    expect(cacheLookup('GET', BLOB, 307)).toEqual({ kind: 'blob_get', hit: true });
    expect(cacheLookup('HEAD', MANIFEST, 200)).toEqual({ kind: 'manifest', hit: true });
    expect(cacheLookup('GET', MANIFEST, 404)).toEqual({ kind: 'manifest', hit: false });
  });

  it('says nothing of writes, other routes, or answers that are not about the cache', () => {
    expect(cacheLookup('DELETE', BLOB, 202)).toBeUndefined();
    expect(cacheLookup('PUT', MANIFEST, 201)).toBeUndefined();
    expect(cacheLookup('GET', '/v2/', 200)).toBeUndefined();
    expect(cacheLookup('GET', BLOB, 400)).toBeUndefined();
    expect(cacheLookup('HEAD', BLOB, 401)).toBeUndefined();
    expect(cacheLookup('GET', MANIFEST, 0)).toBeUndefined();
  });
});

describe('requestId', () => {
  it("keeps a client's plain id and replaces anything else", () => {
    expect(requestId('abc-123_x.y:z')).toBe('abc-123_x.y:z');
    for (const bad of [undefined, '', 'has space', 'x'.repeat(129), 'quote"d', 'new\nline', ['a', 'b']]) {
      const id = requestId(bad);
      expect(id).not.toBe(bad);
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    }
  });
});
