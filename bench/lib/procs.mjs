// Starting, watching and stopping the processes under test. Only processes started here are ever signalled, and
// only by their own PID.
import { spawn } from 'node:child_process';
import { cpSync, createWriteStream, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DISTRIBUTION_BIN = process.env.BENCH_DISTRIBUTION_BIN ?? '/usr/bin/docker-registry';

/**
 * Copies the built daemon (dist/, config/, package.json; node_modules linked) into `dir`, so a rebuild of the
 * working tree during a long run cannot change what is being measured halfway.
 */
export function snapshotApp(dir) {
  mkdirSync(dir, { recursive: true });
  for (const part of ['dist', 'config', 'package.json']) cpSync(join(REPO_ROOT, part), join(dir, part), { recursive: true });
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/** Every child started and not yet stopped. */
const children = new Set();

function track(child, name, logFile) {
  const proc = {
    name,
    pid: child.pid,
    child,
    logFile,
    exited: false,
    exit: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  proc.exit.then(() => {
    proc.exited = true;
    children.delete(proc);
  });
  children.add(proc);
  return proc;
}

function killTree(pid, signal) {
  // Children first: a daemon's worker processes are ours too (we started their parent).
  for (const p of processTree(pid).reverse()) {
    try {
      process.kill(p, signal);
    } catch {}
  }
}

/** SIGTERM (lets buildcached finish and write a --cpu-prof profile), then SIGKILL of the tree after `graceMs`. */
export async function stop(proc, graceMs = 15_000) {
  if (proc.exited) return;
  const tree = processTree(proc.pid);
  try {
    process.kill(proc.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    for (const p of tree.reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {}
    }
  }, graceMs);
  await proc.exit;
  clearTimeout(timer);
}

export async function stopAll(graceMs) {
  await Promise.all([...children].map((p) => stop(p, graceMs)));
}

/** Last resort on process exit: synchronous SIGKILL of whatever is still running, by PID, with descendants. */
export function killAllSync() {
  for (const p of children) killTree(p.pid, 'SIGKILL');
}

function logTail(file, lines = 5) {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' | ').slice(0, 1500) || '(empty log)';
  } catch {
    return '(no log)';
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function tee(child, logFile) {
  const out = createWriteStream(logFile, { flags: 'a' });
  child.stderr.pipe(out);
  return out;
}

/** Waits for the first stdout line matching `pick`, keeps draining stdout into the log afterwards. */
function waitForLine(proc, out, pick, timeoutMs) {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: proc.child.stdout });
    let found = false;
    const timer = setTimeout(() => reject(new Error(`${proc.name} did not start within ${timeoutMs} ms; see ${proc.logFile}`)), timeoutMs);
    rl.on('line', (line) => {
      out.write(`${line}\n`);
      if (found) return;
      const v = pick(line);
      if (v !== undefined) {
        found = true;
        clearTimeout(timer);
        resolve(v);
      }
    });
    proc.exit.then(({ code, signal }) => {
      clearTimeout(timer);
      if (!found) reject(new Error(`${proc.name} exited (${code ?? signal}) before listening; see ${proc.logFile}`));
    });
  });
}

