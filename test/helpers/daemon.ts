/**
 * Runs the real buildcached daemon (dist/main.js, built by `npx tsc -p .`) as a child process on a loopback port,
 * for end-to-end tests. Every process and temp dir made here is tracked; call `cleanup()` from afterEach/afterAll.
 * Only processes started by these helpers are ever signalled, by their own pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DAEMON_MAIN = join(REPO_ROOT, 'dist', 'main.js');

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonOptions {
  /** Data dir to use; a fresh temp dir when absent. Passed as `--data` unless `noDataFlag`. */
  dataDir?: string;
  /** `--listen` value; default 127.0.0.1:0 (ephemeral). `null` passes no --listen flag at all. */
  listen?: string | null;
  /** Leave out `--data` (to test env/config precedence); `dataDir` is then only what the test expects. */
  noDataFlag?: boolean;
  /** Extra CLI arguments after `serve`. */
  args?: string[];
  /** Extra environment; a value of undefined removes the variable. BUILDCACHED_* are removed unless given here. */
  env?: Record<string, string | undefined>;
  /** Working directory; os.tmpdir() by default, so a relative default data dir never lands in the repository. */
  cwd?: string;
  /** How long to wait for the "listening on" line. */
  startTimeoutMs?: number;
  /**
   * With several worker processes, "listening on" is printed once the first one listens. By default startDaemon
   * then waits (up to 10 s) until every worker has answered a request, so that tests start from a fully started
   * daemon. false = return at the "listening on" line.
   */
  waitForWorkers?: boolean;
  /**
   * Keep retrying for this long while the daemon refuses because the data dir is locked (used after kill -9,
   * where the previous holder's lock only goes stale after a while). 0 = no retry.
   */
  retryWhileLockedMs?: number;
}

/** Where a daemon's admin API answers (`unix:/path` or `http://127.0.0.1:PORT`) and the token it wants, if any. */
export interface AdminEndpoint {
  url: string;
  token?: string;
}

export interface Daemon {
  url: string;
  /** From DATA/daemon.json, as the CLI finds it. */
  admin: AdminEndpoint;
  /** `127.0.0.1:PORT`, as skopeo/buildah want it. */
  hostPort: string;
  port: number;
  /** The data dir the daemon reported in its "listening on" line. */
  dataDir: string;
  proc: ChildProcess;
  pid: number;
  /** stdout so far (JSON log lines). */
  logs(): string;
  stderr(): string;
  /** Parsed JSON log lines from stdout. */
  logLines(): Array<Record<string, unknown>>;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** Sends SIGTERM once (a second SIGTERM may mean "force" to the daemon) without waiting. */
  terminate(): void;
  /** SIGTERM (unless already sent), then wait for exit (SIGKILL after `timeoutMs`, which fails the returned
   *  exit code check). Throws if worker processes outlive the daemon. */
  stop(timeoutMs?: number): Promise<Exit>;
  /** Worker count the daemon reported in its "listening on" line (1 when it did not say). */
  workerCount: number;
  /** SIGKILL of the daemon and its worker processes at once (a crash); waits until all are gone. */
  kill9(): Promise<Exit>;
  /** Pids of the daemon's worker processes right now. */
  workers(): number[];
}

const running = new Set<ChildProcess>();
/** Admin endpoints of the daemons started here, by registry URL: tests name a daemon by its URL. */
const adminEndpoints = new Map<string, AdminEndpoint>();

/** The admin endpoint of the daemon (started by these helpers) that serves the registry at `url`. */
export function adminEndpointOf(url: string): AdminEndpoint {
  const e = adminEndpoints.get(url);
  if (!e) throw new Error(`no daemon started by the test helpers serves ${url}`);
  return e;
}
const tempDirs = new Set<string>();
const cleanups: Array<() => Promise<void> | void> = [];

export function assertBuilt(): void {
  if (!existsSync(DAEMON_MAIN)) {
    throw new Error(`${DAEMON_MAIN} is missing: run \`npx tsc -p .\` before the e2e tests`);
  }
}

/** A fresh temp dir under os.tmpdir(), removed by cleanup(). */
export async function makeTempDir(prefix = 'buildcached-e2e-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Tracks a child process started by a test so that cleanup() kills it (by its pid) if it is still running. */
export function track(proc: ChildProcess): ChildProcess {
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  return proc;
}

/** Registers extra cleanup work (e.g. `buildah rm`), run by cleanup() before temp dirs are removed. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** Pids of every live descendant of `pid` (the daemon's worker processes), read from /proc. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** True while a process with this pid exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until none of `pids` is alive; returns those still alive after `timeoutMs`. */
export async function waitGone(pids: number[], timeoutMs = 10_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(25);
  }
}

/** SIGKILLs a process we started and all its descendants, each by pid, in one go; waits until all are gone. */
async function killTree(p: ChildProcess): Promise<void> {
  if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  const pids = [p.pid, ...descendants(p.pid)];
  const gone = waitExit(p);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await gone;
  await waitGone(pids);
}

