/**
 * The `buildcached serve` contract as an operator meets it: where settings come from (flags > env > config file >
 * defaults), clear one-line refusals for bad settings, a busy port, an unusable or already-used data dir, graceful
 * SIGTERM, and upload sessions that survive a restart.
 */
import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import http from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB } from '../helpers/content.js';
import { REPO_ROOT, cleanup, makeTempDir, runDaemonExpectingFailure, servingPids, sleep, startDaemon, type Daemon, type RunResult } from '../helpers/daemon.js';
import { cliJson, nextSecond, pushRef, randomLayers, runCli, startCache, type ReportJson } from '../helpers/cache-helpers.js';
import { RegistryClient, request, sha256, streamingRequest } from '../helpers/registry-client.js';
import { HEAP_FLOOR_FLAG } from '../../src/process/heap-floor.js';

/** A port that was free a moment ago (bind :0, read, close). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((ok) => srv.close(() => ok()));
  return port;
}

async function writeConfig(dir: string, name: string, yaml: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, yaml);
  return p;
}

/** A refusal is one clear message on stderr and a non-zero exit, never a listening daemon or a stack trace. */
function expectRefusal(r: RunResult, ...mentions: Array<string | RegExp>): void {
  expect(r.listened, `the daemon started although it should have refused:\n${r.stdout}`).toBe(false);
  expect(r.code, `exit status; stderr:\n${r.stderr}`).not.toBe(0);
  expect(r.code).not.toBeNull();
  for (const m of mentions) expect(r.stderr).toMatch(typeof m === 'string' ? new RegExp(m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : m);
  expect(r.stderr, 'a stack trace instead of a message').not.toMatch(/\n\s+at .+:\d+:\d+/);
}

async function stopOk(d: Daemon): Promise<void> {
  expect(await d.stop()).toEqual({ code: 0, signal: null });
}

describe('buildcached serve: configuration precedence', () => {
  afterEach(cleanup);

  it('config file < env < flags, key by key', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    const [p1, p2] = [await freePort(), await freePort()];
    const file = await writeConfig(dir, 'config.yaml', `listen: 127.0.0.1:${p1}\nstorage:\n  dir: ${dir}/from-file\n`);

    // File only (via --config).
    const a = await startDaemon({ listen: null, noDataFlag: true, args: ['--config', file] });
    expect(a.port).toBe(p1);
    expect(a.dataDir).toBe(`${dir}/from-file`);
    expect((await stat(join(dir, 'from-file', 'blobs'))).isDirectory()).toBe(true);
    await stopOk(a);

    // Env beats the file.
    const b = await startDaemon({
      listen: null,
      noDataFlag: true,
      args: ['--config', file],
      env: { BUILDCACHED_LISTEN: `127.0.0.1:${p2}`, BUILDCACHED_DATA: `${dir}/from-env` },
    });
    expect(b.port).toBe(p2);
    expect(b.dataDir).toBe(`${dir}/from-env`);
    await stopOk(b);

    // Env for one key, file for the other: merged key by key.
    const b2 = await startDaemon({ listen: null, noDataFlag: true, args: ['--config', file], env: { BUILDCACHED_DATA: `${dir}/from-env` } });
    expect(b2.port).toBe(p1);
    expect(b2.dataDir).toBe(`${dir}/from-env`);
    await stopOk(b2);

    // Flags beat env and file.
    const c = await startDaemon({
      listen: '127.0.0.1:0',
      dataDir: `${dir}/from-flag`,
      args: ['--config', file],
      env: { BUILDCACHED_LISTEN: `127.0.0.1:${p2}`, BUILDCACHED_DATA: `${dir}/from-env` },
    });
    expect([p1, p2]).not.toContain(c.port);
    expect(c.dataDir).toBe(`${dir}/from-flag`);
    await stopOk(c);
  }, 60_000);

  it('--config beats BUILDCACHED_CONFIG; BUILDCACHED_CONFIG is read when there is no flag', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    const [p1, p2] = [await freePort(), await freePort()];
    const envFile = await writeConfig(dir, 'env.yaml', `listen: 127.0.0.1:${p1}\n`);
    const flagFile = await writeConfig(dir, 'flag.yaml', `listen: 127.0.0.1:${p2}\n`);
    const viaEnv = await startDaemon({ listen: null, env: { BUILDCACHED_CONFIG: envFile } });
    expect(viaEnv.port).toBe(p1);
    await stopOk(viaEnv);
    const viaFlag = await startDaemon({ listen: null, args: ['--config', flagFile], env: { BUILDCACHED_CONFIG: envFile } });
    expect(viaFlag.port).toBe(p2);
    await stopOk(viaFlag);
  }, 60_000);

  it('defaults: data in ./data of the working directory, listening on 127.0.0.1:5000', async () => {
    const cwd = await makeTempDir('buildcached-cwd-');
    const d = await startDaemon({ cwd, noDataFlag: true });
    expect(d.dataDir).toBe(join(cwd, 'data'));
    expect((await stat(join(cwd, 'data', 'blobs'))).isDirectory()).toBe(true);
    await stopOk(d);

    // The default address: it either listens there, or names it when the port happens to be taken.
    const dataDir = join(cwd, 'other');
    let started: Daemon | undefined;
    try {
      started = await startDaemon({ listen: null, dataDir });
    } catch (e) {
      expect((e as Error).message).toMatch(/127\.0\.0\.1:5000/);
    }
    if (started) {
      expect(started.hostPort).toBe('127.0.0.1:5000');
      await stopOk(started);
    }
  }, 60_000);
});

