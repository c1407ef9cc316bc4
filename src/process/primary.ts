import cluster, { type Worker } from 'node:cluster';
import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { StoreEvent, Verdict } from '../storage/events.js';
import { Layout } from '../storage/layout.js';
import { writeFileAtomic } from '../storage/fs-util.js';
import { serveAdmin, type AdminServer } from '../http/admin-server.js';
import { ListenError } from '../http/server.js';
import { loadTls } from '../http/tls.js';
import { openStore, type OpenedStore } from '../store.js';
import { WORKER_CONFIG_ENV, WORKER_LISTEN_ENV, isMessage, type PrimaryMessage, type UsageSignal, type WorkerMessage } from './messages.js';
import { announce, lockDataDir, tierDegraded, type Running } from './single.js';
import { OciError } from '../core/errors.js';
import { BlockList, LoginLimiter, localGuard } from '../auth/login-limiter.js';
import { loadAuthenticator, loginLimits } from '../auth/setup.js';
import { processRegistry } from '../observability/metrics.js';
import { registerStoreMetrics } from '../observability/store-metrics.js';
import { serveMetrics, type MetricsServer } from '../http/metrics-server.js';
import { ClusterMetrics } from './cluster-metrics.js';
import { withHeapFloor } from './heap-floor.js';

/** A worker's batched cache signals, fed to the same tracker (and analytics) a single-process daemon uses. */
function applyUsage(store: OpenedStore, signals: UsageSignal[]): void {
  const cache = store.cache;
  for (const s of signals) {
    switch (s[0]) {
      case 'a':
        store.references.record(s[1]);
        break;
      case 'h':
        store.hits.record(s[1], s[2]);
        break;
      case 't':
        store.tier?.directory.readThrough(s[1], s[2]);
        break;
      case 'p':
        cache.blobProbed(s[1]);
        break;
      case 'r':
        cache.blobRead(s[1]);
        break;
      case 'w':
        cache.written(s[1]);
        break;
      case 'm':
        cache.manifestUsed(s[1], s[2], s[3] ?? undefined);
        break;
      case 'f':
        cache.storageFull();
        break;
      case 'b':
        cache.fallbackServed(s[1]);
        break;
    }
  }
}

/**
 * The primary of `serve --workers N`: takes the data-dir lock, cleans up and loads the store, runs recency,
 * eviction, upload expiry and the admin listener, and forks N workers that serve HTTP on one shared port. It relays every index change
 * a worker commits to the other workers (and its own evictor's changes to all), so each process's in-memory
 * index follows the disk; a worker that dies is replaced and its temp files removed.
 */
