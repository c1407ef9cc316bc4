/**
 * Helpers for the bounded-cache e2e tests (issue 3): daemons with a small budget from a config file, pushing and
 * pulling whole cache references with every byte verified, the admin API, the CLI, and a consistency check of
 * a data directory. Processes go through test/helpers/daemon.ts (tracked, killed by pid in cleanup()).
 */
import type { Status } from '../../src/cache/admin.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DAEMON_MAIN, REPO_ROOT, adminEndpointOf, makeTempDir, sleep, startDaemon, track, type AdminEndpoint, type Daemon, type DaemonOptions } from './daemon.js';
import { MT, RegistryClient, imageManifest, request, sha256, type StreamedResponse } from './registry-client.js';
import { errno } from './errors.js';
import { hashFile } from './oci-image.js';
import { blobTree, listDir, type BlobTree } from './store.js';

export const KiB = 1024;

export interface CacheConfig {
  maxBytes: number | string;
  pushGraceSeconds: number;
  highWatermark?: number;
  lowWatermark?: number;
  /** HTTP worker processes; 1 runs the whole daemon in one process. */
  workers?: number;
  logLevel?: string;
  /** More `storage:` keys (upload limits and the like), written as they are. */
  storage?: Record<string, string | number>;
}

/** Writes a YAML config file for a daemon with this budget; returns its path. */
export async function writeCacheConfig(dir: string, c: CacheConfig): Promise<string> {
  const path = join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
  const yaml = [
    `workers: ${c.workers ?? 1}`,
    'storage:',
    `  maxBytes: ${typeof c.maxBytes === 'number' ? c.maxBytes : JSON.stringify(c.maxBytes)}`,
    `  highWatermark: ${c.highWatermark ?? 0.9}`,
    `  lowWatermark: ${c.lowWatermark ?? 0.8}`,
    `  pushGraceSeconds: ${c.pushGraceSeconds}`,
    ...Object.entries(c.storage ?? {}).map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`),
    'log:',
    `  level: ${c.logLevel ?? 'info'}`,
    '',
  ].join('\n');
  await writeFile(path, yaml);
  return path;
}

export interface CacheDaemon extends Daemon {
  client: RegistryClient;
  configPath: string;
}

/** Starts a daemon on `dataDir` (a fresh one when absent) with the given budget. */
export async function startCache(c: CacheConfig & { dataDir?: string; configPath?: string }, extra: DaemonOptions = {}): Promise<CacheDaemon> {
  const dataDir = c.dataDir ?? join(await makeTempDir('buildcached-cache-'), 'data');
  const configPath = c.configPath ?? (await writeCacheConfig(await makeTempDir('buildcached-cfg-'), c));
  const d = await startDaemon({ ...extra, dataDir, args: ['--config', configPath, ...(extra.args ?? [])] });
  return Object.assign(d, { client: new RegistryClient(d.url), configPath });
}

/** A cache reference as pushed: its manifest and every blob it needs. */
export interface PushedRef {
  repo: string;
  tag: string;
  digest: string;
  manifest: Buffer;
  config: Buffer;
  layers: Buffer[];
  /** digest → content of every blob the manifest references (config and layers). */
  blobs: Map<string, Buffer>;
}

/** Random layers of the given sizes. */
export const randomLayers = (sizes: number[]) => sizes.map((s) => randomBytes(s));

/** Pushes one blob in a single POST (?digest=), expecting 201. */
export async function putBlob(c: RegistryClient, repo: string, data: Buffer): Promise<void> {
  await c.pushBlob(repo, data, 'monolithic-post');
}

/** Builds the manifest of an image over `layers` (config generated) without pushing anything. */
export function makeRef(repo: string, tag: string, layers: Buffer[]): PushedRef {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', salt: randomBytes(8).toString('hex'), rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l)) } }));
  const manifest = imageManifest(config, layers);
  // Layers first, then the config: the order BuildKit and docker push in.
  const blobs = new Map<string, Buffer>([...layers.map((l) => [sha256(l), l] as [string, Buffer]), [sha256(config), config]]);
  return { repo, tag, digest: sha256(manifest), manifest, config, layers, blobs };
}

/** PUTs the manifest of `ref` under its tag, expecting 201 (throws with the body otherwise). */
export async function putRefManifest(c: RegistryClient, ref: PushedRef): Promise<void> {
  const res = await c.putManifest(ref.repo, ref.tag, ref.manifest, MT.OCI_MANIFEST);
  if (res.status !== 201) throw new Error(`PUT ${ref.repo}:${ref.tag}: HTTP ${res.status} ${res.body.toString().slice(0, 400)}`);
}

/** Pushes a whole reference: layers and config (skipping blobs the registry already has, as BuildKit does after
 *  a HEAD), then the manifest under `tag`. */
export async function pushRef(c: RegistryClient, repo: string, tag: string, layers: Buffer[]): Promise<PushedRef> {
  const ref = makeRef(repo, tag, layers);
  for (const [d, data] of ref.blobs) {
    const head = await c.headBlob(repo, d);
    if (head.status !== 200) await putBlob(c, repo, data);
  }
  await putRefManifest(c, ref);
  return ref;
}

export interface PullResult {
  status: 'ok' | 'no-manifest';
  digest?: string;
}

/** Pulls repo:tag — the manifest, then every blob — verifying every digest. Throws on anything but a full,
 *  correct pull or a 404 for the manifest. */
export async function pullRef(c: RegistryClient, repo: string, ref: string): Promise<PullResult> {
  const m = await c.getManifest(repo, ref);
  if (m.status === 404) return { status: 'no-manifest' };
  if (m.status !== 200) throw new Error(`GET manifest ${repo}:${ref}: HTTP ${m.status} ${m.body.toString().slice(0, 300)}`);
  if (sha256(m.body) !== m.headers['docker-content-digest']) throw new Error(`manifest ${repo}:${ref} does not hash to its digest`);
  for (const d of manifestBlobs(m.body)) {
    const b = await c.getBlobDigest(repo, d);
    if (b.status !== 200) throw new Error(`GET blob ${d} of ${repo}:${ref}: HTTP ${b.status}`);
    if (b.digest !== d) throw new Error(`GET blob ${d} of ${repo}:${ref}: content hashes to ${b.digest}`);
  }
  return { status: 'ok', digest: sha256(m.body) };
}

/** The digests an image manifest or index lists (config, layers, index entries). */
export function manifestBlobs(body: Buffer): string[] {
  const doc = JSON.parse(body.toString('utf8')) as { config?: { digest: string }; layers?: Array<{ digest: string }>; manifests?: Array<{ digest: string }> };
  return [...(doc.config ? [doc.config.digest] : []), ...(doc.layers ?? []).map((l) => l.digest), ...(doc.manifests ?? []).map((l) => l.digest)];
}

/** HTTP status of GET manifest repo:ref. */
export async function manifestStatus(c: RegistryClient, repo: string, ref: string): Promise<number> {
  return (await c.getManifest(repo, ref)).status;
}

/** HTTP status of HEAD blob. */
export async function blobStatus(c: RegistryClient, repo: string, digest: string): Promise<number> {
  return (await c.headBlob(repo, digest)).status;
}

/** One request to a daemon's admin listener (a unix socket by default, or TCP with its token). */
export function adminRequest(endpoint: AdminEndpoint, method: string, path: string): Promise<StreamedResponse> {
  const headers: Record<string, string> = endpoint.token ? { Authorization: `Bearer ${endpoint.token}` } : {};
  if (endpoint.url.startsWith('unix:')) return request(method, `http://localhost${path}`, { socketPath: endpoint.url.slice('unix:'.length), headers });
  return request(method, `${endpoint.url}${path}`, { headers });
}

/** Calls the admin API of the daemon serving the registry at `base`; throws unless 200. */
export async function admin<T = Record<string, unknown>>(base: string, method: 'GET' | 'POST', path: string): Promise<T> {
  const res = await adminRequest(adminEndpointOf(base), method, path);
  if (res.status !== 200) throw new Error(`${method} ${path}: HTTP ${res.status} ${res.body.toString().slice(0, 400)}`);
  return JSON.parse(res.body.toString('utf8')) as T;
}

/** The JSON of GET /admin/v1/status (and `status --json`). */
export type StatusJson = Status;

export interface ReportJson {
  dryRun: boolean;
  reason: string;
  reclaimedBytes: number;
  removed: { uploads: number; tags: number; manifests: number; blobs: number };
  skipped: number;
  steps: Array<{ kind: 'tag' | 'manifest' | 'blob'; repo?: string; tag?: string; digest: string; size?: number }>;
}

export const status = (base: string) => admin<StatusJson>(base, 'GET', '/admin/v1/status');
export const gc = (base: string, dryRun = false) => admin<ReportJson>(base, 'POST', `/admin/v1/gc${dryRun ? '?dryRun=1' : ''}`);

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `buildcached <args>` (dist/main.js) to completion, behind `wrapper` (e.g. setpriv) when given. Tracked, so
 *  cleanup() kills it if it hangs. */
export function runCli(args: string[], timeoutMs = 30_000, wrapper: string[] = []): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BUILDCACHED_')) env[k] = v;
    const [cmd, ...rest] = [...wrapper, process.execPath, DAEMON_MAIN, ...args];
    const p = track(spawn(cmd!, rest, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    p.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`buildcached ${args.join(' ')} did not finish in ${timeoutMs} ms\nstdout:${stdout}\nstderr:${stderr}`));
    }, timeoutMs);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the CLI expecting exit 0 and JSON on stdout. */
