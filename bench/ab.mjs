#!/usr/bin/env node
// Two builds of buildcached side by side in paired rounds, to judge one change: on a shared machine the load moves
// more between runs than most optimisations move a figure, so each round measures both, one right after the
// other (taking turns at going first), and the median of the rounds' ratios is the verdict.
//
//   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && ln -s "$PWD/node_modules" . && npm run build)
//   npm run build && node bench/ab.mjs --base /tmp/base --mode head --rounds 8
//
// Options: --base DIR (a checkout with dist/ built: the "base" build; the other is this checkout's dist/),
//          --mode head|push|chunked|pull|storm (default head), --rounds N (default 6), --concurrency N (HEAD, 16),
//          --workers N (serve --workers for both), --base-node-args / --node-args "…" (node flags for either one).
// Prints each round and, at the end, the medians: the figure (req/s, MB/s, or jobs per second for the storm),
// the paired ratio this/base, and the daemon's CPU time per request (HEAD) or per operation.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { MiB, blobSpec, digestOf } from './lib/data.mjs';
import { Target } from './lib/http.mjs';
import { pushMonolithic } from './lib/oci.mjs';
import { cpuMsOf, killAllSync, startBuildcached, stop } from './lib/procs.mjs';
import { headLoad, pullOne, push, storm, stormPlan } from './lib/scenarios.mjs';
import { median } from './lib/stats.mjs';

const argv = process.argv.slice(2);
const option = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : fallback;
};
const baseDir = option('--base');
const mode = option('--mode', 'head');
const rounds = Number(option('--rounds', '6'));
const concurrency = Number(option('--concurrency', '16'));
const workers = option('--workers');
const MODES = ['head', 'push', 'chunked', 'pull', 'storm'];
if (!baseDir || !MODES.includes(mode) || !(rounds > 0)) {
  process.stderr.write(`usage: node bench/ab.mjs --base DIR [--mode ${MODES.join('|')}] [--rounds N] [--concurrency N] [--workers N]\n`);
  process.exit(2);
}

const work = mkdtempSync(join(os.tmpdir(), 'buildcached-ab-'));
process.on('exit', () => {
  killAllSync();
  rmSync(work, { recursive: true, force: true });
});

const hashed = (name, size) => {
  const spec = blobSpec(name, size);
  digestOf(spec);
  return spec;
};

async function start(name, appDir, nodeArgs) {
  // startBuildcached reads its extra node flags from the environment at each start.
  process.env.BENCH_BUILDCACHED_NODE_ARGS = nodeArgs ?? '';
  const proc = await startBuildcached({ dataDir: join(work, name), logFile: join(work, `${name}.log`), appDir, workers });
  return { name, proc, t: new Target(name, proc.url) };
}
const builds = [await start('base', baseDir, option('--base-node-args')), await start('this', undefined, option('--node-args'))];

const heads = Array.from({ length: 8 }, (_, i) => hashed(`ab-head-${i}`, 1 * MiB));
const big = mode === 'pull' ? hashed('ab-pull', 256 * MiB) : undefined;
for (const { t } of builds) for (const spec of [...heads, ...(big ? [big] : [])]) await pushMonolithic(t, 'ab/x', spec);
const paths = heads.map((s) => `/v2/ab/x/blobs/${s.digest}`);
for (const { t } of builds) await headLoad(t, paths, concurrency, 1000);

/** One measurement: the figure (higher is better) and how many requests or operations its CPU time is for. */
async function measure(b, round) {
  switch (mode) {
    case 'head': {
      const r = await headLoad(b.t, paths, concurrency, 3000);
      if (r.errors) throw new Error(`${b.name}: ${r.errors} HEAD errors, first: ${r.firstError}`);
      return { value: r.rps, unit: 'req/s', per: r.requests, extra: `p99 ${r.p99.toFixed(2)} ms` };
    }
    case 'push':
    case 'chunked':
      return { value: await push(b.t, 'ab/push', hashed(`ab-push-${round}-${b.name}`, 256 * MiB), mode === 'push' ? 'monolithic' : 'chunked', 8 * MiB), unit: 'MB/s', per: 1 };
    case 'pull':
      return { value: await pullOne(b.t, 'ab/x', big), unit: 'MB/s', per: 1 };
    case 'storm': {
      const cfg = { jobs: 16, sharedLayers: 20, uniqueLayers: 5, minLayer: 1 * MiB, maxLayer: 8 * MiB };
      // A plan of its own for each build and round: nothing is already there from an earlier one.
      const res = await storm(b.t, stormPlan(2 * round + (b.name === 'base' ? 0 : 1), cfg));
      if (res.errors.length) throw new Error(`${b.name}: ${res.errors.length} storm errors, first: ${res.errors[0].message}`);
      return { value: 1 / res.wall, unit: 'storms/s', per: 1, extra: `wall ${res.wall.toFixed(2)} s` };
    }
  }
}

const samples = { base: [], this: [], baseCpu: [], thisCpu: [], ratio: [] };
let unit;
for (let r = 0; r < rounds; r++) {
  const got = {};
  for (const b of r % 2 ? [...builds].reverse() : builds) {
    const cpu0 = cpuMsOf(b.proc.pid);
    const m = await measure(b, r);
    const cpuUs = ((cpuMsOf(b.proc.pid) - cpu0) * 1000) / m.per;
    unit = m.unit;
    samples[b.name].push(m.value);
    samples[`${b.name}Cpu`].push(cpuUs);
    got[b.name] = m.value;
    console.log(`round ${r + 1}/${rounds} ${b.name}: ${m.value.toFixed(m.value < 10 ? 3 : 0)} ${m.unit}, ${cpuUs.toFixed(0)} µs CPU per ${mode === 'head' ? 'request' : 'operation'}${m.extra ? `, ${m.extra}` : ''}`);
  }
  samples.ratio.push(got.this / got.base);
}
const f = (v) => v.toFixed(v < 10 ? 3 : 0);
console.log(
  `medians: base ${f(median(samples.base))} ${unit}, this ${f(median(samples.this))} ${unit}; paired this/base ${median(samples.ratio).toFixed(3)}; ` +
    `CPU µs per ${mode === 'head' ? 'request' : 'operation'}: base ${median(samples.baseCpu).toFixed(0)}, this ${median(samples.thisCpu).toFixed(0)}`,
);
for (const { t } of builds) t.close();
await Promise.all(builds.map((b) => stop(b.proc)));