describe('buildcached serve: refusals', () => {
  afterEach(cleanup);

  it('a bad value or an unknown key in the config file: non-zero exit, stderr names the key', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    const cases: Array<[string, string, Array<string | RegExp>]> = [
      ['bad-listen.yaml', 'listen: nope\n', ['listen']],
      ['unknown-top.yaml', 'listne: 127.0.0.1:0\n', ['listne']],
      ['unknown-nested.yaml', 'storage:\n  dri: /tmp/x\n', [/storage/, /dri/]],
      ['bad-size.yaml', 'registry:\n  maxManifestBytes: lots\n', ['registry.maxManifestBytes']],
      ['bad-bool.yaml', 'storage:\n  deleteEnabled: maybe\n', ['storage.deleteEnabled']],
      ['bad-yaml.yaml', 'listen: [unclosed\n', [/YAML|yaml/]],
    ];
    for (const [name, yaml, mentions] of cases) {
      const file = await writeConfig(dir, name, yaml);
      // No --listen flag, so that the file's own listen value is the one in force.
      const r = await runDaemonExpectingFailure({ listen: null, args: ['--config', file] });
      expectRefusal(r, ...mentions);
    }
    const missing = await runDaemonExpectingFailure({ listen: null, args: ['--config', join(dir, 'nope.yaml')] });
    expectRefusal(missing, join(dir, 'nope.yaml'));
  }, 60_000);

  it('a bad value from the environment or a flag names the key', async () => {
    expectRefusal(await runDaemonExpectingFailure({ listen: null, env: { BUILDCACHED_LISTEN: 'nope' } }), 'listen');
    expectRefusal(await runDaemonExpectingFailure({ listen: '127.0.0.1:99999' }), 'listen');
    expectRefusal(await runDaemonExpectingFailure({ listen: 'localhost' }), 'listen');
  }, 30_000);

  it('a port in use: non-zero exit with a message naming the address; the data dir is left free', async () => {
    const blocker = net.createServer();
    await new Promise<void>((ok) => blocker.listen(0, '127.0.0.1', ok));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const dataDir = join(await makeTempDir('buildcached-cli-'), 'data');
      const r = await runDaemonExpectingFailure({ listen: `127.0.0.1:${port}`, dataDir });
      expectRefusal(r, `127.0.0.1:${port}`, /in use/i);
      // It released the data dir on the way out: the next start on it works.
      const d = await startDaemon({ dataDir });
      await stopOk(d);
    } finally {
      await new Promise<void>((ok) => blocker.close(() => ok()));
    }
  }, 30_000);

  it('an unusable data dir (a path under a regular file): non-zero exit with a message naming it', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    await writeFile(join(dir, 'file'), 'not a directory');
    const bad = join(dir, 'file', 'data');
    expectRefusal(await runDaemonExpectingFailure({ dataDir: bad }), bad);
  }, 30_000);

  it('a second daemon on the same data dir refuses and names the first one\'s pid; the first keeps serving', async () => {
    const first = await startDaemon();
    const r = await runDaemonExpectingFailure({ dataDir: first.dataDir });
    expectRefusal(r, `pid ${first.pid}`);
    expect((await request('GET', `${first.url}/v2/`)).status).toBe(200);
    await stopOk(first);
  }, 30_000);
});