/** Polls GET /v2/ until the registry answers 200 (or 401, with auth), or fails if it exits first. */
async function waitReady(proc, url, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const get = url.startsWith('https:') ? (u, cb) => https.get(u, { rejectUnauthorized: false }, cb) : http.get;
  for (;;) {
    if (proc.exited) throw new Error(`${proc.name} exited before it was ready: ${logTail(proc.logFile)}`);
    const ok = await new Promise((resolve) => {
      const req = get(`${url}/v2/`, (res) => {
        res.resume();
        resolve(res.statusCode === 200 || res.statusCode === 401);
      });
      req.on('error', () => resolve(false));
      req.setTimeout(1000, () => req.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${proc.name} not ready at ${url} within ${timeoutMs} ms; see ${proc.logFile}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * buildcached with per-request logs off (BUILDCACHED_LOG_LEVEL=warn). Its "listening on <url>" line is an info line,
 * hidden at warn, so the ephemeral port is chosen here (bound to port 0, released, passed with --listen) and the
 * daemon is polled until it answers.
 */
export async function startBuildcached({ dataDir, logFile, profileDir, appDir = REPO_ROOT, workers, configFile, tls = false }) {
  await mkdir(dataDir, { recursive: true });
  const port = await freePort();
  // BENCH_BUILDCACHED_NODE_ARGS: extra node flags for experiments (e.g. "--trace-gc", "--max-semi-space-size=64").
  const extra = (process.env.BENCH_BUILDCACHED_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  // The heap floor as npm start, the systemd unit and the Docker image give it (src/process/heap-floor.ts): a
  // --workers 1 daemon runs as shipped, and with several workers the primary sees it and adds nothing.
  const nodeArgs = ['--initial-old-space-size=64', ...extra, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  const serveArgs = [
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--data',
    dataDir,
    ...(workers ? ['--workers', String(workers)] : []),
    ...(configFile ? ['--config', configFile] : []),
  ];
  const child = spawn(process.execPath, [...nodeArgs, 'dist/main.js', ...serveArgs], {
    cwd: appDir,
    env: { ...process.env, BUILDCACHED_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return serving(child, 'buildcached', logFile, port, tls ? 'https' : 'http');
}

/** Tracks a started registry, logs its output, and resolves once it answers on 127.0.0.1:`port`. */
async function serving(child, name, logFile, port, scheme = 'http') {
  const proc = track(child, name, logFile);
  child.stdout.pipe(tee(child, logFile));
  const url = `${scheme}://127.0.0.1:${port}`;
  await waitReady(proc, url, 20_000);
  return Object.assign(proc, { url });
}

/** CNCF distribution: filesystem storage, error-level logs, no access log, delete enabled; no auth and plain HTTP
 *  unless `htpasswd` (a file of bcrypt entries) or `tls` ({cert, key} files) are given. */
export async function startDistribution({ dataDir, configFile, logFile, descriptorCache = true, htpasswd, tls }) {
  await mkdir(dataDir, { recursive: true });
  const port = await freePort();
  // The same storage settings as the Debian package's /etc/docker/registry/config.yml (including the in-memory
  // blob descriptor cache, which every packaged config enables), minus auth and health checks.
  const yaml = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(dataDir)}`,
    ...(descriptorCache ? ['  cache:', '    blobdescriptor: inmemory'] : []),
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    ...(htpasswd ? ['auth:', '  htpasswd:', '    realm: bench', `    path: ${JSON.stringify(htpasswd)}`] : []),
    'http:',
    `  addr: 127.0.0.1:${port}`,
    ...(tls ? ['  tls:', `    certificate: ${JSON.stringify(tls.cert)}`, `    key: ${JSON.stringify(tls.key)}`] : []),
    '',
  ].join('\n');
  await writeFile(configFile, yaml);
  const child = spawn(DISTRIBUTION_BIN, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  return serving(child, 'distribution', logFile, port, tls ? 'https' : 'http');
}

/** The bare Node server (bench/lib/bare-server.mjs), the "Node loopback limit". */
export async function startBare({ file, logFile, workers = 1 }) {
  const script = fileURLToPath(new URL('./bare-server.mjs', import.meta.url));
  const child = spawn(process.execPath, [script, '--file', file, '--workers', String(workers)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = track(child, 'limit', logFile);
  const out = tee(child, logFile);
  const url = await waitForLine(proc, out, (l) => {
    try {
      return JSON.parse(l).url;
    } catch {
      return undefined;
    }
  }, 10_000);
  return Object.assign(proc, { url });
}

/** A process and all its descendants (buildcached's worker processes), from /proc/<pid>/task/<pid>/children. */
export function processTree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const kids = readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, 'utf8').trim();
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    } catch {}
  }
  return out;
}

function kbField(text, key) {
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
}

function memoryOfOne(pid) {
  const m = { rss: 0, hwm: 0, pss: 0 };
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    m.rss = kbField(status, 'VmRSS');
    m.hwm = kbField(status, 'VmHWM');
    m.pss = kbField(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss');
  } catch {}
  return m;
}

/**
 * Memory in bytes, summed over the process and its descendants (a daemon with worker processes is all of them):
 * VmRSS, VmHWM (peak RSS since start) and PSS. Summed RSS counts pages the processes share (the node binary, ~40
 * MiB) once per process; summed PSS splits them, so it is the fair total for a multi-process daemon. Summed VmHWM
 * is an upper bound of the combined peak (each process peaks at its own moment).
 */
export function memoryOf(pid) {
  const tree = processTree(pid);
  const sum = { rss: 0, hwm: 0, pss: 0 };
  for (const p of tree) {
    const m = memoryOfOne(p);
    sum.rss += m.rss;
    sum.hwm += m.hwm;
    sum.pss += m.pss;
  }
  return { rss: sum.rss || NaN, hwm: sum.hwm || NaN, pss: sum.pss || NaN, processes: tree.length };
}

/** CPU time (user + system, ms) used so far by `pid` and its descendants, from /proc/PID/stat (clock ticks of
 *  10 ms, Linux's USER_HZ): the same work measured this way is steadier than a throughput on a shared machine. */
export function cpuMsOf(pid) {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      // Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
      const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return ticks * 10;
}

/** Samples the tree's summed RSS and PSS every `everyMs`; stop() returns the peaks and the summed VmHWM. */
export function sampleRss(pid, everyMs = 100) {
  let { rss: peakRss, pss: peakPss } = memoryOf(pid);
  const timer = setInterval(() => {
    const m = memoryOf(pid);
    if (m.rss > peakRss) peakRss = m.rss;
    if (m.pss > peakPss) peakPss = m.pss;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const m = memoryOf(pid);
      return { peakRss: Math.max(peakRss, m.rss), peakPss: Math.max(peakPss, m.pss), hwm: m.hwm, processes: m.processes };
    },
  };
}

/** The distinct error details of distribution's 5xx responses, from its error log (it sends HEAD errors bodiless). */
export function distributionServerErrors(logFile) {
  let text = '';
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return {};
  }
  const counts = {};
  for (const line of text.split('\n')) {
    if (!/http\.response\.status=5\d\d/.test(line)) continue;
    const detail = /err\.detail="([^"]*)"/.exec(line)?.[1] ?? /err\.message="([^"]*)"/.exec(line)?.[1] ?? 'unknown';
    const method = /http\.request\.method=(\w+)/.exec(line)?.[1] ?? '?';
    const key = `${method}: ${detail}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}
