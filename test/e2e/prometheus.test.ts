/**
 * Metrics as operators consume them (issue 12): a real Prometheus server (Debian's `prometheus`) scrapes the real
 * daemon with two worker processes after pushes, pulls and an eviction; what it stores matches `buildcached status
 * --json`, the HTTP counters are the whole daemon's (both workers served, each request counted once), and
 * `promtool check metrics` finds nothing wrong with a scrape.
 */
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KiB, cliJson, pullRef, pushRef, randomLayers, startCache, waitFor, type CacheDaemon, type StatusJson } from '../helpers/cache-helpers.js';
import { cleanup, makeTempDir, requireTools, servingPids, skipWithoutTools, startDaemon, track } from '../helpers/daemon.js';
import { request } from '../helpers/registry-client.js';
import { parseExposition, sampleValue } from '../helpers/prometheus-text.js';

const TOOLS = { prometheus: 'prometheus', promtool: 'prometheus' };
const skip = skipWithoutTools('prometheus e2e', TOOLS);

/** A free loopback port (Prometheus takes its listen address as a flag, not port 0). */
function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

interface PromVector {
  status: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

let daemon: CacheDaemon;
let promUrl: string;

/** One number from Prometheus's HTTP API (an instant query that must give exactly one series). */
async function query(expr: string): Promise<number> {
  const res = await request('GET', `${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = JSON.parse(res.body.toString()) as PromVector;
  expect(body.status, expr).toBe('success');
  expect(body.data.result.length, `${expr}: ${JSON.stringify(body.data.result)}`).toBe(1);
  return Number(body.data.result[0]!.value[1]);
}

async function queryCount(expr: string): Promise<number> {
  const res = await request('GET', `${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (JSON.parse(res.body.toString()) as PromVector).data.result.length;
}

describe.skipIf(skip)('Prometheus scrapes the daemon (--workers 2)', () => {
  beforeAll(async () => {
    requireTools(TOOLS);
    // Three references of 2 × 200 KiB in a 1 MiB budget: the third push passes the high watermark and evicts.
    daemon = await startCache({ maxBytes: 1024 * KiB, pushGraceSeconds: 0, highWatermark: 0.9, lowWatermark: 0.5, workers: 2 }, { env: { BUILDCACHED_METRICS_LISTEN: '127.0.0.1:0' } });
    const refs = [];
    for (const tag of ['a', 'b', 'c']) {
      refs.push(await pushRef(daemon.client, 'ci/app', tag, randomLayers([200 * KiB, 200 * KiB])));
      await pullRef(daemon.client, 'ci/app', tag);
    }
    await waitFor('an eviction', async () => (await cliJson<StatusJson>(['status', '--data', daemon.dataDir])).evictions.blobs > 0, 20_000);
    // Requests for the same repository reached both workers, so the counters below can only be right if summed.
    await waitFor('both workers to have served', () => servingPids(daemon, 'ci/app').size === 2, 5_000);

    const dir = await makeTempDir('buildcached-prom-');
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const config = join(dir, 'prometheus.yml');
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: buildcached',
        '    static_configs:',
        `      - targets: ['${daemon.hostPort}']`,
        '',
      ].join('\n'),
    );
    const prom = track(
      spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], {
        stdio: 'ignore',
      }),
    );
    expect(prom.pid).toBeDefined();
  }, 60_000);
  afterAll(cleanup);