describe('buildcached serve: lifecycle', () => {
  afterEach(cleanup);

  /**
   * A slow CI runner is mid-upload (BuildKit style: POST, then one PUT carrying the whole blob) when SIGTERM
   * arrives. Returns once the upload got its answer and the daemon exited, or `exitWaitMs` passed.
   */
  async function slowUploadThroughSigterm(keepAlive: boolean, exitWaitMs: number) {
    const d = await startDaemon();
    const c = new RegistryClient(d.url);
    const blob = randomBytes(8 * MiB);
    const digest = sha256(blob);
    const agent = keepAlive ? new http.Agent({ keepAlive: true }) : undefined;
    try {
      const loc = await c.startUpload('cli/slow');
      const put = streamingRequest('PUT', RegistryClient.withDigest(loc, digest), { 'Content-Length': blob.length, 'Content-Type': 'application/octet-stream' }, agent);
      const pieces = 32;
      const piece = blob.length / pieces;
      for (let i = 0; i < pieces / 2; i++) await put.write(blob.subarray(i * piece, (i + 1) * piece));
      d.terminate();
      await sleep(300);
      // Stopping: no new connections are taken.
      await expect(request('GET', `${d.url}/v2/`)).rejects.toThrow(/ECONNREFUSED|ECONNRESET|socket hang up/);
      for (let i = pieces / 2; i < pieces; i++) {
        await put.write(blob.subarray(i * piece, (i + 1) * piece));
        await sleep(40);
      }
      put.end();
      const res = await put.response;
      const answered = Date.now();
      const exit = await Promise.race([d.exited, sleep(exitWaitMs).then(() => 'still running' as const)]);
      return { d, res, digest, exit, exitMs: Date.now() - answered };
    } finally {
      agent?.destroy();
    }
  }

  it('SIGTERM during a slow upload: the upload finishes (201), new connections are refused, exit 0', async () => {
    const { d, res, digest, exit } = await slowUploadThroughSigterm(false, 30_000);
    expect(res.status, res.body.toString()).toBe(201);
    expect(res.headers['docker-content-digest']).toBe(digest);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await d.stop()).toEqual({ code: 0, signal: null });

    // The finished upload was committed.
    const again = await startDaemon({ dataDir: d.dataDir });
    const got = await new RegistryClient(again.url).getBlobDigest('cli/slow', digest);
    expect(got.status).toBe(200);
    expect(got.digest).toBe(digest);
    await stopOk(again);
  }, 60_000);

  it('SIGTERM during a slow upload on a keep-alive connection: exits promptly once the upload is answered', async () => {
    // Real clients (BuildKit, containerd, docker) keep idle connections open for 90 s; shutdown must not wait
    // for them (nor sit out shutdownTimeout) once no request is in flight.
    const { res, exit, exitMs } = await slowUploadThroughSigterm(true, 15_000);
    expect(res.status, res.body.toString()).toBe(201);
    expect(exit, `still running ${exitMs} ms after its last request was answered (Connection: ${String(res.headers.connection)})`).toEqual({
      code: 0,
      signal: null,
    });
  }, 60_000);

  it('SIGTERM right after the "listening on" line: exits 0 promptly, no worker left behind', async () => {
    // Operators and supervisors may stop a daemon at any moment, including while it is still starting workers.
    const d = await startDaemon({ waitForWorkers: false, args: ['--workers', '4'] });
    const t0 = Date.now();
    const exit = await d.stop(10_000);
    expect(exit, `no exit within 10 s of SIGTERM (then SIGKILLed); stdout:\n${d.logs()}\nstderr:\n${d.stderr()}`).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 30_000);

  it('upload sessions survive a restart: PATCH part, restart, PATCH the rest, PUT → 201', async () => {
    const d1 = await startDaemon();
    const blob = randomBytes(5 * MiB + 4321);
    const digest = sha256(blob);
    const cut = 2 * MiB + 17;
    const loc = await new RegistryClient(d1.url).startUpload('cli/resume');
    const path = new URL(loc).pathname + new URL(loc).search;
    const p1 = await request('PATCH', loc, { body: blob.subarray(0, cut), headers: { 'Content-Range': `0-${cut - 1}`, 'Content-Type': 'application/octet-stream' } });
    expect(p1.status).toBe(202);
    expect(p1.headers.range).toBe(`0-${cut - 1}`);
    await stopOk(d1);

    const d2 = await startDaemon({ dataDir: d1.dataDir });
    const status = await request('GET', `${d2.url}${path}`);
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe(`0-${cut - 1}`);
    const p2 = await request('PATCH', `${d2.url}${path}`, {
      body: blob.subarray(cut),
      chunked: true,
      headers: { 'Content-Range': `${cut}-${blob.length - 1}`, 'Content-Type': 'application/octet-stream' },
    });
    expect(p2.status, p2.body.toString()).toBe(202);
    expect(p2.headers.range).toBe(`0-${blob.length - 1}`);
    const done = await request('PUT', RegistryClient.withDigest(new URL(p2.headers.location ?? path, d2.url).toString(), digest));
    expect(done.status, done.body.toString()).toBe(201);
    expect(done.headers['docker-content-digest']).toBe(digest);
    const got = await new RegistryClient(d2.url).getBlobDigest('cli/resume', digest);
    expect(got.digest).toBe(digest);
    expect(got.length).toBe(blob.length);
    await stopOk(d2);
  }, 60_000);

  it('the data directory is created when missing, including parents', async () => {
    const dir = join(await makeTempDir('buildcached-cli-'), 'a', 'b', 'data');
    const d = await startDaemon({ dataDir: dir });
    expect(d.dataDir).toBe(dir);
    expect((await stat(join(dir, 'blobs'))).isDirectory()).toBe(true);
    await stopOk(d);
    await mkdir(dir, { recursive: true });
  }, 30_000);
});