/** Kills every still-running process started here (by pid), runs registered cleanups, removes temp dirs. */
export async function cleanup(): Promise<void> {
  const procs = [...running];
  running.clear();
  await Promise.all(procs.map((p) => killTree(p)));
  const fns = cleanups.splice(0);
  for (const fn of fns.reverse()) {
    try {
      await fn();
    } catch (e) {
      console.warn('e2e cleanup step failed:', e);
    }
  }
  const dirs = [...tempDirs];
  tempDirs.clear();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true, maxRetries: 3 })));
}

function waitExit(p: ChildProcess): Promise<Exit> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
}

function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BUILDCACHED_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function buildArgs(opts: DaemonOptions, dataDir: string): string[] {
  const args = [DAEMON_MAIN, 'serve'];
  const listen = opts.listen === undefined ? '127.0.0.1:0' : opts.listen;
  if (listen !== null) args.push('--listen', listen);
  if (!opts.noDataFlag) args.push('--data', dataDir);
  args.push(...(opts.args ?? []));
  return args;
}

/** Spawns the daemon process without waiting for anything. Tracked for cleanup. */
export function spawnDaemon(opts: DaemonOptions, dataDir: string): ChildProcess {
  assertBuilt();
  const proc = spawn(process.execPath, buildArgs(opts, dataDir), {
    cwd: opts.cwd ?? tmpdir(),
    env: childEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return track(proc);
}

class StartError extends Error {
  constructor(
    message: string,
    readonly exit: Exit,
    readonly stderr: string,
  ) {
    super(message);
  }
}

/**
 * Resolves with the "listening on" log line once `proc` prints it on stdout (the daemon, or a container runtime
 * running it); rejects when the process exits first or `timeoutMs` passes. `out`/`err` give the output so far.
 */
export function waitForListening(proc: ChildProcess, timeoutMs: number, out: () => string, err: () => string): Promise<Record<string, unknown>> {
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`daemon did not print "listening on" within ${timeoutMs} ms\nstdout:\n${out()}\nstderr:\n${err()}`));
    }, timeoutMs);
    const check = () => {
      for (const line of out().split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const j = JSON.parse(line) as Record<string, unknown>;
          if (typeof j.msg === 'string' && j.msg.startsWith('listening on') && typeof j.url === 'string') {
            finish();
            resolve(j);
            return;
          }
        } catch {
          // partial line; wait for more
        }
      }
    };
    const onExit = (e: Exit) => {
      finish();
      reject(new StartError(`daemon exited before listening (code ${e.code}, signal ${e.signal})\nstderr:\n${err()}\nstdout:\n${out()}`, e, err()));
    };
    const finish = () => {
      clearTimeout(timer);
      proc.stdout!.off('data', check);
    };
    proc.stdout!.on('data', check);
    void waitExit(proc).then(onExit);
    check();
  });
}

async function startOnce(opts: DaemonOptions, dataDir: string): Promise<Daemon> {
  const proc = spawnDaemon(opts, dataDir);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = waitExit(proc);
  const timeoutMs = opts.startTimeoutMs ?? 15_000;

  const listening = await waitForListening(proc, timeoutMs, () => out, () => err);

  const url = String(listening.url);
  const dataDirSeen = typeof listening.dataDir === 'string' ? listening.dataDir : dataDir;
  // daemon.json is written before the "listening on" line.
  const owner = JSON.parse(await readFile(join(dataDirSeen, 'daemon.json'), 'utf8')) as { adminUrl: string; adminToken?: string };
  const admin: AdminEndpoint = { url: owner.adminUrl, ...(owner.adminToken ? { token: owner.adminToken } : {}) };
  adminEndpoints.set(url, admin);
  void exited.then(() => adminEndpoints.get(url) === admin && adminEndpoints.delete(url));
  const workerCount = typeof listening.workers === 'number' ? listening.workers : 1;
  if (opts.waitForWorkers !== false && workerCount > 1) await waitForAllWorkers(url, workerCount, () => out, exited);
  const u = new URL(url);
  let termSent = false;
  const terminate = () => {
    if (termSent || proc.exitCode !== null || proc.signalCode !== null) return;
    termSent = true;
    proc.kill('SIGTERM');
  };
  const port = Number(u.port);
  const logs = () => out;
  const daemon: Daemon = {
    url,
    admin,
    hostPort: `${u.hostname}:${port}`,
    port,
    dataDir: dataDirSeen,
    proc,
    pid: proc.pid!,
    logs,
    stderr: () => err,
    logLines: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, unknown>];
          } catch {
            return [];
          }
        }),
    exited,
    workerCount,
    terminate,
    stop: async (timeoutMs = 20_000) => {
      const workers = descendants(proc.pid!);
      terminate();
      const timer = setTimeout(() => void killTree(proc), timeoutMs);
      const e = await exited;
      clearTimeout(timer);
      const orphans = await waitGone(workers, 5_000);
      if (orphans.length > 0) {
        for (const pid of orphans) process.kill(pid, 'SIGKILL');
        throw new Error(`worker processes ${orphans.join(', ')} outlived the daemon (pid ${proc.pid}) after SIGTERM`);
      }
      return e;
    },
    kill9: async () => {
      await killTree(proc);
      return exited;
    },
    workers: () => descendants(proc.pid!),
  };
  return daemon;
}

