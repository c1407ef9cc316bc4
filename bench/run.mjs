#!/usr/bin/env node
// buildcached vs CNCF distribution (docker-registry), side by side on this machine, plus the machine's own limits.
//
//   npm run bench                      full run (several minutes): writes bench/results/<date>.json and BENCHMARKS.md
//   npm run bench -- --quick           small sizes, one round, < 2 minutes; never fails on speed
//   node bench/run.mjs --only push,head --rounds 5 --profile   subsets; --profile writes buildcached's .cpuprofile
//
// Options: --quick, --rounds N, --only disk,push,pull,head,secure,metrics,storm,rss, --profile, --keep (keep the work dir),
//          --workdir DIR (parent of the temp dir; default the OS temp dir), --markdown / --no-markdown,
//          --dist-no-cache (distribution without its in-memory blob descriptor cache),
//          --workers N (buildcached serve --workers; default: its own default, one worker per core).
// Env: BENCH_BUILDCACHED_NODE_ARGS="--trace-gc …" adds node flags to buildcached; BENCH_DISTRIBUTION_BIN overrides
// /usr/bin/docker-registry.
// Exit status: 0 unless something is actually broken: any error from buildcached, a daemon that does not start, or a
// distribution error outside the CI storm (in the storm, distribution's own 5xx are recorded as findings).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { MiB, blobSpec, digestOf } from './lib/data.mjs';
import { Target, send } from './lib/http.mjs';
import { pushMonolithic } from './lib/oci.mjs';
import {
  cpuMsOf,
  DISTRIBUTION_BIN,
  distributionServerErrors,
  REPO_ROOT,
  killAllSync,
  memoryOf,
  processTree,
  sampleRss,
  startBare,
  startBuildcached,
  snapshotApp,
  startDistribution,
  stop,
  stopAll,
} from './lib/procs.mjs';
import { diskReference, headLoad, pullLimit, pullMany, pullOne, push, pushLimit, storm, stormPlan } from './lib/scenarios.mjs';
import { markdownReport, textTable } from './lib/report.mjs';
import { secureSetup } from './lib/secure.mjs';
import { median } from './lib/stats.mjs';

// ---------------------------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const option = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const quick = flag('--quick');
const PHASES = ['disk', 'push', 'pull', 'head', 'secure', 'metrics', 'storm', 'rss'];
const only = option('--only')?.split(',') ?? PHASES;
for (const p of only) if (!PHASES.includes(p)) die(`unknown phase "${p}" in --only (phases: ${PHASES.join(', ')})`);
const cfg = quick
  ? {
      rounds: 1,
      pushSize: 32 * MiB,
      chunk: 8 * MiB,
      pullSize: 32 * MiB,
      pullStreams: 8,
      headMs: 1000,
      concurrency: [1, 16, 64],
      storm: { jobs: 16, sharedLayers: 20, uniqueLayers: 5, minLayer: 256 * 1024, maxLayer: 1 * MiB },
      rssSize: 256 * MiB,
      diskBytes: 256 * MiB,
    }
  : {
      rounds: 3,
      pushSize: 256 * MiB,
      chunk: 8 * MiB,
      pullSize: 256 * MiB,
      pullStreams: 8,
      headMs: 3000,
      concurrency: [1, 16, 64],
      storm: { jobs: 16, sharedLayers: 20, uniqueLayers: 5, minLayer: 1 * MiB, maxLayer: 8 * MiB },
      rssSize: 2048 * MiB,
      diskBytes: 1024 * MiB,
    };
if (option('--rounds')) cfg.rounds = Math.max(1, Number(option('--rounds')));
const profile = flag('--profile');
const writeMarkdown = flag('--markdown') || (!quick && !flag('--no-markdown') && only.length === PHASES.length);

function die(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}
const log = (msg) => process.stderr.write(`${msg}\n`);

if (!existsSync(join(REPO_ROOT, 'dist/main.js'))) die('dist/main.js is missing: run `npm run build` (or `npm run bench`)');
if (!existsSync(DISTRIBUTION_BIN)) die(`${DISTRIBUTION_BIN} is missing (Debian package docker-registry; or set BENCH_DISTRIBUTION_BIN)`);

// ---------------------------------------------------------------------------------------------------------------
// Work dir and cleanup: everything lives in one temp dir, removed on exit and on SIGINT/SIGTERM

