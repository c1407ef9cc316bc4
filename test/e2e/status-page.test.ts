/**
 * The status page (issue 12, item 3) in a real headless browser (Debian's chromium, driven by playwright-core):
 * served on the admin listener (here TCP on 127.0.0.1 with its bearer token, as a browser reaches it), it loads
 * with no console error and no request beyond itself, and shows a reference the test pushed, the hit rate over
 * time of the test's own lookups (summed over both workers), and with an S3 tier (s3rver) its backlog and failures.
 */
import { appendFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { cleanup, makeTempDir, requireTools, servingPids, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { pullRef, pushRef, randomLayers, startCache, status, waitFor, writeCacheConfig, type StatusJson } from '../helpers/cache-helpers.js';
import { RegistryClient, request } from '../helpers/registry-client.js';
import { S3_ENV, startS3, tierConfig } from '../helpers/s3.js';
import { hitTotals } from '../../src/cache/hit-history.js';

const TOOLS = { chromium: 'chromium' };
const skip = skipWithoutTools('status page', TOOLS);

/** Opens the status page as a browser with the admin token would, failing on any console error. */
async function openPage(browser: Browser, d: Daemon): Promise<{ page: Page; problems: string[]; requested: string[]; close: () => Promise<void> }> {
  const context = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${d.admin.token}` } });
  const page = await context.newPage();
  const problems: string[] = [];
  const requested: string[] = [];
  page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('request', (r) => requested.push(r.url()));
  const res = await page.goto(`${d.admin.url}/admin/`);
  expect(res?.status()).toBe(200);
  expect(res?.headers()['content-type']).toMatch(/^text\/html/);
  await page.waitForLoadState('load');
  return { page, problems, requested, close: () => context.close() };
}

const lookups = (s: StatusJson) => hitTotals(s.hitRate);

describe.skipIf(skip)('status page in chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    requireTools(TOOLS);
    // Root in CI: chromium's sandbox needs user namespaces it may not have there.
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await cleanup();
  });

  it('loads with no console error, requests nothing else, and shows the pushed reference and the hit rate over time', async () => {
    const d = await startDaemon({ args: ['--admin-listen', '127.0.0.1:0', '--workers', '2'] });
    // Each request on a connection of its own (the client's default), so that both workers answer some.
    const client = new RegistryClient(d.url);
    // The push HEADs its 3 blobs (misses), the pull GETs the manifest and the 3 blobs (hits).
    await pushRef(client, 'ci/page', 'main', randomLayers([40_000, 80_000]));
    expect((await pullRef(client, 'ci/page', 'main')).status).toBe('ok');
    expect(servingPids(d, 'ci/page').size).toBe(2);
    // Workers report their counts in batches: wait for all 7 lookups, then they must be exactly these.
    await waitFor('the lookups to reach the hit rate', async () => {
      const t = lookups(await status(d.url));
      return t.hits + t.misses >= 7;
    });
    const series = (await status(d.url)).hitRate;
    expect(hitTotals(series)).toEqual({ hits: 4, misses: 3, rate: 4 / 7 });
    expect(series.bucketSeconds).toBe(60);
    expect(series.windowSeconds).toBe(86_400);
    expect(series.points.length).toBeGreaterThanOrEqual(1);

    expect(d.admin.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    // Without the token the page is refused like the rest of the admin API.
    expect((await request('GET', `${d.admin.url}/admin/`)).status).toBe(401);

    const { page, problems, requested, close } = await openPage(browser, d);
    expect(problems).toEqual([]);
    expect(requested).toEqual([`${d.admin.url}/admin/`]);
    expect(await page.title()).toBe('buildcached status');
    const text = await page.locator('body').innerText();
    expect(text).toContain('ci/page:main');
    expect(text).toMatch(/used .+ of .+ \(\d+\.\d%\)/);
    // The charts are inline SVG: the disk gauge and the references by size, with the pushed one in it.
    expect(await page.locator('svg').count()).toBeGreaterThanOrEqual(2);
    expect(await page.locator('svg[aria-label="Top references by size"] text', { hasText: 'ci/page:main' }).count()).toBe(1);
    // The hit rate over time: the test's 7 lookups, in one or two columns (a quarter of an hour may have turned).
    expect(text).toContain('57.1% of 7 cache lookups in the last 24 h found (4 hits, 3 misses');
    const points = page.locator('svg[aria-label="Hit rate over time"] g.point');
    expect(await points.count()).toBeGreaterThanOrEqual(1);
    const titles = await points.locator('title').allTextContents();
    const counted = titles.map((t) => /of (\d+) lookups \((\d+) hits, (\d+) misses\)/.exec(t)!.slice(1).map(Number));
    expect(counted.reduce((a, [n, h, m]) => [a[0]! + n!, a[1]! + h!, a[2]! + m!], [0, 0, 0])).toEqual([7, 4, 3]);
    // No tier configured: no tier section.
    expect(text).not.toContain('S3 tier');
    await close();
  });

  it('with an S3 tier: shows its backlog, uploads, failures and last error, through an outage of the bucket', async () => {
    const s3 = await startS3();
    const configPath = await writeCacheConfig(await makeTempDir('buildcached-cfg-'), { maxBytes: '1GiB', pushGraceSeconds: 900, workers: 2 });
    await appendFile(configPath, tierConfig(s3.endpoint, s3.bucket));
    const t = await startCache({ maxBytes: 0, pushGraceSeconds: 0, configPath }, { args: ['--admin-listen', '127.0.0.1:0'], env: S3_ENV });
    const tier = async () => (await status(t.url)).tier!;
    await pushRef(t.client, 'ci/tier', 'main', randomLayers([30_000]));
    await waitFor('the upload backlog to drain', async () => (await tier()).backlog === 0, 30_000, 100);
    const up = await tier();
    expect(up.uploaded).toBeGreaterThan(0);

    const healthy = await openPage(browser, t);
    expect(healthy.problems).toEqual([]);
    const rowOf = async (p: Page, name: string) => p.locator('tr', { has: p.locator('th', { hasText: new RegExp(`^${name}$`) }) }).innerText();
    expect(await healthy.page.locator('h2', { hasText: 'S3 tier' }).count()).toBe(1);
    expect(await rowOf(healthy.page, 'backlog')).toMatch(/\b0 waiting to upload/);
    expect(await rowOf(healthy.page, 'uploaded')).toContain(`${up.uploaded} (`);
    expect(await rowOf(healthy.page, 'failed')).toMatch(/\b0 attempts/);
    expect(await rowOf(healthy.page, 'last error')).toContain('none since start');
    await healthy.close();

    // The bucket goes away: a push is kept locally and waits, and its uploads fail.
    await s3.stop();
    await pushRef(t.client, 'ci/tier', 'next', randomLayers([20_000, 10_000]));
    await waitFor('an upload to fail', async () => (await tier()).failed > 0 && (await tier()).degraded, 30_000, 100);
    const down = await tier();
    expect(down.backlog).toBeGreaterThan(0);

    const outage = await openPage(browser, t);
    expect(outage.problems).toEqual([]);
    const text = await outage.page.locator('body').innerText();
    expect(text).toContain('DEGRADED');
    // Nothing uploads while the bucket is away: the backlog stays as it was.
    expect(await rowOf(outage.page, 'backlog')).toContain(`${down.backlog} waiting to upload`);
    const failed = Number(/(\d+) attempts/.exec(await rowOf(outage.page, 'failed'))![1]);
    expect(failed).toBeGreaterThanOrEqual(down.failed);
    // Which upload failed last changes from one attempt to the next; why does not.
    expect(await rowOf(outage.page, 'last error')).toMatch(new RegExp(`\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z: S3 (HEAD|PUT) \\S+ failed: .*ECONNREFUSED 127\\.0\\.0\\.1:${s3.port}`));
    await outage.close();
  }, 90_000);
});
