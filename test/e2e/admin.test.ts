/**
 * Who may call the admin API (issue 9): never the registry's listener — a same-host reverse proxy makes every
 * request come from 127.0.0.1, and headers such as X-Forwarded-For are the client's to write — but a listener of
 * its own: the unix socket DATA/admin.sock (mode 0600) by default, or TCP with a bearer token. DATA/daemon.json
 * (mode 0600) says where; the CLI and the README's curl use it.
 */
import { spawnSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup, runDaemonExpectingFailure, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { request } from '../helpers/registry-client.js';
import { adminRequest, cliJson, type StatusJson } from '../helpers/cache-helpers.js';

const ADMIN_PATHS: Array<[string, string]> = [
  ['GET', '/admin/v1/status'],
  ['GET', '/admin/v1/du'],
  ['GET', '/admin/v1/references'],
  ['GET', '/admin/'],
  ['POST', '/admin/v1/gc'],
  ['POST', '/admin/v1/prune?olderThan=1s'],
  ['POST', '/admin/v1/verify'],
];

/** Every admin path on the registry's port is an unknown path (404 with an error body), whatever the headers say. */
async function expectNoAdminOnMainListener(d: Daemon): Promise<void> {
  for (const [method, path] of ADMIN_PATHS) {
    const variants: Array<Record<string, string>> = [{}, { 'X-Forwarded-For': '127.0.0.1' }, { 'X-Real-IP': '127.0.0.1', Forwarded: 'for=127.0.0.1' }];
    for (const headers of variants) {
      // From 127.0.0.1, with or without forwarding headers: exactly what a same-host proxy sends on.
      const res = await request(method, `${d.url}${path}`, { headers });
      expect(res.status, `${method} ${path} on the registry port`).toBe(404);
      expect(JSON.parse(res.body.toString()).errors[0].code).toBe('UNSUPPORTED');
    }
  }
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

describe('admin API: its own listener', () => {
  afterEach(cleanup);

  it.each([1, 2])('with %s worker(s): refused on the registry port even from 127.0.0.1, served on DATA/admin.sock (0600)', async (workers) => {
    const d = await startDaemon({ args: ['--workers', String(workers)] });
    await expectNoAdminOnMainListener(d);

    const socket = join(d.dataDir, 'admin.sock');
    expect(d.admin).toEqual({ url: `unix:${socket}` });
    expect((await stat(socket)).isSocket()).toBe(true);
    expect(await mode(socket)).toBe(0o600);
    expect(await mode(join(d.dataDir, 'daemon.json'))).toBe(0o600);
    const owner = JSON.parse(await readFile(join(d.dataDir, 'daemon.json'), 'utf8')) as Record<string, unknown>;
    expect(owner).toEqual({ pid: d.pid, url: d.url, adminUrl: `unix:${socket}` });

    const status = await adminRequest(d.admin, 'GET', '/admin/v1/status');
    expect(status.status).toBe(200);
    expect((JSON.parse(status.body.toString()) as StatusJson).blobCount).toBe(0);
    const gc = await adminRequest(d.admin, 'POST', '/admin/v1/gc?dryRun=1');
    expect(gc.status).toBe(200);
    // The CLI finds the socket through daemon.json.
    expect((await cliJson<StatusJson>(['status', '--data', d.dataDir])).blobCount).toBe(0);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    // A clean stop removes the socket and daemon.json.
    await expect(stat(socket)).rejects.toThrow(/ENOENT/);
  }, 60_000);

  it('the README\'s curl line works against the socket', async () => {
    if (skipWithoutTools('the curl check', { curl: 'curl' })) return;
    const d = await startDaemon();
    const r = spawnSync('curl', ['-sS', '--unix-socket', join(d.dataDir, 'admin.sock'), 'http://localhost/admin/v1/status'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as StatusJson).references).toEqual([]);
  });

  it('after kill -9 the stale socket is replaced on restart', async () => {
    const d = await startDaemon();
    await d.kill9();
    const again = await startDaemon({ dataDir: d.dataDir, retryWhileLockedMs: 40_000 });
    expect((await adminRequest(again.admin, 'GET', '/admin/v1/status')).status).toBe(200);
  }, 60_000);

  it('admin.listen on TCP always wants a bearer token: a random one per start, in daemon.json; the CLI uses it', async () => {
    const d = await startDaemon({ args: ['--workers', '2', '--admin-listen', '127.0.0.1:0'] });
    await expectNoAdminOnMainListener(d);
    expect(d.admin.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(d.admin.token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const attempts: Array<Record<string, string>> = [{}, { 'X-Forwarded-For': '127.0.0.1' }, { Authorization: 'Bearer wrong' }, { Authorization: `Basic ${d.admin.token}` }];
    for (const headers of attempts) {
      const res = await request('GET', `${d.admin.url}/admin/v1/status`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
      expect(JSON.parse(res.body.toString()).errors[0].code).toBe('UNAUTHORIZED');
    }
    expect((await adminRequest(d.admin, 'GET', '/admin/v1/status')).status).toBe(200);
    // The CLI talks to it with node:http (fetch would refuse some ports outright) and the recorded token.
    expect((await cliJson<StatusJson>(['status', '--data', d.dataDir])).blobCount).toBe(0);
  }, 60_000);

  it('a configured admin.token is required on the socket too', async () => {
    const token = 'operator-chosen-token-0123456789';
    const d = await startDaemon({ env: { BUILDCACHED_ADMIN_TOKEN: token } });
    expect(d.admin).toEqual({ url: `unix:${join(d.dataDir, 'admin.sock')}`, token });
    expect((await adminRequest({ url: d.admin.url }, 'GET', '/admin/v1/status')).status).toBe(401);
    expect((await adminRequest(d.admin, 'GET', '/admin/v1/status')).status).toBe(200);
  });

  it('prune without olderThan is 400 with a message, not 405', async () => {
    const d = await startDaemon();
    for (const q of ['', '?olderThan=', '?olderThan=60', '?olderThan=soon']) {
      const res = await adminRequest(d.admin, 'POST', `/admin/v1/prune${q}`);
      expect(res.status, q).toBe(400);
      const e = JSON.parse(res.body.toString()).errors[0] as { code: string; message: string };
      expect(e.code).toBe('PARAMETER_INVALID');
      expect(e.message).toMatch(/olderThan/);
    }
    expect((await adminRequest(d.admin, 'GET', '/admin/v1/nope')).status).toBe(404);
  });

  it('a socket path too long for a unix socket is refused at start with a message naming admin.listen', async () => {
    const r = await runDaemonExpectingFailure({ env: { BUILDCACHED_ADMIN_LISTEN: `unix:/tmp/${'x'.repeat(120)}.sock` } });
    expect(r.listened).toBe(false);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/admin\.listen/);
    expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
  });
});
