// One function per benchmark figure. Each takes a target (a registry or the bare limit server) and returns numbers;
// run.mjs decides the order (interleaved rounds) and the reporting.
import { spawnSync } from 'node:child_process';
import { open, unlink } from 'node:fs/promises';
import { MiB, blobSpec, bufferSpec, digestOf, randomPool, slices } from './data.mjs';
import { send } from './http.mjs';
import { getManifest, headBlob, pullBlob, pushChunked, pushMonolithic, putManifest } from './oci.mjs';
import { mbps, now, percentileSorted } from './stats.mjs';

// ---------------------------------------------------------------------------------------------------------------
// Physical references

/** Sequential write of `bytes` in 4 MiB writes, then fsync (timed together); then a read back (page cache). */
export async function diskReference(path, bytes) {
  const pool = randomPool();
  const CH = 4 * MiB;
  let t0 = now();
  const w = await open(path, 'w');
  for (let off = 0; off < bytes; off += CH) {
    const n = Math.min(CH, bytes - off);
    const at = off % pool.length;
    await w.write(pool, at, Math.min(n, pool.length - at), off);
  }
  await w.sync();
  await w.close();
  const write = mbps(bytes, (now() - t0) / 1000);

  t0 = now();
  const r = await open(path, 'r');
  const buf = Buffer.allocUnsafe(CH);
  let got = 0;
  for (;;) {
    const { bytesRead } = await r.read(buf, 0, CH, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  await r.close();
  const readCached = mbps(got, (now() - t0) / 1000);

  // O_DIRECT read with dd, bypassing the page cache: what a cold blob would cost.
  let readDirect = NaN;
  const dd = spawnSync('dd', [`if=${path}`, 'of=/dev/null', 'bs=4M', 'iflag=direct'], { encoding: 'utf8' });
  const m = /(\d+) bytes .* copied, ([\d.,]+) s/.exec(dd.stderr ?? '');
  if (dd.status === 0 && m) readDirect = mbps(Number(m[1]), Number(m[2].replace(',', '.')));
  return { write, readCached, readDirect };
}

// ---------------------------------------------------------------------------------------------------------------
// Blob push

export async function push(t, repo, spec, mode, chunk) {
  const t0 = now();
  if (mode === 'monolithic') await pushMonolithic(t, repo, spec);
  else await pushChunked(t, repo, spec, chunk);
  return mbps(spec.size, (now() - t0) / 1000);
}

/** One PUT of the whole body to the bare server, which discards it: the loopback receive rate. */
export async function loopbackSink(t, spec) {
  const t0 = now();
  const res = await send(t, { method: 'PUT', path: '/sink', body: { spec } });
  if (res.status !== 201) throw new Error(`bare /sink: HTTP ${res.status}`);
  return mbps(spec.size, (now() - t0) / 1000);
}

/** Writes a blob's bytes to a new file in 4 MiB writes and fsyncs it (timed together): the disk's write rate. */
export async function diskWrite(path, spec) {
  const t0 = now();
  const fh = await open(path, 'w');
  try {
    const batch = [];
    let n = 0;
    for (const s of slices(spec)) {
      batch.push(s);
      n += s.length;
      if (n >= 4 * MiB) {
        await fh.writev(batch.splice(0));
        n = 0;
      }
    }
    if (batch.length) await fh.writev(batch);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const v = mbps(spec.size, (now() - t0) / 1000);
  await unlink(path);
  return v;
}

/**
 * The machine's limit for a push: it cannot be faster than receiving the body over loopback, nor than writing it to
 * disk durably, so the smaller of the two, both measured now, at the same size.
 */
export async function pushLimit(t, spec, scratchPath) {
  const sink = await loopbackSink(t, spec);
  const disk = await diskWrite(scratchPath, spec);
  return { value: Math.min(sink, disk), sink, disk };
}

// ---------------------------------------------------------------------------------------------------------------
// Blob pull (verified by status, Content-Length, byte count and first bytes; not hashed in the timed path)

export async function pullOne(t, repo, spec) {
  const t0 = now();
  const n = await pullBlob(t, repo, spec, 'count');
  return mbps(n, (now() - t0) / 1000);
}

export async function pullMany(t, repo, specs) {
  const t0 = now();
  const ns = await Promise.all(specs.map((s) => pullBlob(t, repo, s, 'count')));
  return mbps(ns.reduce((a, b) => a + b, 0), (now() - t0) / 1000);
}

async function bareGet(t, bytes) {
  const res = await send(t, { method: 'GET', path: `/file?bytes=${bytes}`, sink: 'count' });
  if (res.status !== 200 || res.bytes !== bytes) throw new Error(`bare /file: HTTP ${res.status}, ${res.bytes} bytes`);
  return bytes;
}

export async function pullLimit(t, bytes, streams) {
  const t0 = now();
  const ns = await Promise.all(Array.from({ length: streams }, () => bareGet(t, bytes)));
  return mbps(ns.reduce((a, b) => a + b, 0), (now() - t0) / 1000);
}

// ---------------------------------------------------------------------------------------------------------------
// HEAD blob: closed loop, `concurrency` workers for `durationMs`

export async function headLoad(t, paths, concurrency, durationMs) {
  const lat = [];
  let errors = 0;
  let firstError;
  const t0 = now();
  const deadline = t0 + durationMs;
  let i = 0;
  const worker = async () => {
    while (now() < deadline) {
      const path = paths[i++ % paths.length];
      const s = now();
      try {
        const res = await send(t, { method: 'HEAD', path });
        if (res.status !== 200) throw new Error(`HEAD: HTTP ${res.status}`);
        lat.push(now() - s);
      } catch (e) {
        errors++;
        firstError ??= e.message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (now() - t0) / 1000;
  const sorted = Float64Array.from(lat).sort();
  return {
    rps: lat.length / seconds,
    p50: percentileSorted(sorted, 50),
    p99: percentileSorted(sorted, 99),
    requests: lat.length,
    errors,
    firstError,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// CI storm: `jobs` BuildKit-like jobs at once, sharing most layers

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const CACHE_CONFIG = 'application/vnd.buildkit.cacheconfig.v0';

/** Deterministic sizes in [min, max], different per layer and round. */
function layerSize(i, round, min, max) {
  const x = Math.imul(i + 1, 2654435761) ^ Math.imul(round + 7, 40503);
  return min + ((x >>> 0) % (max - min + 1));
}

/** The blobs of one storm round (same content for every target); digests computed here, before any timing. */
export function stormPlan(round, cfg) {
  const shared = Array.from({ length: cfg.sharedLayers }, (_, k) =>
    blobSpec(`storm-r${round}-shared-${k}`, layerSize(k, round, cfg.minLayer, cfg.maxLayer)),
  );
  const jobs = Array.from({ length: cfg.jobs }, (_, j) => {
    const unique = Array.from({ length: cfg.uniqueLayers }, (_, k) =>
      blobSpec(`storm-r${round}-job${j}-${k}`, layerSize(1000 + j * 31 + k, round, cfg.minLayer, cfg.maxLayer)),
    );
    const layers = [...shared, ...unique];
    for (const l of layers) digestOf(l);
    // A BuildKit cache config: layer chain and records. Its exact content does not matter, its shape does.
    const config = bufferSpec(
      `storm-r${round}-job${j}-config`,
      Buffer.from(
        JSON.stringify({
          layers: layers.map((l, i) => ({ blob: l.digest, parent: i - 1 })),
          records: layers.map((l, i) => ({
            digest: `sha256:${Buffer.from(`rec-${round}-${j}-${i}`).toString('hex').padEnd(64, '0').slice(0, 64)}`,
            results: [{ layer: i, createdAt: '2025-01-01T00:00:00Z' }],
            inputs: i ? [[{ selector: '', link: i - 1 }]] : undefined,
          })),
        }),
      ),
    );
    // BuildKit's cache index: an image index whose manifests[] are the layers plus the cache config; no platform.
    const index = bufferSpec(
      `storm-r${round}-job${j}-index`,
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          manifests: [
            ...layers.map((l) => ({
              mediaType: LAYER,
              digest: l.digest,
              size: l.size,
              annotations: { 'buildkit/createdat': '2025-01-01T00:00:00Z', 'containerd.io/uncompressed': l.digest },
            })),
            { mediaType: CACHE_CONFIG, digest: config.digest, size: config.size },
          ],
        }),
      ),
    );
    return { layers, config, index, tag: `job-${j}` };
  });
  return { repo: `storm/r${round}/app`, jobs };
}

/**
 * Each job: HEAD then (if missing) POST + monolithic PUT for each layer and the config, one after another (as
 * BuildKit exports), then PUT the index; then GET the index by tag and GET every blob back, hashing each (full
 * verification). Errors are collected, never thrown, so a registry that rejects the index is still measured. Each
 * job sends from a loopback address of its own (127.0.0.2 on), as CI jobs run on machines of their own.
 */
export async function storm(target, plan) {
  const errors = [];
  const stats = { jobs: plan.jobs.length, indexOk: 0, blobsPushed: 0, blobsSkipped: 0, blobPushErrors: 0, blobsVerified: 0, blobPullErrors: 0, indexPullOk: 0 };
  const fail = (job, step, e) => errors.push({ job, step, message: e.message });
  const job = async (j) => {
    const { layers, config, index, tag } = plan.jobs[j];
    const t = jobTargets[j];
    for (const blob of [...layers, config]) {
      try {
        if (await headBlob(t, plan.repo, blob.digest)) stats.blobsSkipped++;
        else {
          await pushMonolithic(t, plan.repo, blob);
          stats.blobsPushed++;
        }
      } catch (e) {
        stats.blobPushErrors++;
        fail(j, 'push blob', e);
      }
    }
    try {
      await putManifest(t, plan.repo, tag, OCI_INDEX, index);
      stats.indexOk++;
    } catch (e) {
      fail(j, 'push index', e);
    }
    try {
      const res = await getManifest(t, plan.repo, tag, OCI_INDEX);
      const got = bufferSpec('index', res.body).digest;
      if (got !== index.digest) throw new Error(`GET index: got ${got}, pushed ${index.digest}`);
      stats.indexPullOk++;
    } catch (e) {
      fail(j, 'pull index', e);
    }
    for (const blob of [...layers, config]) {
      try {
        await pullBlob(t, plan.repo, blob, 'hash');
        stats.blobsVerified++;
      } catch (e) {
        stats.blobPullErrors++;
        fail(j, 'pull blob', e);
      }
    }
  };
  const jobTargets = plan.jobs.map((_, j) => target.from(`127.0.0.${j + 2}`));
  const t0 = now();
  await Promise.all(plan.jobs.map((_, j) => job(j)));
  const wall = (now() - t0) / 1000;
  for (const t of jobTargets) t.close();
  return { wall, errors, ...stats };
}