describe('admin commands: what an operator runs into', () => {
  afterEach(cleanup);

  it('status, du, gc and prune on a directory that holds no store say so, exit non-zero and create nothing', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    const typo = join(dir, 'dta');
    const empty = join(dir, 'empty');
    await mkdir(empty);
    for (const target of [typo, empty]) {
      for (const cmd of [['status'], ['du'], ['gc', '--dry-run'], ['prune', '--older-than', '7d']]) {
        const r = await runCli([...cmd, '--data', target]);
        expect(r.code, `${cmd[0]} on ${target}: ${r.stdout}`).not.toBe(0);
        expect(r.stderr).toContain(`no buildcached store in ${target}`);
        expect(r.stderr, 'a stack trace instead of a message').not.toMatch(/\n\s+at .+:\d+:\d+/);
      }
    }
    await expect(stat(typo)).rejects.toThrow(/ENOENT/);
    expect(await readdir(empty)).toEqual([]);
  }, 60_000);

  it('--repo org/ (with the slash) means the repositories under org, in du and prune, with and without a daemon', async () => {
    const d = await startCache({ maxBytes: 100 * MiB, pushGraceSeconds: 1 });
    await pushRef(d.client, 'org/app', 'main', randomLayers([1000]));
    await pushRef(d.client, 'other/app', 'main', randomLayers([1000]));
    await nextSecond();
    const data = ['--data', d.dataDir];
    const check = async () => {
      for (const prefix of ['org', 'org/', 'org//']) {
        const du = await cliJson<Array<{ repo: string; tag?: string }>>(['du', '--repo', prefix, ...data]);
        expect(du.map((r) => `${r.repo}:${r.tag}`), `du --repo ${prefix}`).toEqual(['org/app:main']);
        const dry = await cliJson<ReportJson>(['prune', '--older-than', '1ms', '--repo', prefix, '--dry-run', ...data]);
        expect(dry.steps.filter((s) => s.kind === 'tag').map((s) => `${s.repo}:${s.tag}`), `prune --repo ${prefix}`).toEqual(['org/app:main']);
      }
    };
    await check();
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    await check();
  }, 60_000);

  it('a daemon that does not answer: one line naming it and the address, no stack trace', async () => {
    const port = await freePort(); // free: nothing answers there
    for (const adminUrl of [`http://127.0.0.1:${port}`, 'unix:/nonexistent/admin.sock']) {
      const data = join(await makeTempDir('buildcached-cli-'), 'data');
      await mkdir(join(data, 'blobs'), { recursive: true });
      // A live pid (this test runner), so the CLI takes the daemon for running.
      await writeFile(join(data, 'daemon.json'), JSON.stringify({ pid: process.pid, url: `http://127.0.0.1:${port}`, adminUrl }));
      const r = await runCli(['status', '--data', data]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`pid ${process.pid}`);
      expect(r.stderr).toContain(adminUrl);
      expect(r.stderr).toMatch(/ECONNREFUSED|ENOENT/);
    }
  });

  it('--version prints the package version; health answers for a running daemon only', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    const v = await runCli(['--version']);
    expect([v.code, v.stdout.trim()]).toEqual([0, pkg.version]);

    const d = await startDaemon({ args: ['--workers', '2'] });
    const ok = await runCli(['health', '--data', d.dataDir]);
    expect([ok.code, ok.stdout.trim()]).toEqual([0, 'ok']);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    const gone = await runCli(['health', '--data', d.dataDir]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`no daemon runs on ${d.dataDir}`);
  }, 60_000);
});

