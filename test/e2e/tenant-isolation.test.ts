/**
 * Tenant isolation with the real daemon and two worker processes: a blob pushed to b/x through one connection is
 * refused through a/y (HEAD, GET, mount) on fresh connections served by both workers, while b/x reads it there
 * too; the membership is still there after a clean restart and after kill -9.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, makeTempDir, servingPids, startDaemon, type Daemon } from '../helpers/daemon.js';
import { RegistryClient, request, sha256 } from '../helpers/registry-client.js';

afterEach(cleanup);

const TRIES = 30;

/** Pids of the processes that logged a request in `repo`. */

/** Statuses of `method path`, each on a new connection (so the cluster spreads them over the workers). */
async function statuses(d: Daemon, method: string, path: string): Promise<Set<number>> {
  const seen = new Set<number>();
  for (let i = 0; i < TRIES; i++) seen.add((await request(method, `${d.url}${path}`, { agent: new http.Agent({ keepAlive: false }) })).status);
  return seen;
}

async function expectIsolated(d: Daemon, digest: string): Promise<void> {
  expect(await statuses(d, 'HEAD', `/v2/b/x/blobs/${digest}`)).toEqual(new Set([200]));
  expect(await statuses(d, 'GET', `/v2/b/x/blobs/${digest}`)).toEqual(new Set([200]));
  expect(await statuses(d, 'HEAD', `/v2/a/y/blobs/${digest}`)).toEqual(new Set([404]));
  expect(await statuses(d, 'GET', `/v2/a/y/blobs/${digest}`)).toEqual(new Set([404]));
  // A mount that may not read the blob starts an upload instead (202), with or without from.
  expect(await statuses(d, 'POST', `/v2/a/y/blobs/uploads/?mount=${digest}`)).toEqual(new Set([202]));
  expect(await statuses(d, 'POST', `/v2/a/y/blobs/uploads/?mount=${digest}&from=c/z`)).toEqual(new Set([202]));
  expect(servingPids(d, 'a/y').size, 'both workers answered for a/y').toBe(2);
  expect(servingPids(d, 'b/x').size, 'both workers answered for b/x').toBe(2);
}

describe('tenant isolation with two workers', () => {
  it('holds on every worker, across a restart and a kill -9', async () => {
    const dataDir = await makeTempDir();
    const config = join(await makeTempDir(), 'config.yaml');
    // Every refused mount opens an upload session: no per-client cap for the many this test opens.
    await writeFile(config, 'registry:\n  tenantIsolation: "on"\nstorage:\n  maxUploadSessionsPerClient: 0\n');
    const start = () => startDaemon({ dataDir, args: ['--config', config, '--workers', '2'], retryWhileLockedMs: 45_000 });

    let d = await start();
    // One keep-alive connection: one worker commits; the others learn of it only from the disk.
    const one = new RegistryClient(d.url, new http.Agent({ keepAlive: true, maxSockets: 1 }));
    const secret = randomBytes(4096);
    expect((await one.pushBlob('b/x', secret, 'post-put')).status).toBe(201);
    await expectIsolated(d, sha256(secret));

    // A mount from b/x into m/n succeeds, and then m/n reads it on every worker.
    const shared = randomBytes(2048);
    expect((await one.pushBlob('b/x', shared, 'monolithic-post')).status).toBe(201);
    expect((await one.req('POST', `/v2/m/n/blobs/uploads/?mount=${sha256(shared)}&from=b/x`)).status).toBe(201);
    expect(await statuses(d, 'HEAD', `/v2/m/n/blobs/${sha256(shared)}`)).toEqual(new Set([200]));
    one.agent?.destroy();

    await d.stop();
    d = await start();
    await expectIsolated(d, sha256(secret));
    expect(await statuses(d, 'HEAD', `/v2/m/n/blobs/${sha256(shared)}`)).toEqual(new Set([200]));

    // Acknowledged right before kill -9: still there after it.
    const late = randomBytes(1024);
    const two = new RegistryClient(d.url, new http.Agent({ keepAlive: true, maxSockets: 1 }));
    expect((await two.pushBlob('b/x', late, 'post-put')).status).toBe(201);
    two.agent?.destroy();
    await d.kill9();
    d = await start();
    await expectIsolated(d, sha256(secret));
    await expectIsolated(d, sha256(late));
    await d.stop();
  }, 120_000);
});
