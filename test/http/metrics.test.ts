/**
 * GET /metrics on the registry's listener (issue 12): route templates, never raw paths; cache hits and misses by
 * kind; the store's gauges read from its in-memory state; the request id echoed in X-Request-Id.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OCI_CONFIG, OCI_MANIFEST, blob, pushBlob, putManifest, sha256, startRegistry, type TestRegistry } from './harness.js';
import { parseExposition, sampleValue, type Sample } from '../helpers/prometheus-text.js';

let reg: TestRegistry;

beforeAll(async () => {
  reg = await startRegistry({}, { metrics: true });
});
afterAll(async () => {
  await reg.close();
});

async function scrape(): Promise<{ text: string; samples: Sample[] }> {
  const res = await reg.http().get('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return { text: res.text, samples: parseExposition(res.text) };
}

describe('GET /metrics', () => {
  it('counts requests by route template, cache lookups by kind, and reads the store gauges', async () => {
    const layer = blob(3000);
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    await pushBlob(reg, 'team/app', layer.data);
    await pushBlob(reg, 'team/app', config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.data.length }],
      }),
    );
    await putManifest(reg, 'team/app', 'v1', manifest, OCI_MANIFEST);
    const missing = sha256('not stored');
    expect((await reg.http().head(`/v2/team/app/blobs/${layer.digest}`)).status).toBe(200);
    expect((await reg.http().head(`/v2/team/app/blobs/${layer.digest}`)).status).toBe(200);
    expect((await reg.http().head(`/v2/team/app/blobs/${missing}`)).status).toBe(404);
    expect((await reg.http().get(`/v2/team/app/blobs/${layer.digest}`)).status).toBe(200);
    expect((await reg.http().get(`/v2/team/app/blobs/${missing}`)).status).toBe(404);
    expect((await reg.http().get('/v2/team/app/manifests/v1')).status).toBe(200);
    expect((await reg.http().get('/v2/team/app/manifests/v2')).status).toBe(404);

    const { text, samples } = await scrape();
    // Raw paths carry names and digests: none of them may become a label of the HTTP series (only the top
    // references' series name a repo:tag, on purpose).
    expect(text).not.toContain(layer.digest);
    const http = samples.filter((s) => s.name.startsWith('buildcached_http_'));
    expect(http.length).toBeGreaterThan(0);
    expect(http.filter((s) => JSON.stringify(s.labels).includes('team/app'))).toEqual([]);
    expect(sampleValue(samples, 'buildcached_reference_pushes_total', { reference: 'team/app:v1' })).toBe(1);
    const blobRoute = '/v2/<name>/blobs/<digest>';
    expect(sampleValue(samples, 'buildcached_http_requests_total', { method: 'HEAD', route: blobRoute, status: '200' })).toBe(2);
    expect(sampleValue(samples, 'buildcached_http_requests_total', { method: 'HEAD', route: blobRoute, status: '404' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_http_requests_total', { method: 'PUT', route: '/v2/<name>/manifests/<reference>', status: '201' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_http_request_duration_seconds_count', { method: 'HEAD', route: blobRoute })).toBe(3);
    expect(sampleValue(samples, 'buildcached_cache_hits_total', { kind: 'blob_head' })).toBe(2);
    expect(sampleValue(samples, 'buildcached_cache_misses_total', { kind: 'blob_head' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_cache_hits_total', { kind: 'blob_get' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_cache_misses_total', { kind: 'blob_get' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_cache_hits_total', { kind: 'manifest' })).toBe(1);
    expect(sampleValue(samples, 'buildcached_cache_misses_total', { kind: 'manifest' })).toBe(1);
    // Bodies: both blobs and the manifest in; the layer and the manifest out (plus small JSON bodies both ways).
    expect(sampleValue(samples, 'buildcached_http_bytes_received_total')).toBeGreaterThanOrEqual(layer.data.length + config.length + manifest.length);
    expect(sampleValue(samples, 'buildcached_http_bytes_sent_total')).toBeGreaterThanOrEqual(layer.data.length + manifest.length);

    const status = await reg.store.admin.status();
    expect(sampleValue(samples, 'buildcached_disk_bytes_used')).toBe(status.bytesUsed);
    expect(sampleValue(samples, 'buildcached_disk_bytes_budget')).toBe(status.budgetBytes);
    expect(sampleValue(samples, 'buildcached_blobs')).toBe(3);
    expect(sampleValue(samples, 'buildcached_references')).toBe(1);
    expect(sampleValue(samples, 'buildcached_upload_sessions')).toBe(0);
    expect(sampleValue(samples, 'buildcached_evictions_total', { unit: 'blob' })).toBe(0);
    expect(sampleValue(samples, 'buildcached_evicted_bytes_total')).toBe(0);
    // Node's own metrics, prefixed; no storage tier configured, so no tier series.
    expect(sampleValue(samples, 'buildcached_process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(samples.some((s) => s.name.startsWith('buildcached_tier_'))).toBe(false);
    expect(samples.every((s) => s.name.startsWith('buildcached_'))).toBe(true);
  });

  it('the Grafana dashboard (contrib/grafana) queries only series the daemon exports', async () => {
    const dashboard = JSON.parse(await readFile(new URL('../../contrib/grafana/buildcached.json', import.meta.url), 'utf8')) as {
      panels: Array<{ targets: Array<{ expr: string }> }>;
    };
    const used = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/buildcached_[a-z_]+/g) ?? [])));
    const exported = new Set((await scrape()).samples.map((s) => s.name));
    // The tier's series exist only with a tier.
    const missing = [...used].filter((n) => !n.startsWith('buildcached_tier_') && !exported.has(n));
    expect(missing).toEqual([]);
    expect(used.size).toBeGreaterThan(15);
  });

  it('counts an open upload session', async () => {
    const start = await reg.http().post('/v2/team/app/blobs/uploads/');
    expect(start.status).toBe(202);
    expect(sampleValue((await scrape()).samples, 'buildcached_upload_sessions')).toBe(1);
    expect((await reg.http().delete(start.headers.location as string)).status).toBe(204);
    expect(sampleValue((await scrape()).samples, 'buildcached_upload_sessions')).toBe(0);
  });
});

describe('X-Request-Id', () => {
  it("echoes the client's id when it is sane", async () => {
    const res = await reg.http().get('/v2/').set('X-Request-Id', 'ci-job-42.step:7');
    expect(res.headers['x-request-id']).toBe('ci-job-42.step:7');
  });

  it('generates one when the client sent none, or one that is not sane', async () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const none = await reg.http().get('/v2/');
    expect(none.headers['x-request-id']).toMatch(uuid);
    const hostile = await reg.http().get('/v2/').set('X-Request-Id', 'a b<script>');
    expect(hostile.headers['x-request-id']).toMatch(uuid);
    const long = await reg.http().get('/v2/').set('X-Request-Id', 'x'.repeat(129));
    expect(long.headers['x-request-id']).toMatch(uuid);
    // Errors carry it too.
    const notFound = await reg.http().get('/v2/team/app/manifests/nope');
    expect(notFound.status).toBe(404);
    expect(notFound.headers['x-request-id']).toMatch(uuid);
  });
});