/**
 * Sends requests on fresh connections until `count` different processes (the `pid` of request log lines) have
 * answered, or 10 s passed. Connections are spread over the workers that listen, so this ends once all do.
 */
async function waitForAllWorkers(url: string, count: number, logs: () => string, exited: Promise<Exit>): Promise<void> {
  let dead = false;
  void exited.then(() => (dead = true));
  const started = Date.now();
  const deadline = started + 10_000;
  while (!dead && Date.now() < deadline) {
    await new Promise<void>((resolve) => {
      // Only which process answers matters here, not the certificate of a daemon serving TLS.
      const send = url.startsWith('https:') ? https.request : http.request;
      const req = send(`${url}/v2/`, { agent: false, rejectUnauthorized: false }, (res) => {
        res.resume();
        res.on('end', resolve);
        res.on('error', () => resolve());
      });
      req.on('error', () => resolve());
      req.end();
    });
    const pids = new Set<unknown>();
    for (const line of logs().split('\n')) {
      if (!line.includes('"method"')) continue;
      try {
        const j = JSON.parse(line) as { pid?: unknown; method?: unknown };
        if (j.method !== undefined && j.pid !== undefined) pids.add(j.pid);
      } catch {
        // partial line
      }
    }
    if (pids.size >= count) return;
    // No request lines at all after a second: request logging is off (log.level above info); nothing to wait on.
    if (pids.size === 0 && Date.now() - started > 1_000) return;
    await sleep(20);
  }
}

/** Starts the daemon and waits for its "listening on" line. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const dataDir = opts.dataDir ?? join(await makeTempDir('buildcached-data-'), 'data');
  const deadline = Date.now() + (opts.retryWhileLockedMs ?? 0);
  for (;;) {
    try {
      return await startOnce(opts, dataDir);
    } catch (e) {
      if (e instanceof StartError && /in use by another buildcached/.test(e.stderr) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      throw e;
    }
  }
}

export interface RunResult extends Exit {
  stdout: string;
  stderr: string;
  /** True when the daemon printed "listening on" (it is then killed by the helper). */
  listened: boolean;
}

/**
 * Runs the daemon expecting it to fail at start-up: resolves with its exit status and output. If it starts
 * listening instead, it is stopped and `listened` is true, so the test fails with a clear message.
 */
export async function runDaemonExpectingFailure(opts: DaemonOptions = {}, timeoutMs = 15_000): Promise<RunResult> {
  const dataDir = opts.dataDir ?? join(await makeTempDir('buildcached-data-'), 'data');
  const proc = spawnDaemon(opts, dataDir);
  let out = '';
  let err = '';
  let listened = false;
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    if (/"msg":"listening on/.test(out) && !listened) {
      listened = true;
      proc.kill('SIGKILL');
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const e = await waitExit(proc);
  clearTimeout(timer);
  return { ...e, stdout: out, stderr: err, listened };
}

/** True when `cmd` is on PATH. */
export function haveTool(cmd: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  return r.status === 0;
}

/**
 * Whether a suite needing Debian tools should be skipped: only when a tool is missing and we are not in CI
 * (in CI the suite runs and fails loudly). Prints the install hint once.
 */
export function skipWithoutTools(suite: string, tools: Record<string, string>): boolean {
  const missing = Object.keys(tools).filter((t) => !haveTool(t));
  if (missing.length === 0) return false;
  const hint = `apt-get install ${[...new Set(missing.map((t) => tools[t]))].join(' ')}`;
  if (process.env.CI === 'true') return false;
  console.warn(`[e2e] skipping ${suite}: ${missing.join(', ')} not installed (${hint})`);
  return true;
}

/** Throws a clear error when a tool is missing (used in beforeAll of suites that were not skipped, i.e. in CI). */
export function requireTools(tools: Record<string, string>): void {
  const missing = Object.keys(tools).filter((t) => !haveTool(t));
  if (missing.length > 0) {
    throw new Error(`${missing.join(', ')} not installed: run \`apt-get install ${[...new Set(missing.map((t) => tools[t]))].join(' ')}\``);
  }
}

/**
 * Pids of the processes that logged a request (in `repo` or a repository under it, when given): with two workers,
 * a set of two shows that requests for the same thing really reached both.
 */
export function servingPids(d: Pick<Daemon, 'logLines'>, repo?: string): Set<unknown> {
  const inScope = (r: unknown) => repo === undefined || r === repo || (typeof r === 'string' && r.startsWith(`${repo}/`));
  return new Set(d.logLines().filter((l) => l.method !== undefined && inScope(l.repo)).map((l) => l.pid));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
