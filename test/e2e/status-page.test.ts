/**
 * The status page (issue 12, item 3) in a real headless browser (Debian's chromium, driven by playwright-core):
 * served on the admin listener (here TCP on 127.0.0.1 with its bearer token, as a browser reaches it), it loads
 * with no console error and no request beyond itself, and shows a reference the test pushed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { cleanup, requireTools, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { pushRef, randomLayers } from '../helpers/cache-helpers.js';
import { RegistryClient, request } from '../helpers/registry-client.js';

const TOOLS = { chromium: 'chromium' };
const skip = skipWithoutTools('status page', TOOLS);

describe.skipIf(skip)('status page in chromium', () => {
  let d: Daemon;
  let browser: Browser;
  beforeAll(async () => {
    requireTools(TOOLS);
    d = await startDaemon({ args: ['--admin-listen', '127.0.0.1:0', '--workers', '2'] });
    const client = new RegistryClient(d.url);
    const layers = randomLayers([40_000, 80_000]);
    await pushRef(client, 'ci/page', 'main', layers);
    // Root in CI: chromium's sandbox needs user namespaces it may not have there.
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await cleanup();
  });

  it('loads with no console error, requests nothing else, and shows the pushed reference', async () => {
    expect(d.admin.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    // Without the token the page is refused like the rest of the admin API.
    expect((await request('GET', `${d.admin.url}/admin/`)).status).toBe(401);

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
    expect(problems).toEqual([]);
    expect(requested).toEqual([`${d.admin.url}/admin/`]);
    expect(await page.title()).toBe('buildcached status');
    const text = await page.locator('body').innerText();
    expect(text).toContain('ci/page:main');
    expect(text).toMatch(/used .+ of .+ \(\d+\.\d%\)/);
    // The charts are inline SVG: the disk gauge and the references by size, with the pushed one in it.
    expect(await page.locator('svg').count()).toBeGreaterThanOrEqual(2);
    expect(await page.locator('svg[aria-label="Top references by size"] text', { hasText: 'ci/page:main' }).count()).toBe(1);
    await context.close();
  });
});
