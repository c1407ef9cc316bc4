#!/usr/bin/env node
// The store at scale (issue: a bounded cache): start-up time and index memory with many blobs and references on
// disk, and HEAD latency while a large eviction runs.
//
//   npm run bench:scale                  100 000 blobs, 5 000 references
//   npm run bench:scale -- --blobs 400000   any size (a multiple of 20: one reference per 20 blobs)
//   npm run bench:scale -- --quick       10 000 blobs, 500 references
// Each size keeps its own table in BENCHMARKS.md.
//
// The store is written straight to disk in buildcached's layout (pushing 100 000 blobs over HTTP would measure
// the push path, not start-up). Start-up is timed twice: first with no blob index (every blob file is stat'ed, as
// after an upgrade or a lost index), then after a clean stop wrote the index (every restart). Index memory per
// blob = (heap + external memory with the store − the same with an empty store) / blobs, both single-process
// daemons measured after start-up and a full garbage collection (bench/lib/memory-probe.mjs); the RSS difference
// is shown beside it. Tenant isolation's membership index is measured the same way: every layer and config is
// also logged as uploaded to its repository (a blob-repository pair each), and a daemon with
// registry.tenantIsolation on is compared with one without.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const quick = process.argv.includes('--quick');
const blobsArg = process.argv.indexOf('--blobs');
const BLOBS = quick ? 10_000 : blobsArg > 0 ? Number(process.argv[blobsArg + 1]) : 100_000;
if (!Number.isInteger(BLOBS) || BLOBS <= 0 || BLOBS % 20 !== 0) throw new Error('--blobs takes a positive multiple of 20');
const REFS = BLOBS / 20;
const PER_REF = BLOBS / REFS - 1; // layers + config per reference; the manifest itself is one blob too (BLOBS in all)
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const PROBE = fileURLToPath(new URL('./lib/memory-probe.mjs', import.meta.url));

const sha = (b) => createHash('sha256').update(b).digest('hex');

