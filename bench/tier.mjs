#!/usr/bin/env node
// The S3 tier, side by side in one run on this machine, against s3rver (the S3-compatible server the tests use, in
// its own process on loopback): push with the tier on and off, read-through against a direct SDK GetObject of the
// same objects, HEAD of a blob only in the bucket against a local one.
//
//   npm run bench:tier                 writes the "S3 tier" section of BENCHMARKS.md
//   node bench/tier.mjs --quick        smaller sizes; --no-markdown to only print
//
// s3rver stores objects as files on the same machine: these figures compare buildcached with the SDK over the same
// store, not with S3.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { MiB, blobSpec, bufferSpec, digestOf } from './lib/data.mjs';
import { Target } from './lib/http.mjs';
import { getManifest, pullBlob, pushMonolithic, putManifest } from './lib/oci.mjs';
import { REPO_ROOT, startBuildcached, stopAll, killAllSync } from './lib/procs.mjs';
import { headLoad } from './lib/scenarios.mjs';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const markdown = !args.includes('--no-markdown');
const BLOB = (quick ? 16 : 64) * MiB;
const COUNT = quick ? 2 : 4;
const HEAD_MS = quick ? 1000 : 3000;
const BUCKET = 'bench';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const work = mkdtempSync(join(os.tmpdir(), 'buildcached-bench-tier-'));
process.on('exit', () => {
  killAllSync();
  rmSync(work, { recursive: true, force: true });
});

/** User + system CPU seconds a process has used so far (from /proc: clock ticks, 100 a second on Linux). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

let s3rverPid;
let s3rver;
async function startS3rver() {
  const child = spawn(process.execPath, ['--openssl-legacy-provider', join(REPO_ROOT, 'test/helpers/s3rver-child.cjs'), join(work, 's3'), '0', BUCKET], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  process.on('exit', () => child.kill('SIGKILL'));
  s3rver = child;
  s3rverPid = child.pid;
  const port = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c) => {
      out += c;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line).port);
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
  });
  return `http://127.0.0.1:${port}`;
}

/** A daemon with the tier configured through the environment only, as a container would have it. */
async function daemon(name, endpoint) {
  const keys = ['BUILDCACHED_S3_BUCKET', 'BUILDCACHED_S3_ENDPOINT', 'BUILDCACHED_S3_PREFIX'];
  for (const k of keys) delete process.env[k];
  if (endpoint) Object.assign(process.env, { BUILDCACHED_S3_BUCKET: BUCKET, BUILDCACHED_S3_ENDPOINT: endpoint, BUILDCACHED_S3_PREFIX: 'bench' });
  const dataDir = join(work, name);
  const proc = await startBuildcached({ dataDir, logFile: join(work, `${name}.log`), workers: 1 });
  return { proc, dataDir, t: new Target(name, proc.url) };
}

function adminStatus(dataDir) {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: join(dataDir, 'admin.sock'), path: '/admin/v1/status' }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c) => (body += c)).on('end', () => resolve(JSON.parse(body)));
      })
      .on('error', reject);
  });
}