export async function cliJson<T>(args: string[]): Promise<T> {
  const r = await runCli([...args, '--json']);
  if (r.code !== 0) throw new Error(`buildcached ${args.join(' ')} exited ${r.code}\nstderr: ${r.stderr}\nstdout: ${r.stdout}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`buildcached ${args.join(' ')} printed no JSON:\n${r.stdout}\nstderr: ${r.stderr}`);
  }
}

export async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 50): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await cond()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Sleeps until the wall-clock second changes (recency is kept in whole seconds), plus a margin. */
export async function nextSecond(margin = 50): Promise<void> {
  await sleep(1000 - (Date.now() % 1000) + margin);
}

/** Every tag file on disk: `repo:tag` → digest. */
export async function tagsOnDisk(dataDir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const dir = join(dataDir, 'repositories', rel);
    for (const name of await listDir(dir)) {
      if (name === '_tags') {
        for (const t of await listDir(join(dir, '_tags'))) {
          if (t.startsWith('.')) continue; // set aside by an eviction, not a tag
          out.set(`${rel}:${t}`, (await readFile(join(dir, '_tags', t), 'utf8').catch(() => '')).trim());
        }
      } else if (!name.startsWith('_')) {
        await walk(rel ? `${rel}/${name}` : name);
      }
    }
  };
  await walk('');
  return out;
}

/** Every manifest record on disk: { repo, digest, references }. */
export async function manifestRecordsOnDisk(dataDir: string): Promise<Array<{ repo: string; digest: string; references: string[] }>> {
  const out: Array<{ repo: string; digest: string; references: string[] }> = [];
  const walk = async (rel: string): Promise<void> => {
    const dir = join(dataDir, 'repositories', rel);
    for (const name of await listDir(dir)) {
      if (name === '_manifests') {
        for (const algo of await listDir(join(dir, '_manifests'))) {
          for (const f of await listDir(join(dir, '_manifests', algo))) {
            const rec = JSON.parse(await readFile(join(dir, '_manifests', algo, f), 'utf8')) as { digest: string; references: string[] };
            out.push({ repo: rel, digest: rec.digest, references: rec.references });
          }
        }
      } else if (!name.startsWith('_')) {
        await walk(rel ? `${rel}/${name}` : name);
      }
    }
  };
  await walk('');
  return out;
}

/**
 * Blob files whose content does not hash to their name. A file evicted while this runs is skipped (eviction may
 * still be running when the test looks).
 */
export async function corruptBlobFiles(tree: BlobTree): Promise<string[]> {
  const bad: string[] = [];
  for (const [digest, f] of tree.blobs) {
    if (!digest.startsWith('sha256:')) continue;
    try {
      if ((await hashFile(f.path)) !== digest) bad.push(`${digest} (${f.size} bytes on disk)`);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
    }
  }
  return bad;
}

/**
 * The store invariants after eviction or a crash, checked from disk and through the daemon:
 * every manifest record's bytes and referenced blobs are present; every tag points at a recorded manifest; no
 * stray or corrupt file under blobs/; DATA/tmp empty (when `expectEmptyTmp`); and through the API every tag's
 * manifest GETs with its digest and every blob it references GETs with the right content. `ignoreCorrupt` names
 * blobs an earlier test already reported as damaged (so one daemon bug fails one test, not every later one).
 */
export async function checkStore(
  dataDir: string,
  c: RegistryClient | undefined,
  opts: { expectEmptyTmp?: boolean; ignoreCorrupt?: ReadonlySet<string> } = {},
): Promise<{ tags: number; manifests: number; blobs: number }> {
  const problems: string[] = [];
  const tree = await blobTree(dataDir);
  if (tree.strays.length) problems.push(`strays under blobs/: ${tree.strays.join(', ')}`);
  const corrupt = (await corruptBlobFiles(tree)).filter((x) => !opts.ignoreCorrupt?.has(x.split(' ')[0]!));
  if (corrupt.length) problems.push(`corrupt blobs: ${corrupt.join(', ')}`);
  const records = await manifestRecordsOnDisk(dataDir);
  const recorded = new Set(records.map((r) => `${r.repo}@${r.digest}`));
  for (const r of records) {
    for (const d of [r.digest, ...r.references]) {
      if (!tree.blobs.has(d)) problems.push(`manifest ${r.repo}@${r.digest} needs blob ${d}, which is gone`);
    }
  }
  const tags = await tagsOnDisk(dataDir);
  for (const [rt, d] of tags) {
    const repo = rt.slice(0, rt.lastIndexOf(':'));
    if (!recorded.has(`${repo}@${d}`)) problems.push(`tag ${rt} points to ${d}, which has no manifest record`);
  }
  if (opts.expectEmptyTmp) {
    const tmp = await listDir(join(dataDir, 'tmp'));
    if (tmp.length) problems.push(`DATA/tmp holds leftovers: ${tmp.join(', ')}`);
  }
  if (c) {
    for (const [rt, d] of tags) {
      const repo = rt.slice(0, rt.lastIndexOf(':'));
      const rec = records.find((r) => r.repo === repo && r.digest === d);
      if (opts.ignoreCorrupt && rec?.references.some((x) => opts.ignoreCorrupt!.has(x))) continue;
      const i = rt.lastIndexOf(':');
      try {
        const r = await pullRef(c, rt.slice(0, i), rt.slice(i + 1));
        if (r.status !== 'ok') problems.push(`tag ${rt} is on disk but its manifest does not GET`);
      } catch (e) {
        problems.push((e as Error).message);
      }
    }
  }
  if (problems.length) throw new Error(`store ${dataDir} is inconsistent:\n  ${problems.slice(0, 30).join('\n  ')}`);
  return { tags: tags.size, manifests: records.length, blobs: tree.blobs.size };
}

/** Open descriptors of `pid` that point at deleted files under `under` (Linux /proc), or undefined without /proc. */
export async function deletedOpenFiles(pid: number, under: string): Promise<string[] | undefined> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const { readlink } = await import('node:fs/promises');
  const out: string[] = [];
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (target.startsWith(under) && target.endsWith(' (deleted)')) out.push(target);
  }
  return out;
}

export type { StreamedResponse };