async function writeStore(dir) {
  const made = new Set();
  const put = async (hex, data) => {
    const d = join(dir, 'blobs', 'sha256', hex.slice(0, 2));
    if (!made.has(d)) {
      await mkdir(d, { recursive: true });
      made.add(d);
    }
    await writeFile(join(d, hex), data);
  };
  const salt = randomBytes(8).toString('hex');
  const sample = [];
  for (let r = 0; r < REFS; r++) {
    const layers = [];
    const writes = [];
    for (let i = 0; i < PER_REF; i++) {
      const data = Buffer.from(`${salt} ref ${r} blob ${i} `.padEnd(200, '.'));
      const hex = sha(data);
      writes.push(put(hex, data));
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${hex}`, size: data.length });
    }
    await Promise.all(writes);
    if (r % 50 === 0) sample.push(layers[0].digest);
    const [config, ...rest] = layers;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { ...config, mediaType: 'application/vnd.buildkit.cacheconfig.v0' },
        layers: rest,
      }),
    );
    const mhex = sha(manifest);
    await put(mhex, manifest);
    const repo = `org/app${r % 100}`;
    const rdir = join(dir, 'repositories', repo);
    await mkdir(join(rdir, '_manifests', 'sha256'), { recursive: true });
    await mkdir(join(rdir, '_tags'), { recursive: true });
    const record = {
      digest: `sha256:${mhex}`,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      size: manifest.length,
      references: layers.map((l) => l.digest),
    };
    await writeFile(join(rdir, '_manifests', 'sha256', `${mhex}.json`), JSON.stringify(record));
    await writeFile(join(rdir, '_tags', `cache-${r}`), `sha256:${mhex}`);
    await writeFile(join(rdir, '_blobs'), layers.map((l) => `${l.digest}\n`).join(''), { flag: 'a' });
  }
  return sample;
}

function startDaemon(dataDir, args = []) {
  const t0 = performance.now();
  const probe = `${dataDir}.memory.json`;
  const proc = spawn(process.execPath, ['--expose-gc', '--import', PROBE, MAIN, 'serve', '--listen', '127.0.0.1:0', '--data', dataDir, '--workers', '1', ...args], {
    env: { ...process.env, BUILDCACHED_LOG_LEVEL: 'info', BUILDCACHED_MEMORY_PROBE: probe },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (c) => {
      buf += c;
      for (;;) {
        const nl = buf.indexOf('\n');
        if (nl < 0) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const j = JSON.parse(line);
          if (typeof j.msg === 'string' && j.msg.startsWith('listening on')) {
            proc.stdout.resume();
            proc.stdout.removeAllListeners('data');
            proc.stdout.on('data', () => {});
            resolve({ proc, probe, url: j.url, startMs: performance.now() - t0 });
          }
        } catch {
          // not JSON
        }
      }
    });
    proc.on('exit', (code) => reject(new Error(`daemon exited ${code}`)));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function rss(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) * 1024;
}

/**
 * Memory of an idle daemon, 40 s after start-up (V8 and the allocator hand start-up's garbage back to the system
 * some 20-30 s after it: the RSS an operator sees once the daemon runs) and a full collection: retained (heap +
 * external) and RSS, in bytes; plus the RSS 2 s after start.
 */
async function memory(d) {
  await sleep(2000);
  const rssAtStart = await rss(d.proc.pid);
  await sleep(38_000);
  await unlink(d.probe).catch(() => undefined);
  d.proc.kill('SIGUSR2');
  for (let i = 0; i < 100; i++) {
    await sleep(100);
    const text = await readFile(d.probe, 'utf8').catch(() => undefined);
    if (!text) continue;
    const m = JSON.parse(text);
    return { retained: m.heapUsed + m.external, rss: await rss(d.proc.pid), rssAtStart };
  }
  throw new Error('the memory probe did not answer');
}

async function stopDaemon(d) {
  const exited = new Promise((r) => d.proc.once('exit', r));
  d.proc.kill('SIGTERM');
  await exited;
}

function request(agent, url, method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

function adminRequest(dataDir, method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: join(dataDir, 'admin.sock'), method, path }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

/** HEADs random known digests at `concurrency` until `until()` is true; returns latency percentiles in ms. */
async function headLoad(url, digests, concurrency, until) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const lat = [];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (!until()) {
        const d = digests[Math.floor(Math.random() * digests.length)];
        const t = performance.now();
        await request(agent, url, 'HEAD', `/v2/org/app0/blobs/${d}`);
        lat.push(performance.now() - t);
      }
    }),
  );
  agent.destroy();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { n: lat.length, p50: q(0.5), p99: q(0.99) };
}

/**
 * Replaces this size's table in this benchmark's section of BENCHMARKS.md, keeping the other sizes' (bench/run.mjs
 * keeps the whole section when it rewrites the rest).
 */
async function recordSection(rows) {
  const path = fileURLToPath(new URL('../BENCHMARKS.md', import.meta.url));
  const old = await readFile(path, 'utf8').catch(() => '# Benchmarks\n');
  const table = [
    `<!-- scale:${BLOBS}:start -->`,
    `### ${BLOBS.toLocaleString('en-US')} blobs`,
    '',
    `Latest run: **${new Date().toISOString()}**, ${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}.`,
    '',
    '```',
    `npm run bench:scale${BLOBS === 100_000 ? '' : ` -- --blobs ${BLOBS}`}`,
    '```',
    '',
    '| figure | value | notes |',
    '| --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    `<!-- scale:${BLOBS}:end -->`,
  ].join('\n');
  const tables = new Map([...old.matchAll(/<!-- scale:(\d+):start -->[\s\S]*?<!-- scale:\1:end -->/g)].map((m) => [Number(m[1]), m[0]]));
  tables.set(BLOBS, table);
  const section = [
    '<!-- scale:start -->',
    '## The store at scale',
    '',
    'Targets (issue 14): restart ≤ 3 s at 400 000 blobs; index memory ≤ 150 B a blob at every size; HEAD p99 during a',
    'full prune ≤ 2× idle.',
    '',
    [...tables].sort(([a], [b]) => a - b).map(([, t]) => t).join('\n\n'),
    '<!-- scale:end -->',
  ].join('\n');
  const re = /<!-- scale:start -->[\s\S]*<!-- scale:end -->/;
  await writeFile(path, re.test(old) ? old.replace(re, section) : `${old.trimEnd()}\n\n${section}\n`);
}

const work = await mkdtemp(join(os.tmpdir(), 'buildcached-scale-'));
try {
  const empty = await startDaemon(join(work, 'empty'));
  const emptyMem = await memory(empty);
  await stopDaemon(empty);

  const dataDir = join(work, 'full');
  const t = performance.now();
  const sample = await writeStore(dataDir);
  const genS = (performance.now() - t) / 1000;

  const first = await startDaemon(dataDir);
  await stopDaemon(first);
  const isolatedConfig = join(work, 'isolated.yaml');
  await writeFile(isolatedConfig, 'registry:\n  tenantIsolation: "on"\n');
  const isolated = await startDaemon(dataDir, ['--config', isolatedConfig]);
  const isolatedMem = await memory(isolated);
  await stopDaemon(isolated);
  const full = await startDaemon(dataDir);
  const fullMem = await memory(full);
  const perBlob = (key) => (fullMem[key] - emptyMem[key]) / BLOBS;
  const PAIRS = BLOBS - REFS;
  const perPair = (isolatedMem.retained - fullMem.retained) / PAIRS;
  const mib = (b) => (b / 2 ** 20).toFixed(0);

  const idle = await headLoad(full.url, sample, 16, ((end) => () => performance.now() > end)(performance.now() + 3000));
  let evicting = true;
  const te = performance.now();
  // The admin API answers on the data directory's socket only (never on the registry's port).
  const evict = adminRequest(dataDir, 'POST', '/admin/v1/prune?olderThan=0s').then((s) => {
    evicting = false;
    if (s !== 200) throw new Error(`prune answered HTTP ${s}: the eviction figure would measure nothing`);
    return s;
  });
  const during = await headLoad(full.url, sample, 16, () => !evicting);
  const evictStatus = await evict;
  const evictS = (performance.now() - te) / 1000;
  await stopDaemon(full);

  const rows = [
    ['store on disk', `${BLOBS} blobs (${BLOBS - REFS} layers/configs + ${REFS} manifests), ${REFS} references`, `generated in ${genS.toFixed(1)} s`],
    ['start-up to "listening", restart', `${(full.startMs / 1000).toFixed(2)} s`, 'blob index written at the last stop; target ≤ 3 s at 400 000 blobs'],
    ['start-up to "listening", first', `${(first.startMs / 1000).toFixed(2)} s`, 'no blob index yet: every blob file stat\'ed'],
    ['index memory per blob', `${perBlob('retained').toFixed(0)} B`, `heap + external after a full GC, 40 s after start, ${mib(emptyMem.retained)} → ${mib(fullMem.retained)} MiB; target ≤ 150 B`],
    ['tenant isolation: memory per blob-repository pair', `${perPair.toFixed(0)} B`, `${PAIRS} pairs (every layer and config logged as uploaded to its repository); heap + external with registry.tenantIsolation on − off, ${mib(fullMem.retained)} → ${mib(isolatedMem.retained)} MiB; start-up with it ${(isolated.startMs / 1000).toFixed(2)} s`],
    ['RSS per blob, 40 s after start', `${perBlob('rss').toFixed(0)} B`, `RSS ${mib(emptyMem.rss)} → ${mib(fullMem.rss)} MiB (${mib(fullMem.rssAtStart)} MiB 2 s after start)`],
    ['HEAD c16 idle', `p50 ${idle.p50.toFixed(2)} ms, p99 ${idle.p99.toFixed(2)} ms`, `${idle.n} requests`],
    ['HEAD c16 during eviction', `p50 ${during.p50.toFixed(2)} ms, p99 ${during.p99.toFixed(2)} ms`, `${during.n} requests; p99 ${(during.p99 / idle.p99).toFixed(2)}× idle (target ≤ 2×)`],
    ['eviction (prune of every reference but the 1 in 50 whose blobs the HEAD load probes)', `${evictS.toFixed(1)} s`, `HTTP ${evictStatus}`],
  ];
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(rows.map((r) => r.map((x, i) => x.padEnd(w[i])).join('  ')).join('\n'));
  if (!quick) await recordSection(rows);
} finally {
  await rm(work, { recursive: true, force: true });
}
