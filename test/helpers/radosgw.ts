/**
 * Ceph's S3 gateway for the tier tests: a one-node cluster (one monitor, one bluestore OSD on a sparse file, no
 * cephx) and radosgw, all on 127.0.0.1 in a temp dir. Starting it takes ~20 s, so one cluster serves a whole test
 * file (each test gets its own bucket); the file stops it in afterAll. stop()/start() of a test's store kill and
 * restart radosgw alone, on the same port: an outage and a recovery as a daemon pointed at it sees them.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { haveTool } from './daemon.js';
import { S3_ENV, storeServer, type S3Server } from './s3.js';

const run = promisify(execFile);

/** Whether this machine can run the cluster; CI installs it, so only a developer's machine may skip. */
export const radosgwMissing = !['ceph', 'ceph-mon', 'ceph-osd', 'monmaptool', 'radosgw', 'radosgw-admin'].every(haveTool) && process.env.CI !== 'true';

interface Cluster {
  dir: string;
  conf: string;
  rgwPort: number;
  procs: Map<string, ChildProcess>;
  logs: Map<string, string>;
}

let cluster: Promise<Cluster> | undefined;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function daemon(c: Cluster, name: string, cmd: string, args: string[]): void {
  const proc = spawn(cmd, ['-c', c.conf, ...args, '-f'], { stdio: ['ignore', 'ignore', 'pipe'] });
  c.logs.set(name, '');
  proc.stderr!.setEncoding('utf8').on('data', (s: string) => c.logs.set(name, (c.logs.get(name)! + s).slice(-4000)));
  c.procs.set(name, proc);
  proc.once('exit', () => c.procs.get(name) === proc && c.procs.delete(name));
}

/** Resolves once radosgw answers HTTP on its port (any status). */
async function rgwUp(c: Cluster, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fetch(`http://127.0.0.1:${c.rgwPort}/`, { signal: AbortSignal.timeout(2000) });
      return;
    } catch {
      if (!c.procs.has('rgw')) throw new Error(`radosgw exited: ${c.logs.get('rgw')}`);
      if (Date.now() > until) throw new Error(`radosgw did not answer within ${timeoutMs} ms: ${c.logs.get('rgw')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function startCluster(): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'buildcached-ceph-'));
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const c: Cluster = { dir, conf: join(dir, 'ceph.conf'), rgwPort, procs: new Map(), logs: new Map() };
  const fsid = crypto.randomUUID();
  for (const d of ['mon', 'osd/0', 'run', 'log', 'rgw']) await mkdir(join(dir, d), { recursive: true });
  // One copy of everything, small placement groups, no cephx (radosgw still checks S3 signatures), and no stop on a
  // nearly full test disk: a throwaway cluster.
  await writeFile(c.conf, `[global]
fsid = ${fsid}
mon_host = v2:127.0.0.1:${monPort}
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
ms_mon_service_mode = crc
ms_mon_cluster_mode = crc
run_dir = ${dir}/run
admin_socket = ${dir}/run/$name.asok
log_file = ${dir}/log/$name.log
pid_file = ${dir}/run/$name.pid
keyring = ${dir}/keyring
mon_data = ${dir}/mon/$id
osd_data = ${dir}/osd/$id
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 4294967296
osd_crush_chooseleaf_type = 0
osd_memory_target = 536870912
bluestore_cache_size = 67108864
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw_data = ${dir}/rgw
`);
  await writeFile(join(dir, 'keyring'), '');
  try {
    const opts = { timeout: 60_000 };
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')], opts);
    await run('ceph-mon', ['-c', c.conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')], opts);
    daemon(c, 'mon', 'ceph-mon', ['-i', 'a']);
    const uuid = crypto.randomUUID();
    const id = (await run('ceph', ['-c', c.conf, '--connect-timeout', '30', 'osd', 'new', uuid], opts)).stdout.trim();
    await run('ceph-osd', ['-c', c.conf, '-i', id, '--mkfs', '--osd-uuid', uuid], opts);
    daemon(c, 'osd', 'ceph-osd', ['-i', id]);
    daemon(c, 'rgw', 'radosgw', ['-n', 'client.rgw']);
    await rgwUp(c, 90_000);
    // The tests' one S3 account, with the keys s3rver has built in, so a daemon's env is the same on both stores.
    await run('radosgw-admin', ['-c', c.conf, 'user', 'create', '--uid', 'buildcached-test', '--display-name', 'buildcached tests',
      '--access-key', S3_ENV.AWS_ACCESS_KEY_ID, '--secret-key', S3_ENV.AWS_SECRET_ACCESS_KEY], opts);
    return c;
  } catch (e) {
    await stopCluster(c);
    throw new Error(`${(e as Error).message}\n${[...c.logs].map(([n, l]) => `${n}: ${l}`).join('\n')}`);
  }
}

async function stopCluster(c: Cluster): Promise<void> {
  await Promise.all([...c.procs.values()].map((p) => kill(p)));
  await rm(c.dir, { recursive: true, force: true });
}

async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await exited;
}

/** Stops this file's cluster, if one was started (its afterAll). */
export async function stopRadosgw(): Promise<void> {
  const started = await cluster?.catch(() => undefined);
  cluster = undefined;
  if (started) await stopCluster(started);
}

/** Starts this file's cluster, unless it is running already. */
export async function startRadosgwCluster(): Promise<void> {
  cluster ??= startCluster();
  await cluster;
}

/** A new, empty bucket on this file's cluster (started on first use), as an S3Server like startS3()'s. */
export async function startRadosgw(): Promise<S3Server> {
  cluster ??= startCluster();
  const c = await cluster;
  const endpoint = `http://127.0.0.1:${c.rgwPort}`;
  const bucket = `cache-${randomBytes(4).toString('hex')}`;
  const server = storeServer(endpoint, c.rgwPort, bucket, {
    stop: async () => {
      const p = c.procs.get('rgw');
      if (p) await kill(p);
    },
    start: async () => {
      if (c.procs.has('rgw')) return;
      daemon(c, 'rgw', 'radosgw', ['-n', 'client.rgw']);
      await rgwUp(c, 60_000);
    },
  });
  await server.client.send(new CreateBucketCommand({ Bucket: bucket }));
  return server;
}