  it("stores values equal to `status --json`, summed over both workers' counters", async () => {
    const status = await cliJson<StatusJson>(['status', '--data', daemon.dataDir]);
    const settled = Date.now() / 1000;
    // A scrape taken after the state above (no traffic since, and the eviction is over).
    await waitFor(
      'a scrape after the pushes',
      async () => {
        try {
          return (await queryCount(`timestamp(buildcached_blobs) > ${settled}`)) === 1;
        } catch {
          return false; // Prometheus not up yet
        }
      },
      30_000,
      200,
    );
    expect(await query('up{job="buildcached"}')).toBe(1);
    expect(await query('buildcached_disk_bytes_used')).toBe(status.bytesUsed);
    expect(await query('buildcached_disk_bytes_budget')).toBe(status.budgetBytes);
    expect(await query('buildcached_blobs')).toBe(status.blobCount);
    expect(await query('buildcached_references')).toBe(status.references.length);
    expect(await query('sum(buildcached_evictions_total{unit="blob"})')).toBe(status.evictions.blobs);
    expect(await query('sum(buildcached_evictions_total{unit="tag"})')).toBe(status.evictions.tags);
    expect(await query('buildcached_evicted_bytes_total')).toBe(status.evictions.bytesReclaimed);
    expect(status.evictions.blobs).toBeGreaterThan(0);
    // The background run said what it did and how long it took.
    const runs = daemon.logLines().filter((l) => l.msg === 'eviction finished');
    expect(runs.length).toBe(status.evictions.runs);
    for (const r of runs) expect(r).toMatchObject({ removed: { blobs: expect.any(Number) }, reclaimedBytes: expect.any(Number), ms: expect.any(Number) });
    expect(runs.reduce((n, r) => n + (r.removed as { blobs: number }).blobs, 0)).toBe(status.evictions.blobs);
    // Every request once, whichever worker served it: three manifest PUTs, three manifest GETs.
    const manifests = 'route="/v2/<name>/manifests/<reference>"';
    expect(await query(`sum(buildcached_http_requests_total{method="PUT",${manifests},status="201"})`)).toBe(3);
    expect(await query(`sum(buildcached_http_requests_total{method="GET",${manifests},status="200"})`)).toBe(3);
    expect(await query('buildcached_cache_hits_total{kind="manifest"}')).toBe(3);
    // pushRef HEADs each of its 3 blobs first (all missing), then pullRef GETs them.
    expect(await query('buildcached_cache_misses_total{kind="blob_head"}')).toBe(9);
    expect(await query('buildcached_cache_hits_total{kind="blob_get"}')).toBe(9);
    // Three processes' resident memory, summed.
    expect(await query('buildcached_process_resident_memory_bytes')).toBeGreaterThan(3 * 20 * 1024 * 1024);
  });

  it('a scrape passes `promtool check metrics`, and metrics.listen serves the same scrape alone', async () => {
    const scrape = await request('GET', `${daemon.url}/metrics`);
    expect(scrape.status).toBe(200);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: scrape.body, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);

    const listening = daemon.logLines().find((l) => typeof l.metricsUrl === 'string');
    const metricsUrl = listening?.metricsUrl as string;
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const privateScrape = await request('GET', metricsUrl);
    expect(privateScrape.status).toBe(200);
    const samples = parseExposition(privateScrape.body.toString());
    const status = await cliJson<StatusJson>(['status', '--data', daemon.dataDir]);
    expect(sampleValue(samples, 'buildcached_blobs')).toBe(status.blobCount);
    // The same sums as on the main listener: the primary collects from the workers for this listener too.
    expect(sampleValue(samples, 'buildcached_cache_hits_total', { kind: 'manifest' })).toBe(3);
    // Only /metrics there: the registry is not served on the scraper's port.
    expect((await request('GET', metricsUrl.replace(/\/metrics$/, '/v2/'))).status).toBe(404);
  });
});

describe('metrics.enabled: false', () => {
  afterAll(cleanup);

  it('serves no /metrics (and counts nothing), on either listener', async () => {
    const dir = await makeTempDir('buildcached-nometrics-');
    const config = join(dir, 'config.yaml');
    await writeFile(config, 'metrics:\n  enabled: false\n  listen: 127.0.0.1:0\n');
    const d = await startDaemon({ args: ['--config', config, '--workers', '2'] });
    expect((await request('GET', `${d.url}/metrics`)).status).toBe(404);
    expect(d.logLines().some((l) => l.metricsUrl !== undefined)).toBe(false);
    expect((await request('GET', `${d.url}/v2/`)).status).toBe(200);
  });
});