describe('buildcached serve: log lines', () => {
  afterEach(cleanup);

  it('a worker that dies is logged once, as workerPid beside the primary\'s own pid', async () => {
    const d = await startDaemon({ args: ['--workers', '2'] });
    const [victim] = d.workers();
    process.kill(victim!, 'SIGKILL'); // a worker this test's daemon forked
    let raw = '';
    for (let i = 0; i < 100 && !raw; i++) {
      raw = d.logs().split('\n').find((l) => l.includes('worker exited unexpectedly')) ?? '';
      if (!raw) await sleep(50);
    }
    expect(raw, d.logs()).not.toBe('');
    // JSON.parse keeps the last of two equal keys silently: count them in the raw line.
    expect(raw.match(/"pid":/g)).toHaveLength(1);
    expect(JSON.parse(raw)).toMatchObject({ pid: d.pid, workerPid: victim, signal: 'SIGKILL' });
    await stopOk(d);
  }, 30_000);
});

describe('buildcached serve: the configuration workers serve with', () => {
  afterEach(cleanup);

  it('a replacement worker serves with the configuration the daemon started with, not the file as edited since', async () => {
    const dir = await makeTempDir('buildcached-cli-');
    const file = await writeConfig(dir, 'c.yaml', 'storage:\n  deleteEnabled: false\n');
    const d = await startDaemon({ args: ['--workers', '2', '--config', file] });
    const blob = `${d.url}/v2/cfg/app/blobs/sha256:${'0'.repeat(64)}`;
    // Edited while the daemon runs: valid but different, and then not even YAML.
    for (const edit of ['storage:\n  deleteEnabled: true\n', 'storage: [unclosed\n']) {
      await writeFile(file, edit);
      const before = d.workers();
      for (const pid of before) process.kill(pid, 'SIGKILL'); // workers this test's daemon forked
      let now: number[] = [];
      for (let i = 0; i < 200; i++) {
        now = d.workers();
        if (now.length === 2 && now.every((p) => !before.includes(p))) break;
        await sleep(50);
      }
      expect(now.filter((p) => !before.includes(p)), d.logs()).toHaveLength(2);
      // Each request on a connection of its own: the primary hands connections to the workers in turn.
      const served = new Set<unknown>();
      for (let i = 0; i < 100 && served.size < 2; i++) {
        // With every worker gone at once the port is closed until a replacement listens again.
        const r = await request('DELETE', blob).catch(async (e: NodeJS.ErrnoException) => {
          if (e.code !== 'ECONNREFUSED') throw e;
          await sleep(100);
          return undefined;
        });
        if (!r) continue;
        expect(r.status, r.body.toString()).toBe(405);
        expect(JSON.parse(r.body.toString()).errors[0].code).toBe('UNSUPPORTED');
        served.clear();
        for (const pid of servingPids(d, 'cfg/app')) if (now.includes(pid as number)) served.add(pid);
      }
      expect(served.size).toBe(2);
    }
    await stopOk(d);
  }, 60_000);

  it('a configuration beyond what one environment variable may hold (128 KiB) reaches every worker, in a file only the daemon reads', async () => {
    const rules = Array.from({ length: 3000 }, (_, i) => `    - repositories: ["team${i}/**"]\n      tags: ["*"]\n      to: [main, master]\n`).join('');
    const file = await writeConfig(await makeTempDir('buildcached-cli-'), 'big.yaml', `registry:\n  fallback:\n${rules}`);
    expect((await stat(file)).size).toBeGreaterThan(128 * 1024);
    const d = await startDaemon({ args: ['--workers', '2', '--config', file] });
    expect(d.workers()).toHaveLength(2);
    const handedOver = join(d.dataDir, 'state', 'worker-config.json');
    expect((await stat(handedOver)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(handedOver, 'utf8')).registry.fallback).toHaveLength(3000);
    const served = new Set<unknown>();
    for (let i = 0; i < 40 && served.size < 2; i++) {
      expect((await request('GET', `${d.url}/v2/team2999/app/tags/list`)).status).toBe(404);
      for (const pid of servingPids(d, 'team2999/app')) served.add(pid);
    }
    expect(served.size).toBe(2);
    await stopOk(d);
  }, 60_000);
});

