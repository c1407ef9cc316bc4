#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof): top functions by self time, and time by package/file.
//   node bench/profile-top.mjs bench/results/CPU.*.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';

process.stdout.on('error', () => process.exit(0)); // piped into head
const args = process.argv.slice(2);
const file = args.find((a) => a.endsWith('.cpuprofile'));
if (!file) {
  process.stderr.write('usage: node bench/profile-top.mjs FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const topN = Number(args[args.indexOf('--top') + 1]) || 30;
const prof = JSON.parse(readFileSync(file, 'utf8'));

// Self time per node: samples × their time deltas.
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
// Idle time says nothing about where work goes: percentages are of busy (non-idle) time.
const idleIds = new Set(prof.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
const idleUs = [...idleIds].reduce((a, id) => a + (selfUs.get(id) ?? 0), 0);
for (const id of idleIds) selfUs.delete(id);
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url) =>
  url
    .replace(/^file:\/\//, '')
    .replace(/^.*\/node_modules\//, 'npm:')
    .replace(/^.*\/dist\//, 'dist/');
const byFn = new Map();
const byFile = new Map();
for (const n of prof.nodes) {
  const us = selfUs.get(n.id) ?? 0;
  if (!us) continue;
  const cf = n.callFrame;
  const where = cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : '(native)';
  const key = `${cf.functionName || '(anonymous)'}  ${where}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
  const fileKey = cf.url ? (shortUrl(cf.url).startsWith('npm:') ? shortUrl(cf.url).split('/').slice(0, 1 + shortUrl(cf.url).startsWith('npm:@')).join('/') : shortUrl(cf.url)) : cf.functionName || '(native)';
  byFile.set(fileKey, (byFile.get(fileKey) ?? 0) + us);
}
const show = (title, m, n) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) {
    process.stdout.write(`${(us / 1000).toFixed(0).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}\n`);
  }
};
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s busy (+ ${(idleUs / 1e6).toFixed(2)} s idle), ${prof.samples.length} samples; % of busy time\n`);
show(`top ${topN} functions by self time`, byFn, topN);
show('self time by file / package', byFile, 20);