export async function startPrimary(config: Config, log: Logger, workers: number): Promise<Running> {
  // Checked here too, so that a bad certificate stops the daemon with its own message, not N workers' deaths.
  if (config.tls) await loadTls(config.tls);
  const layout = new Layout(resolve(config.storage.dir));
  const release = await lockDataDir(layout, log);
  try {
    // Likewise a missing htpasswd or JWKS file; this also creates the token secret before the workers race for it.
    if (config.auth) await loadAuthenticator(config.auth, layout, localGuard(loginLimits(config)), log);
  } catch (e) {
    await release();
    throw e;
  }
  let store: OpenedStore;
  let admin: AdminServer;
  try {
    store = await openStore(config, log);
  } catch (e) {
    await release();
    throw e;
  }
  try {
    // Every worker, replacements too, serves with the configuration validated here, whatever the file says by then.
    await writeFileAtomic(layout.workerConfig, JSON.stringify(config), layout.tmp, 0o600);
    // Admin operations run here, where the evictor and recency live: no worker is involved.
    admin = await serveAdmin(config, layout, store.admin, log);
  } catch (e) {
    await store.close();
    await release();
    throw e;
  }
  const live = new Set<Worker>();
  const logins = new LoginLimiter(loginLimits(config));
  /** Blocks in force, for workers that start (or are replaced) after they were decided. */
  const blocks = new BlockList();
  /** Workers that said they listen. One still starting may not hear a message yet; it serves nothing, so at
   *  shutdown it is simply killed. */
  const serving = new Set<Worker>();
  const post = (w: Worker, m: PrimaryMessage) => {
    if (w.isConnected()) w.send(m);
  };
  // Change events: a change counts as done once every serving worker has applied it, so that whatever a client
  // reads next, through any worker, reflects it. A worker still starting applies it when it can; none waits for it.
  let nextAck = 1;
  const awaiting = new Map<number, { left: Set<Worker>; kept: boolean; done: (v: Verdict) => void }>();
  const finish = (ack: number) => {
    const a = awaiting.get(ack);
    if (!a) return;
    awaiting.delete(ack);
    a.done(a.kept ? 'kept' : 'applied');
  };
  const applied = (ack: number, w: Worker, kept: boolean) => {
    const a = awaiting.get(ack);
    if (!a || !a.left.delete(w)) return;
    a.kept ||= kept;
    if (a.left.size === 0) finish(ack);
  };
  const publish = (event: StoreEvent, except?: Worker): Promise<Verdict> => {
    const ack = nextAck++;
    const left = new Set([...serving].filter((w) => w !== except && w.isConnected()));
    for (const w of live) if (w !== except) post(w, { kind: 'store', event, ack: left.has(w) ? ack : 0 });
    if (left.size === 0) return Promise.resolve('applied');
    return new Promise<Verdict>((done) => {
      awaiting.set(ack, { left, kept: false, done });
      // A worker too busy to answer must not stall writes forever; its index catches up when it gets there.
      setTimeout(() => finish(ack), 2_000).unref();
    });
  };
  // The evictor, gc and prune run here: workers learn about their removals like any other change.
  // Every committed change is journaled for the tier (when there is one) before anyone is told of it.
  const committed = async (e: StoreEvent, except?: Worker): Promise<Verdict> => {
    await store.tier?.writeBack.observe(e);
    return publish(e, except);
  };
  store.blobs.subscribe((e) => committed(e));
  store.repos.subscribe((e) => committed(e));
  store.tier?.writeBack.onForget((digest) => {
    for (const w of live) post(w, { kind: 'tier-forget', digest });
  });

  // The store's gauges and this process's own figures live here; the HTTP counters live in the workers.
  let metrics: ClusterMetrics | undefined;
  if (config.metrics.enabled) {
    const registry = processRegistry();
    registerStoreMetrics(registry, store, config.metrics.topReferences);
    metrics = new ClusterMetrics(registry, () => serving, post);
  }

  let stopping = false;
  let started = false;
  let onListening: (url: string) => void = () => {};
  let onFailedStart: (e: Error) => void = () => {};
  const listening = new Promise<string>((ok, fail) => {
    onListening = ok;
    onFailedStart = fail;
  });
  // "listening" is announced once every worker serves, so the daemon is whole when it says so.
  let listeningWorkers = 0;

  // Replacements listen where the first workers ended up, even when the configured port was 0 (any free port).
  let boundAddress: string | undefined;
  cluster.setupPrimary({ execArgv: withHeapFloor(process.execArgv, process.env.NODE_OPTIONS) });
  const fork = (): Worker => {
    const w = cluster.fork({ [WORKER_CONFIG_ENV]: layout.workerConfig, ...(boundAddress ? { [WORKER_LISTEN_ENV]: boundAddress } : {}) });
    live.add(w);
    // Reservations this worker holds, released if it dies holding them.
    const held = new Map<number, () => void>();
    const holder = `worker ${w.id}`;
    w.on('message', (m: unknown) => {
      if (!isMessage(m)) return;
      const msg = m as WorkerMessage;
      if (msg.kind === 'applied') {
        applied(msg.ack, w, msg.kept === true);
      } else if (msg.kind === 'usage') {
        applyUsage(store, msg.signals);
      } else if (msg.kind === 'request') {
        const call = msg.call;
        let answer: Promise<unknown>;
        if (call.op === 'publish') {
          store.blobs.apply(call.event);
          answer = Promise.all([store.repos.apply(call.event), committed(call.event, w)]).then(([, verdict]) => verdict);
        } else if (call.op === 'ledger') {
          answer = store.ledger.handle(call.req, holder);
        } else if (call.op === 'metrics') {
          answer = metrics ? metrics.text() : Promise.reject(new Error('metrics are off'));
        } else if (call.op === 'tier-size') {
          answer = store.tier ? store.tier.directory.blobSize(call.digest) : Promise.resolve(undefined);
        } else if (call.op === 'tier-claim') {
          answer = store.tier ? store.tier.directory.claim(call.digest, holder) : Promise.resolve('failed');
        } else if (call.op === 'tier-importable') {
          answer = store.tier ? store.tier.directory.importable(call.repo, call.ref) : Promise.resolve(false);
        } else if (call.op === 'tier-ready') {
          answer = Promise.resolve(tierDegraded(store) ?? null);
        } else if (call.op === 'push-miss') {
          answer = store.claims ? store.claims.missed(call.key, call.party, call.claim, holder) : Promise.resolve('none');
        } else {
          answer = store.cache.reserve(call.digests).then((r) => {
            held.set(msg.id, r.release);
            return r.missing;
          });
        }
        answer.then(
          (value) => post(w, { kind: 'reply', id: msg.id, ok: true, value }),
          (err: unknown) =>
            post(w, {
              kind: 'reply',
              id: msg.id,
              ok: false,
              message: (err as Error).message,
              ...(err instanceof OciError ? { code: err.code, detail: err.detail } : {}),
            }),
        );
      } else if (msg.kind === 'push-begin') {
        store.claims?.begin(`${holder} ${msg.id}`, msg.key, holder);
      } else if (msg.kind === 'push-end') {
        store.claims?.end(`${holder} ${msg.id}`);
      } else if (msg.kind === 'push-hold') {
        store.claims?.hold(`${holder} ${msg.id}`, msg.party, holder);
      } else if (msg.kind === 'push-release') {
        store.claims?.release(`${holder} ${msg.id}`);
      } else if (msg.kind === 'tier-settle') {
        store.tier?.directory.settle(msg.digest, msg.ok, msg.corrupt === true);
      } else if (msg.kind === 'release') {
        held.get(msg.id)?.();
        held.delete(msg.id);
      } else if (msg.kind === 'login-failed') {
        const until = logins.failed(msg.address);
        if (until !== undefined) {
          blocks.block(msg.address, until);
          for (const other of live) post(other, { kind: 'login-blocked', address: msg.address, until });
        }
      } else if (msg.kind === 'metrics') {
        metrics?.received(msg.id, w, msg.snapshot);
      } else if (msg.kind === 'listening') {
        for (const [address, until] of blocks.active()) post(w, { kind: 'login-blocked', address, until });
        serving.add(w);
        if (++listeningWorkers >= workers) onListening(msg.url);
      }
    });
    w.on('exit', (code, signal) => {
      live.delete(w);
      serving.delete(w);
      for (const ack of [...awaiting.keys()]) applied(ack, w, false);
      metrics?.gone(w);
      for (const release of held.values()) release();
      held.clear();
      store.tier?.directory.releaseHolder(holder);
      store.claims?.releaseHolder(holder);
      // Its file handles closed with it: the sessions it was writing to are free again, at their size on disk.
      for (const id of store.ledger.releaseHolder(holder)) void store.uploads.sizeOf(id).then((size) => store.ledger.resize(id, size));
      const pid = w.process.pid;
      if (pid !== undefined) void store.blobs.removeLeftovers(pid);
      if (stopping) return;
      // Before the daemon listens, a worker's death is a start-up error (it printed why): do not loop on it.
      if (!started) return onFailedStart(new ListenError(`a worker could not start (exit code ${code}); its reason is above`));
      // `workerPid`: every line already carries the primary's own `pid`.
      log.error({ workerPid: pid, code, signal }, 'worker exited unexpectedly; starting a new one');
      // Not unref'd: with every worker gone this timer is what keeps the primary alive to replace them.
      setTimeout(() => stopping || fork(), 500);
    });
    return w;
  };

  for (let i = 0; i < workers; i++) fork();
  let url: string;
  let metricsServer: MetricsServer | undefined;
  try {
    url = await listening;
    started = true;
    boundAddress = new URL(url).host;
    metricsServer = metrics && (await serveMetrics(config, metrics, log));
  } catch (e) {
    stopping = true;
    for (const w of live) w.kill();
    await admin.close();
    await store.close();
    await release();
    throw e;
  }
  store.startBackground();
  await announce(layout, log, url, admin, workers, metricsServer?.url);

  return {
    url,
    reloadTls: () => {
      for (const w of serving) post(w, { kind: 'reload-tls' });
    },
    close: async () => {
      stopping = true;
      await admin.close();
      await metricsServer?.close();
      const exited = [...live].map((w) => new Promise<void>((done) => (w.isDead() ? done() : w.once('exit', () => done()))));
      for (const w of live) {
        if (serving.has(w)) post(w, { kind: 'shutdown' });
        else w.process.kill('SIGKILL');
      }
      // Workers drain within the shutdown timeout; one that does not is killed rather than waited for forever.
      const kill = setTimeout(() => {
        for (const w of live) w.process.kill('SIGKILL');
      }, config.shutdownTimeout + 5_000).unref();
      await Promise.all(exited);
      clearTimeout(kill);
      await store.close();
      await release();
    },
  };
}