describe('buildcached serve: the heap floor', () => {
  afterEach(cleanup);

  it('each worker is started with the heap floor (src/process/heap-floor.ts), the primary as it was', async () => {
    const d = await startDaemon({ args: ['--workers', '2'] });
    const argv = async (pid: number) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    expect(d.workers()).toHaveLength(2);
    for (const pid of d.workers()) expect(await argv(pid)).toContain(HEAP_FLOOR_FLAG);
    expect(await argv(d.pid)).not.toContain(HEAP_FLOOR_FLAG);
    await stopOk(d);
  }, 30_000);
});

describe('buildcached serve: the budget against the disk', () => {
  afterEach(cleanup);

  const warning = (d: Daemon) => d.logLines().find((l) => typeof l.msg === 'string' && l.msg.startsWith('storage.maxBytes'));

  it('a budget above what is free plus what the store holds is said at start-up; one that fits is not', async () => {
    // 100% of a filesystem that holds anything else (the OS, this repository) is more than is free.
    const over = await startDaemon({ env: {}, args: ['--config', await writeConfig(await makeTempDir('buildcached-cli-'), 'c.yaml', 'storage:\n  maxBytes: 100%\n')] });
    expect(warning(over), over.logs()).toMatchObject({ level: 40 });
    expect(String(warning(over)?.msg)).toContain("100% of the filesystem's size");
    await stopOk(over);
    const fits = await startDaemon({ args: ['--config', await writeConfig(await makeTempDir('buildcached-cli-'), 'c.yaml', 'storage:\n  maxBytes: 1MiB\n')] });
    expect(warning(fits)).toBeUndefined();
    await stopOk(fits);
  }, 30_000);
});

describe('admin commands: whose store it is', () => {
  afterEach(cleanup);

  it.skipIf(process.getuid?.() !== 0)('as root, a stopped store of another user is left alone; its daemon.json is not readable by others', async () => {
    const d = await startDaemon();
    // Another user's daemon: its daemon.json (0600) is unreadable to that other user… (checked as uid 65534)
    const asNobody = await runCli(['status', '--data', d.dataDir], 30_000, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--']);
    expect(asNobody.code).toBe(1);
    expect(asNobody.stderr).toMatch(/cannot read .*daemon\.json: permission denied/);
    expect(await d.stop()).toEqual({ code: 0, signal: null });
    // …and root does not write into a stopped store that belongs to someone else.
    await chownTree(d.dataDir, 65534);
    const r = await runCli(['gc', '--data', d.dataDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${d.dataDir} belongs to uid 65534`);
    expect(r.stderr).toContain('sudo -u');
  }, 30_000);
});

async function chownTree(dir: string, uid: number): Promise<void> {
  await chown(dir, uid, uid);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) await chownTree(join(dir, e.name), uid);
    else await chown(join(dir, e.name), uid, uid);
  }
}