async function drained(d) {
  for (;;) {
    if ((await adminStatus(d.dataDir)).tier.backlog === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const seconds = async (fn) => {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
};
const mbps = (bytes, s) => bytes / 1e6 / s;

const endpoint = await startS3rver();
Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' });
const on = await daemon('tier-on', endpoint);
const off = await daemon('tier-off', undefined);
const sdk = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });

// 1. Push, alternating on and off blob by blob so that the machine's drift hits both alike.
const blobs = Array.from({ length: COUNT }, (_, i) => blobSpec(`tier-${i}`, BLOB));
const offBlobs = Array.from({ length: COUNT }, (_, i) => blobSpec(`local-${i}`, BLOB));
for (const b of [...blobs, ...offBlobs]) digestOf(b);
let pushOn = 0;
let pushOff = 0;
for (let i = 0; i < COUNT; i++) {
  pushOn += await seconds(() => pushMonolithic(on.t, 'bench/app', blobs[i]));
  pushOff += await seconds(() => pushMonolithic(off.t, 'bench/app', offBlobs[i]));
}
await drained(on);

// 2. Read-through from a daemon that has none of it, against the SDK reading the same objects.
// CPU seconds of each process are counted too: on a machine with few cores, s3rver, the daemon and this client
// share them, and the figure is bound by what each byte costs in all.
const reader = await daemon('tier-reader', endpoint);
let viaDaemon = 0;
let viaSdk = 0;
const cpu = { daemon: { daemon: 0, s3rver: 0, client: 0 }, sdk: { s3rver: 0, client: 0 } };
const measured = async (into, fn) => {
  const before = { daemon: cpuSeconds(reader.proc.pid), s3rver: cpuSeconds(s3rverPid), client: process.cpuUsage() };
  const s = await seconds(fn);
  const used = process.cpuUsage(before.client);
  into.client += (used.user + used.system) / 1e6;
  into.s3rver += cpuSeconds(s3rverPid) - before.s3rver;
  if ('daemon' in into) into.daemon += cpuSeconds(reader.proc.pid) - before.daemon;
  return s;
};
for (const b of blobs) {
  viaSdk += await measured(cpu.sdk, async () => {
    const r = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: `bench/blobs/sha256/${b.digest.slice(7)}` }));
    for await (const _ of r.Body) {
      // discard, as the HTTP client does
    }
  });
  viaDaemon += await measured(cpu.daemon, () => pullBlob(reader.t, 'bench/app', b));
}

// 3. HEAD: a blob only in the bucket (the reader never fetched it) against one on its disk (read through above).
const onlyInBucket = blobSpec('tier-head', 1 * MiB);
digestOf(onlyInBucket);
await pushMonolithic(on.t, 'bench/app', onlyInBucket);
await drained(on);
// Alternated, twice each, so that load from elsewhere on the machine hits both alike.
const remotePath = `/v2/bench/app/blobs/${onlyInBucket.digest}`;
const localPath = `/v2/bench/app/blobs/${blobs[0].digest}`;
const runs = { remote: [], local: [] };
for (let i = 0; i < 2; i++) {
  runs.remote.push(await headLoad(reader.t, [remotePath], 16, HEAD_MS));
  runs.local.push(await headLoad(reader.t, [localPath], 16, HEAD_MS));
}
const joined = (rs) => ({ rps: rs.reduce((n, r) => n + r.rps, 0) / rs.length, errors: rs.reduce((n, r) => n + r.errors, 0), firstError: rs.find((r) => r.firstError)?.firstError });
const headRemote = joined(runs.remote);
const headLocal = joined(runs.local);

// 4. A BuildKit-shaped cache import from daemon B of a cache daemon A received: the manifest, then its layers three
// at a time (containerd's default). Cold: the layer GETs follow the manifest at once and join the warm-on-manifest
// fetches it started. Warm: they come once warm-on-manifest has put every layer on B's disk (the time earlier build
// steps give it). Against: the same import from A, which has it all locally.
const LAYERS = quick ? 4 : 8;
const layers = Array.from({ length: LAYERS }, (_, i) => blobSpec(`import-${i}`, 8 * MiB));
for (const l of layers) {
  digestOf(l);
  await pushMonolithic(on.t, 'bench/cache', l);
}
const config = bufferSpec('import-config', Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })));
await pushMonolithic(on.t, 'bench/cache', config);
const desc = (b, mediaType) => ({ mediaType, digest: b.digest, size: b.size });
const manifest = bufferSpec(
  'import-manifest',
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: desc(config, 'application/vnd.oci.image.config.v1+json'), layers: layers.map((l) => desc(l, 'application/vnd.oci.image.layer.v1.tar+gzip')) })),
);
await putManifest(on.t, 'bench/cache', 'main', 'application/vnd.oci.image.manifest.v1+json', manifest);
await drained(on);
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';
const fetchLayers = async (t) => {
  const queue = [...layers];
  await Promise.all([0, 1, 2].map(async () => {
    for (let l = queue.shift(); l; l = queue.shift()) await pullBlob(t, 'bench/cache', l);
  }));
};
const ms = async (fn) => (await seconds(fn)) * 1000;
const importFrom = (t) => ms(async () => {
  await getManifest(t, 'bench/cache', 'main', ACCEPT);
  await fetchLayers(t);
});
const importLocal = await importFrom(on.t);
const coldReader = await daemon('import-cold', endpoint);
const importCold = await importFrom(coldReader.t);
const warmReader = await daemon('import-warm', endpoint);
const warmStart = performance.now();
await getManifest(warmReader.t, 'bench/cache', 'main', ACCEPT);
// Every layer and the config on the local disk (the manifest itself came with its record).
while ((await adminStatus(warmReader.dataDir)).blobCount < LAYERS + 2) await new Promise((r) => setTimeout(r, 20));
const warmFill = performance.now() - warmStart;
const importWarm = await ms(() => fetchLayers(warmReader.t));
const importLocalLayers = await ms(() => fetchLayers(on.t));