const workParent = option('--workdir') ?? os.tmpdir();
mkdirSync(workParent, { recursive: true });
const work = mkdtempSync(join(workParent, 'buildcached-bench-'));
const profileDir = join(REPO_ROOT, 'bench/results');
let cleaned = false;
function cleanupSync() {
  if (cleaned) return;
  cleaned = true;
  killAllSync();
  if (!flag('--keep')) rmSync(work, { recursive: true, force: true });
}
process.on('exit', cleanupSync);
let aborting = false;
const targets = [];
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    aborting = true;
    log(`\n${sig}: stopping the daemons and removing ${work}`);
    for (const t of targets) t.close();
    const force = setTimeout(() => process.exit(130), 8_000); // the exit handler SIGKILLs what is left
    stopAll(5_000).finally(() => {
      clearTimeout(force);
      process.exit(130);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Results

/** figure id → { label, unit, better, samples per target }; insertion order = table order. */
const figures = new Map();
const problems = []; // things that are actually broken (exit 1)
const notes = []; // expected, documented failures (distribution rejecting BuildKit's index)

function figure(id, label, unit, better, extra = {}) {
  if (!figures.has(id)) figures.set(id, { id, label, unit, better, samples: { buildcached: [], distribution: [], limit: [] }, ...extra });
  return figures.get(id);
}

/** Runs one measurement, records its value (NaN on failure, and the failure as a problem). */
async function measure(fig, who, fn) {
  try {
    const v = await fn();
    fig.samples[who].push(v);
    return v;
  } catch (e) {
    fig.samples[who].push(NaN);
    if (aborting) return NaN;
    problems.push(`${fig.label} — ${who}: ${e.message}`);
    log(`  ! ${fig.label} — ${who}: ${e.message}`);
    return NaN;
  }
}

/** A B L, then B L A, then L A B…: interleaved, and every target takes every position equally often. */
function order(targets, round) {
  const k = round % targets.length;
  return [...targets.slice(k), ...targets.slice(0, k)];
}
const fmt = (v, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');

function machine() {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch (e) {
      return (e.stdout || e.stderr || '').trim() || 'unknown';
    }
  };
  const df = sh('df', ['--output=source,fstype', work]).split('\n').pop()?.trim().split(/\s+/) ?? [];
  const commit = sh('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', 'src']).length > 0;
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: +(os.totalmem() / 1024 ** 3).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    distribution: sh(DISTRIBUTION_BIN, ['--version']),
    buildcached: `${commit}${dirty ? ' (src modified)' : ''}`,
    filesystem: `${df[1] ?? '?'} on ${df[0] ?? '?'}`,
    workDir: work,
    loadavgStart: os.loadavg().map((x) => +x.toFixed(2)),
    workersFlag: option('--workers'),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The run

const started = new Date();
const info = machine();
log(`buildcached bench${quick ? ' (quick)' : ''}: ${cfg.rounds} round(s), phases ${only.join(', ')}; work dir ${work}`);
if (info.loadavgStart[0] > info.cpus) {
  log(`warning: load average ${info.loadavgStart[0]} exceeds ${info.cpus} CPUs: other work is running, expect noisy figures`);
}
log(`machine: ${info.cpus} CPUs (${info.cpuModel}), ${info.memoryGiB} GiB, ${info.node}, ${info.filesystem}; ${info.distribution}`);

const appDir = snapshotApp(join(work, 'app'));
const refFile = join(work, 'reference.bin');
const refBytes = Math.max(cfg.diskBytes, cfg.pullSize);

// The phases measured against the main pair of daemons and the bare-Node limit (the metrics phase starts its own).
const needDaemons = only.some((p) => p !== 'disk' && p !== 'metrics');

// Disk reference, and the file the bare server streams for the pull limit.
const disk = { write: [], readCached: [], readDirect: [] };
{
  const rounds = only.includes('disk') ? cfg.rounds : needDaemons ? 1 : 0;
  for (let r = 0; r < rounds; r++) {
    const d = await diskReference(refFile, refBytes);
    for (const k of Object.keys(disk)) disk[k].push(d[k]);
    log(`[disk] ${refBytes / MiB} MiB: write+fsync ${fmt(d.write)} MB/s, read (page cache) ${fmt(d.readCached)} MB/s, read (O_DIRECT) ${fmt(d.readDirect)} MB/s`);
  }
}

let bc;
let dist;
let bare;
async function startAll(tag) {
  bc = await startBuildcached({
    dataDir: join(work, `buildcached-${tag}`),
    logFile: join(work, `buildcached-${tag}.log`),
    profileDir: profile ? profileDir : undefined,
    appDir,
    workers: option('--workers'),
  });
  dist = await startDistribution({
    dataDir: join(work, `distribution-${tag}`),
    configFile: join(work, `distribution-${tag}.yml`),
    logFile: join(work, `distribution-${tag}.log`),
    descriptorCache: !flag('--dist-no-cache'),
  });
  targets.length = 0;
  targets.push(new Target('buildcached', bc.url), new Target('distribution', dist.url));
  // buildcached may run worker processes (serve --workers, default one per core): count them once they are up.
  await new Promise((r) => setTimeout(r, 300));
  info.buildcachedProcesses = processTree(bc.pid).length;
  log(`started buildcached pid ${bc.pid} (${info.buildcachedProcesses} processes) at ${bc.url}, distribution pid ${dist.pid} at ${dist.url}`);
}

let limit;
const [A, B] = [() => targets[0], () => targets[1]];
const stormRuns = { buildcached: [], distribution: [] };
const rss = {};
const pushLimitParts = [];
let pullSpecs = [];
// Any failure that stops the run (a daemon that does not start, a crash) is reported with what was measured so far.
try {
  if (needDaemons) {
    await startAll('main');
    // As many serving processes as buildcached has (its primary only hands out connections).
    info.bareWorkers = Math.max(1, info.buildcachedProcesses - 1);
    bare = await startBare({ file: refFile, logFile: join(work, 'limit.log'), workers: info.bareWorkers });
    limit = new Target('limit', bare.url);
  }

  // --- push -------------------------------------------------------------------------------------------------------
  if (only.includes('push')) {
    const size = cfg.pushSize;
    const mono = figure('push-mono', `push ${size / MiB} MiB, POST + one PUT (BuildKit)`, 'MB/s', 'higher');
    const chunked = figure('push-chunked', `push ${size / MiB} MiB, ${cfg.chunk / MiB} MiB PATCHes + PUT (docker/skopeo)`, 'MB/s', 'higher');
    const specs = [];
    for (let r = 0; r < cfg.rounds; r++) {
      specs.push({ monolithic: blobSpec(`push-mono-r${r}`, size), chunked: blobSpec(`push-chunked-r${r}`, size) });
    }
    log(`[push] hashing ${specs.length * 2} blobs of ${size / MiB} MiB before timing`);
    for (const s of specs) Object.values(s).forEach(digestOf);
    for (let r = 0; r < cfg.rounds; r++) {
      for (const [mode, fig] of [['monolithic', mono], ['chunked', chunked]]) {
        const spec = specs[r][mode];
        for (const t of order([A(), B(), limit], r)) {
          if (t === limit) {
            const v = await measure(fig, 'limit', async () => {
              const l = await pushLimit(t, spec, join(work, 'push-limit.bin'));
              pushLimitParts.push(l);
              return l.value;
            });
            const l = pushLimitParts.at(-1);
            log(`[push ${mode}] round ${r + 1}/${cfg.rounds} limit: ${fmt(v)} MB/s (loopback receive ${fmt(l?.sink)}, disk write+fsync ${fmt(l?.disk)})`);
            continue;
          }
          const v = await measure(fig, t.name, () => push(t, 'bench/push', spec, mode, cfg.chunk));
          log(`[push ${mode}] round ${r + 1}/${cfg.rounds} ${t.name}: ${fmt(v)} MB/s`);
        }
      }
    }
    // Both push styles face the same machine limit: pool its samples (2 per round) for a steadier median.
    const pooled = [...mono.samples.limit, ...chunked.samples.limit];
    mono.samples.limit = chunked.samples.limit = pooled;
    mono.limitLabel = chunked.limitLabel = 'min(bare Node loopback receive, disk write + fsync)';
  }

  // --- pull -------------------------------------------------------------------------------------------------------
  if (only.includes('pull') || only.includes('head')) {
    const size = only.includes('pull') ? cfg.pullSize : 1 * MiB;
    pullSpecs = Array.from({ length: cfg.pullStreams }, (_, i) => blobSpec(`pull-${i}`, size));
    log(`[pull] seeding ${pullSpecs.length} blobs of ${size / MiB} MiB into both registries (untimed)`);
    pullSpecs.forEach(digestOf);
    for (const t of targets) {
      for (const s of pullSpecs) {
        try {
          await pushMonolithic(t, 'bench/pull', s);
        } catch (e) {
          problems.push(`seeding pull blobs — ${t.name}: ${e.message}`);
        }
      }
    }
  }
  if (only.includes('pull')) {
    const one = figure('pull-1', `pull ${cfg.pullSize / MiB} MiB, 1 stream`, 'MB/s', 'higher', { limitLabel: 'bare Node file → loopback' });
    const many = figure('pull-8', `pull ${cfg.pullStreams} × ${cfg.pullSize / MiB} MiB, ${cfg.pullStreams} streams at once`, 'MB/s', 'higher', {
      limitLabel: 'bare Node file → loopback',
    });
    for (let r = 0; r < cfg.rounds; r++) {
      for (const t of order([A(), B(), limit], r)) {
        const v = await measure(one, t.name, () =>
          t === limit ? pullLimit(t, cfg.pullSize, 1) : pullOne(t, 'bench/pull', pullSpecs[r % pullSpecs.length]),
        );
        log(`[pull 1 stream] round ${r + 1}/${cfg.rounds} ${t.name}: ${fmt(v)} MB/s`);
      }
      for (const t of order([A(), B(), limit], r)) {
        const v = await measure(many, t.name, () =>
          t === limit ? pullLimit(t, cfg.pullSize, cfg.pullStreams) : pullMany(t, 'bench/pull', pullSpecs),
        );
        log(`[pull ${cfg.pullStreams} streams] round ${r + 1}/${cfg.rounds} ${t.name}: ${fmt(v)} MB/s`);
      }
    }
  }

  // --- HEAD -------------------------------------------------------------------------------------------------------
  if (only.includes('head')) {
    for (const c of cfg.concurrency) {
      const rps = figure(`head-${c}-rps`, `HEAD blob, concurrency ${c}: requests/s`, 'req/s', 'higher', { limitLabel: 'bare Node HEAD' });
      const p50 = figure(`head-${c}-p50`, `HEAD blob, concurrency ${c}: p50 latency`, 'ms', 'lower', { limitLabel: 'bare Node HEAD' });
      const p99 = figure(`head-${c}-p99`, `HEAD blob, concurrency ${c}: p99 latency`, 'ms', 'lower', { limitLabel: 'bare Node HEAD' });
      for (let r = 0; r < cfg.rounds; r++) {
        for (const t of order([A(), B(), limit], r)) {
          const paths = t === limit ? ['/head'] : pullSpecs.map((s) => `/v2/bench/pull/blobs/${s.digest}`);
          let res;
          try {
            res = await headLoad(t, paths, c, cfg.headMs);
          } catch (e) {
            res = { rps: NaN, p50: NaN, p99: NaN, errors: 1, firstError: e.message };
          }
          rps.samples[t.name].push(res.rps);
          p50.samples[t.name].push(res.p50);
          p99.samples[t.name].push(res.p99);
          if (res.errors && !aborting) problems.push(`HEAD c=${c} — ${t.name}: ${res.errors} errors, first: ${res.firstError}`);
          log(`[HEAD c=${c}] round ${r + 1}/${cfg.rounds} ${t.name}: ${fmt(res.rps)} req/s, p50 ${fmt(res.p50, 3)} ms, p99 ${fmt(res.p99, 3)} ms${res.errors ? `, ${res.errors} errors` : ''}`);
        }
      }
    }
  }

  // --- auth and TLS -----------------------------------------------------------------------------------------------
  // HEAD with auth on (a bearer token, and Basic credentials on every request) against the same daemon build with
  // auth off (the "limit" column: % of limit = auth on / auth off), distribution with its htpasswd auth beside it;
  // then a pull over TLS, both registries with the same self-signed certificate, plain HTTP as the limit.
  if (only.includes('secure')) {
    const sec = secureSetup(join(work, 'secure'));
    const headSpecs = Array.from({ length: 8 }, (_, i) => blobSpec(`secure-head-${i}`, 1 * MiB));
    const tlsSpec = blobSpec('secure-tls', cfg.pullSize);
    [...headSpecs, tlsSpec].forEach(digestOf);
    const seed = async (t, specs) => {
      for (const s of specs) await pushMonolithic(t, 'bench/secure', s);
    };
    await seed(A(), [...headSpecs, tlsSpec]);
    const paths = headSpecs.map((s) => `/v2/bench/secure/blobs/${s.digest}`);
    const c = 16;

    const bcAuth = await startBuildcached({ dataDir: join(work, 'buildcached-auth'), logFile: join(work, 'buildcached-auth.log'), appDir, workers: option('--workers'), configFile: sec.authConfig });
    const distAuth = await startDistribution({ dataDir: join(work, 'distribution-auth'), configFile: join(work, 'distribution-auth.yml'), logFile: join(work, 'distribution-auth.log'), htpasswd: sec.htpasswd });
    const basicBc = new Target('buildcached', bcAuth.url, { headers: { authorization: sec.basic } });
    const basicDist = new Target('distribution', distAuth.url, { headers: { authorization: sec.basic } });
    await seed(basicBc, headSpecs);
    await seed(basicDist, headSpecs);
    const token = JSON.parse((await send(basicBc, { method: 'GET', path: '/token?service=buildcached&scope=repository:bench/secure:pull', sink: 'collect' })).body).token;
    const bearerBc = new Target('buildcached', bcAuth.url, { headers: { authorization: `Bearer ${token}` } });
    const offBc = new Target('limit', A().url);
    const bearerFig = figure('head-auth-bearer', `HEAD blob, concurrency ${c}, auth on: req/s (buildcached with a bearer token; distribution htpasswd, Basic)`, 'req/s', 'higher', { limitLabel: 'buildcached with auth off' });
    const basicFig = figure('head-auth-basic', `HEAD blob, concurrency ${c}, auth on: req/s (both Basic on every request)`, 'req/s', 'higher', { limitLabel: 'buildcached with auth off (2)' });
    // The daemons started just now: warm them up (JIT, caches) as the main ones were by the phases before.
    for (const t of [bearerBc, basicBc, basicDist, offBc]) await headLoad(t, paths, c, 1000);
    for (let r = 0; r < cfg.rounds; r++) {
      for (const [fig, runs] of [[bearerFig, [bearerBc, basicDist, offBc]], [basicFig, [basicBc, basicDist, offBc]]]) {
        for (const t of order(runs, r)) {
          const res = await headLoad(t, paths, c, cfg.headMs);
          fig.samples[t.name].push(res.rps);
          if (res.errors) problems.push(`${fig.label} — ${t.name}: ${res.errors} errors, first: ${res.firstError}`);
          log(`[HEAD auth ${fig === bearerFig ? 'bearer' : 'basic'}] round ${r + 1}/${cfg.rounds} ${t === offBc ? 'buildcached (auth off)' : t.name}: ${fmt(res.rps)} req/s`);
        }
      }
    }
    for (const t of [basicBc, basicDist, bearerBc, offBc]) t.close();
    await Promise.all([stop(bcAuth), stop(distAuth)]);

    const bcTls = await startBuildcached({ dataDir: join(work, 'buildcached-tls'), logFile: join(work, 'buildcached-tls.log'), appDir, workers: option('--workers'), configFile: sec.tlsConfig, tls: true });
    const distTls = await startDistribution({ dataDir: join(work, 'distribution-tls'), configFile: join(work, 'distribution-tls.yml'), logFile: join(work, 'distribution-tls.log'), tls: sec.tls });
    const tlsTargets = [new Target('buildcached', bcTls.url, { ca: sec.ca }), new Target('distribution', distTls.url, { ca: sec.ca })];
    for (const t of tlsTargets) await seed(t, [tlsSpec]);
    const plain = new Target('limit', A().url);
    const tlsFig = figure('pull-tls', `pull ${cfg.pullSize / MiB} MiB over TLS, 1 stream`, 'MB/s', 'higher', { limitLabel: 'buildcached over plain HTTP' });
    for (let r = 0; r < cfg.rounds; r++) {
      for (const t of order([...tlsTargets, plain], r)) {
        const v = await measure(tlsFig, t.name, () => pullOne(t, 'bench/secure', tlsSpec));
        log(`[pull TLS] round ${r + 1}/${cfg.rounds} ${t === plain ? 'buildcached (plain HTTP)' : t.name}: ${fmt(v)} MB/s`);
      }
    }
    for (const t of [...tlsTargets, plain]) t.close();
    await Promise.all([stop(bcTls), stop(distTls)]);
  }

  // --- metrics and analytics on / off ------------------------------------------------------------------------------
  // Issue 12: metrics and analytics add no I/O and no lock to a request. The same build twice, fresh and seeded
  // alike: with both on (the default) and with both off (the "limit" column, so % of limit = on / off, wanted at
  // 95 % or more), HEAD of existing blobs at concurrency 16. Each round measures both, one right after the other
  // (taking turns at going first), and its on / off is a sample of the ratio row: a pair shares the machine's load
  // of the moment, which on a shared machine moves more than 5 % between rounds. At least 8 rounds.
  if (only.includes('metrics')) {
    const dir = join(work, 'metrics');
    mkdirSync(dir, { recursive: true });
    const offConfig = join(dir, 'off.yaml');
    writeFileSync(offConfig, JSON.stringify({ metrics: { enabled: false }, analytics: { enabled: false } }));
    const specs = Array.from({ length: 8 }, (_, i) => blobSpec(`metrics-head-${i}`, 1 * MiB));
    specs.forEach(digestOf);
    const start = (tag, configFile) =>
      startBuildcached({ dataDir: join(work, `buildcached-${tag}`), logFile: join(work, `buildcached-${tag}.log`), appDir, workers: option('--workers'), configFile });
    const [onBc, offBc] = [await start('metrics-on'), await start('metrics-off', offConfig)];
    const on = new Target('buildcached', onBc.url);
    const off = new Target('limit', offBc.url);
    for (const t of [on, off]) for (const spec of specs) await pushMonolithic(t, 'bench/metrics', spec);
    const paths = specs.map((spec) => `/v2/bench/metrics/blobs/${spec.digest}`);
    const c = 16;
    const fig = figure('head-metrics', `HEAD blob, concurrency ${c}, metrics and analytics on: req/s`, 'req/s', 'higher', { limitLabel: 'the same build with metrics and analytics off' });
    // The daemon's own CPU time per request (all its processes), which the machine's other load disturbs less.
    const cpu = figure('head-metrics-cpu', `HEAD blob, concurrency ${c}, metrics and analytics on: daemon CPU per request`, 'µs', 'lower', { limitLabel: 'the same build with metrics and analytics off (CPU)' });
    for (const t of [on, off]) await headLoad(t, paths, c, 1000);
    const paired = figure('head-metrics-ratio', `HEAD blob, concurrency ${c}: req/s with metrics and analytics on / off, paired in each round`, '%', 'higher', { noRatio: true });
    const rounds = option('--rounds') ? cfg.rounds : Math.max(cfg.rounds, 8);
    for (let r = 0; r < rounds; r++) {
      const rps = {};
      for (const t of order([on, off], r)) {
        const pid = (t === on ? onBc : offBc).pid;
        const cpuBefore = cpuMsOf(pid);
        const res = await headLoad(t, paths, c, cfg.headMs);
        const usPerRequest = ((cpuMsOf(pid) - cpuBefore) * 1000) / res.requests;
        fig.samples[t.name].push(res.rps);
        cpu.samples[t.name].push(usPerRequest);
        rps[t.name] = res.rps;
        if (res.errors) problems.push(`${fig.label} — ${t === off ? 'off' : 'on'}: ${res.errors} errors, first: ${res.firstError}`);
        log(`[HEAD metrics] round ${r + 1}/${rounds} ${t === off ? 'off' : 'on '}: ${fmt(res.rps)} req/s, p50 ${fmt(res.p50, 3)} ms, p99 ${fmt(res.p99, 3)} ms, ${fmt(usPerRequest)} µs CPU per request`);
      }
      paired.samples.buildcached.push((100 * rps.buildcached) / rps.limit);
    }
    const ratio = median(paired.samples.buildcached) / 100;
    const cpuRatio = median(cpu.samples.buildcached) / median(cpu.samples.limit);
    log(`[HEAD metrics] on / off = ${fmt(ratio, 3)} (median of the rounds' pairs; issue 12 wants ≥ 0.95); medians ${fmt(median(fig.samples.buildcached))} / ${fmt(median(fig.samples.limit))} req/s; CPU per request on / off = ${fmt(cpuRatio, 3)}`);
    if (ratio < 0.95) notes.push(`HEAD c=${c} with metrics and analytics on: ${fmt(ratio, 3)}× the req/s with them off (median of paired rounds; below 0.95); CPU per request ${fmt(cpuRatio, 3)}×`);
    for (const t of [on, off]) t.close();
    await Promise.all([stop(onBc), stop(offBc)]);
  }

  // --- CI storm ---------------------------------------------------------------------------------------------------
  if (only.includes('storm')) {
    const s = cfg.storm;
    const wall = figure(
      'storm-wall',
      `CI storm: ${s.jobs} jobs × (${s.sharedLayers} shared + ${s.uniqueLayers} unique layers of ${s.minLayer / MiB}–${s.maxLayer / MiB} MiB + index), push then pull back`,
      's',
      'lower',
    );
    for (let r = 0; r < cfg.rounds; r++) {
      const plan = stormPlan(r, s);
      for (const t of order([A(), B()], r)) {
        const res = await storm(t, plan);
        wall.samples[t.name].push(res.wall);
        stormRuns[t.name].push(res);
        const { errors, ...summary } = res;
        log(`[storm] round ${r + 1}/${cfg.rounds} ${t.name}: ${fmt(res.wall, 2)} s, ${errors.length} errors ${JSON.stringify(summary)}`);
        const bySteps = {};
        for (const e of errors) (bySteps[e.step] ??= []).push(e);
        for (const [step, es] of Object.entries(bySteps)) {
          const line = `storm round ${r + 1} — ${t.name}: ${es.length} × "${step}" failed, first: ${es[0].message}`;
          log(`  ! ${line}`);
          // distribution's own failures (it may reject BuildKit's cache index, and it answers some HEADs with 500 while
          // the same blob is being pushed concurrently) are findings about the reference, not a broken benchmark.
          (t.name === 'distribution' ? notes : problems).push(line);
        }
      }
    }
    const stormShare = [
      ['storm-index', 'CI storm: jobs whose index was accepted and read back', (x) => (100 * x.indexPullOk) / x.jobs, '%', 'higher'],
      ['storm-blobs', 'CI storm: blobs read back with the right digest', (x) => (100 * x.blobsVerified) / (x.blobsVerified + x.blobPullErrors), '%', 'higher'],
      ['storm-errors', 'CI storm: failed requests (all kinds)', (x) => x.errors.length, 'count', 'lower'],
    ];
    for (const [id, label, value, unit, better] of stormShare) {
      const fig = figure(id, label, unit, better, { noRatio: true });
      for (const who of ['buildcached', 'distribution']) for (const run of stormRuns[who]) fig.samples[who].push(value(run));
    }
  }

  if (only.includes('storm') && dist) {
    for (const [detail, n] of Object.entries(distributionServerErrors(dist.logFile))) {
      notes.push(`distribution's log: ${n} × HTTP 5xx on ${detail}`);
    }
  }

  // --- whole-run memory, then a fresh pair of daemons for the big-blob RSS test -----------------------------------
  if (only.some((p) => ['push', 'pull', 'head', 'storm'].includes(p))) {
    const wholeRun = figure('rss-run', 'peak RSS over the whole run above (VmHWM, summed over processes)', 'MiB', 'lower');
    wholeRun.samples.buildcached.push(memoryOf(bc.pid).hwm / MiB);
    wholeRun.samples.distribution.push(memoryOf(dist.pid).hwm / MiB);
  }
  if (only.includes('rss')) {
    await Promise.all([stop(bc), stop(dist)]);
    await Promise.all(['buildcached-main', 'distribution-main'].map((d) => rm(join(work, d), { recursive: true, force: true })));
    await startAll('rss');
    const size = cfg.rssSize;
    const fig = figure('rss-big', `peak RSS while a ${size / MiB} MiB blob is pushed and pulled (fresh daemon; VmHWM, summed)`, 'MiB', 'lower');
    const pssFig = figure('pss-big', `peak PSS, same test (sampled every 100 ms; shared pages split between processes)`, 'MiB', 'lower');
    const pushFig = figure('rss-push', `push ${size / MiB} MiB, POST + one PUT (same run, 1 sample)`, 'MB/s', 'higher', { info: true });
    const pullFig = figure('rss-pull', `pull ${size / MiB} MiB, 1 stream (same run, 1 sample)`, 'MB/s', 'higher', { info: true });
    const spec = blobSpec('rss-big', size);
    log(`[rss] hashing a ${size / MiB} MiB blob before timing`);
    digestOf(spec);
    for (const [t, proc] of [[targets[0], bc], [targets[1], dist]]) {
      const idle = memoryOf(proc.pid);
      const sampler = sampleRss(proc.pid, 100);
      const p = await measure(pushFig, t.name, () => push(t, 'bench/big', spec, 'monolithic'));
      const q = await measure(pullFig, t.name, () => pullOne(t, 'bench/big', spec));
      const { peakRss, peakPss, hwm, processes } = sampler.stop();
      fig.samples[t.name].push(Math.max(peakRss, hwm) / MiB);
      pssFig.samples[t.name].push(peakPss / MiB);
      rss[t.name] = {
        processes,
        idleRssMiB: idle.rss / MiB,
        idlePssMiB: idle.pss / MiB,
        peakRssSampledMiB: peakRss / MiB,
        peakPssSampledMiB: peakPss / MiB,
        vmHwmMiB: hwm / MiB,
      };
      log(`[rss] ${t.name} (${processes} process${processes > 1 ? 'es' : ''}): idle RSS ${fmt(idle.rss / MiB)} MiB / PSS ${fmt(idle.pss / MiB)} MiB; peak RSS ${fmt(peakRss / MiB)} MiB (VmHWM ${fmt(hwm / MiB)}), peak PSS ${fmt(peakPss / MiB)} MiB; push ${fmt(p)} MB/s, pull ${fmt(q)} MB/s`);
    }
    // The same transfer through a single-process buildcached (serve --workers 1): the per-process bound, without
    // the baseline of every extra Node process that the default (one worker per core) adds.
    await stop(bc);
    const single = await startBuildcached({ dataDir: join(work, 'buildcached-rss-single'), logFile: join(work, 'buildcached-rss-single.log'), appDir, workers: '1' });
    const singleFig = figure('rss-big-single', `peak RSS, same test, buildcached serve --workers 1 (one process)`, 'MiB', 'lower');
    const sampler = sampleRss(single.pid, 100);
    const st = new Target('buildcached', single.url);
    await push(st, 'bench/big', spec, 'monolithic');
    await pullOne(st, 'bench/big', spec);
    st.close();
    const { peakRss, hwm } = sampler.stop();
    singleFig.samples.buildcached.push(Math.max(peakRss, hwm) / MiB);
    singleFig.samples.distribution.push(fig.samples.distribution.at(-1));
    await stop(single);
  }

} catch (e) {
  problems.push(`run aborted: ${e.stack ?? e}`);
  log(`! run aborted: ${e.stack ?? e}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Stop, report

for (const t of [...targets, limit]) t?.close();
await stopAll();
info.loadavgEnd = os.loadavg().map((x) => +x.toFixed(2));
const elapsed = (Date.now() - started.getTime()) / 1000;

// The physical reference rows come first.
const limitsTable = [
  ['disk: sequential write + fsync', median(disk.write), 'MB/s', disk.write],
  ['disk: sequential read (page cache)', median(disk.readCached), 'MB/s', disk.readCached],
  ['disk: sequential read (O_DIRECT, dd)', median(disk.readDirect), 'MB/s', disk.readDirect],
];
if (pushLimitParts.length) {
  const sink = pushLimitParts.map((l) => l.sink);
  const diskW = pushLimitParts.map((l) => l.disk);
  limitsTable.push([`loopback receive: bare Node PUT of ${cfg.pushSize / MiB} MiB, discarded`, median(sink), 'MB/s', sink]);
  limitsTable.push([`disk: write ${cfg.pushSize / MiB} MiB + fsync, during the push rounds`, median(diskW), 'MB/s', diskW]);
}
const seenLimits = new Set();
for (const f of figures.values()) {
  if (seenLimits.has(f.samples.limit)) continue;
  seenLimits.add(f.samples.limit);
  if (f.samples.limit.length) limitsTable.push([`${f.limitLabel}: ${f.label}`, median(f.samples.limit), f.unit, f.samples.limit]);
}

const rows = [...figures.values()].map((f) => {
  const b = median(f.samples.buildcached);
  const d = median(f.samples.distribution);
  const l = f.samples.limit.length ? median(f.samples.limit) : NaN;
  const higher = f.better === 'higher';
  const ratio = f.noRatio ? NaN : higher ? b / d : d / b;
  // Round by round: both daemons ran one right after the other, under the same disk and load regime.
  const bs = f.samples.buildcached;
  const ds = f.samples.distribution;
  const pairedRatio = f.noRatio || bs.length < 2 || bs.length !== ds.length ? NaN : median(bs.map((x, i) => (higher ? x / ds[i] : ds[i] / x)));
  const pct = (v) => (Number.isFinite(l) ? (higher ? v / l : l / v) * 100 : NaN);
  return { ...f, buildcached: b, distribution: d, limit: l, ratio, pairedRatio, pctBuildcached: pct(b), pctDistribution: pct(d) };
});

const result = {
  date: started.toISOString(),
  elapsedSeconds: Math.round(elapsed),
  command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
  quick,
  config: cfg,
  machine: info,
  limits: limitsTable.map(([label, value, unit, samples]) => ({ label, value, unit, samples })),
  figures: rows.map(({ samples, ...r }) => ({ ...r, samples })),
  storm: Object.fromEntries(
    Object.entries(stormRuns).map(([who, runs]) => [who, runs.map(({ errors, ...s }) => ({ ...s, errorCount: errors.length, errors: errors.slice(0, 50) }))]),
  ),
  rss,
  pushLimitParts,
  notes,
  problems,
};

const table = textTable(rows, limitsTable);
process.stdout.write(`\n${table}\n`);
if (notes.length) process.stdout.write(`\nRecorded findings (expected):\n${notes.map((n) => `  - ${n}`).join('\n')}\n`);
if (problems.length) process.stdout.write(`\nERRORS (the benchmark is not valid where these apply):\n${problems.map((n) => `  - ${n}`).join('\n')}\n`);

const resultsDir = join(REPO_ROOT, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const stamp = started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
const jsonPath = join(resultsDir, `${stamp}${quick ? '-quick' : ''}.json`);
writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`\nresults: ${jsonPath}\n`);
if (writeMarkdown) {
  // bench/scale.mjs and bench/tier.mjs own their sections of the file; keep them across runs of this one.
  const path = join(REPO_ROOT, 'BENCHMARKS.md');
  const doc = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const kept = [/<!-- scale:start -->[\s\S]*<!-- scale:end -->/, /<!-- tier:begin -->[\s\S]*<!-- tier:end -->/].map((re) => re.exec(doc)?.[0]).filter(Boolean);
  writeFileSync(path, markdownReport(result, rows, limitsTable) + kept.map((section) => `\n${section}\n`).join(''));
  process.stdout.write(`BENCHMARKS.md updated\n`);
} else {
  process.stdout.write(`BENCHMARKS.md not updated (${quick ? 'quick run' : 'partial run'}; pass --markdown to force)\n`);
}
process.stdout.write(`elapsed ${fmt(elapsed)} s\n`);
cleanupSync();
process.exit(problems.length ? 1 : 0);