const bytes = BLOB * COUNT;
const rows = [
  [`push ${COUNT} × ${BLOB / MiB} MiB, POST + one PUT: tier on / tier off`, 'MB/s', mbps(bytes, pushOn), mbps(bytes, pushOff)],
  [`read-through ${COUNT} × ${BLOB / MiB} MiB from the bucket (cold daemon) / SDK GetObject of the same objects`, 'MB/s', mbps(bytes, viaDaemon), mbps(bytes, viaSdk)],
  ['HEAD, concurrency 16: blob only in the bucket / blob on the local disk', 'req/s', headRemote.rps, headLocal.rps],
  [`cache import (manifest + ${LAYERS} × 8 MiB layers, 3 at a time) from daemon B, cold: layers right after the manifest / from daemon A, all local`, 'ms', importCold, importLocal],
  [`the same from B after warm-on-manifest filled its disk: layer GETs / layer GETs from A`, 'ms', importWarm, importLocalLayers],
  ['warm-on-manifest: from the manifest GET until every layer is on B\'s disk / the cold import', 'ms', warmFill, importCold],
];
const errors = headRemote.errors + headLocal.errors;
const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const table = [
  '| figure | unit | value | against | ratio |',
  '| --- | ---: | ---: | ---: | ---: |',
  ...rows.map(([what, unit, a, b]) => `| ${what} | ${unit} | ${fmt(a)} | ${fmt(b)} | ${(a / b).toFixed(2)}× |`),
].join('\n');
const perGB = (v) => (v / (bytes / 1e9)).toFixed(2);
const cpuNote = `CPU seconds per GB read: through the daemon ${perGB(cpu.daemon.daemon)} (daemon) + ${perGB(cpu.daemon.s3rver)} (s3rver) + ${perGB(cpu.daemon.client)} (client); SDK GetObject ${perGB(cpu.sdk.s3rver)} (s3rver) + ${perGB(cpu.sdk.client)} (client), on ${os.cpus().length} cores.`;
process.stdout.write(`${table}\n${cpuNote}\n${errors ? `HEAD errors: ${errors} (${headRemote.firstError ?? headLocal.firstError})\n` : ''}`);

if (markdown && !quick) {
  const section = `<!-- tier:begin -->\n## S3 tier\n\n\`npm run bench:tier\`, ${new Date().toISOString().slice(0, 10)}, one daemon process each (\`--workers 1\`), over s3rver on loopback, all on this machine's cores: a read-through hashes, writes and reads back every byte beside s3rver, which the SDK alone does not (issue 10 asks ≥ 80 % of it).\n\n${table}\n\n${cpuNote}\n<!-- tier:end -->`;
  const path = join(REPO_ROOT, 'BENCHMARKS.md');
  const doc = readFileSync(path, 'utf8');
  const next = doc.includes('<!-- tier:begin -->') ? doc.replace(/<!-- tier:begin -->[\s\S]*<!-- tier:end -->/, section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, next);
}
sdk.destroy();
for (const d of [on, off, reader, coldReader, warmReader]) d.t.close();
await stopAll();
// Its stdout pipe would keep this process waiting for it.
await new Promise((done) => s3rver.once('exit', done).kill('SIGTERM'));
if (errors) process.exitCode = 1;
