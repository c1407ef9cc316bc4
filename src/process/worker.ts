import type { Config } from '../config/schema.js';
import { serveHttp } from '../http/server.js';
import type { Logger } from '../observability/logger.js';
import type { CacheHooks, Reservation } from '../registry/registry.js';
import type { StoreEvent, Verdict } from '../storage/events.js';
import { nowSeconds } from '../cache/clock.js';
import { ProbeWindow } from '../cache/probes.js';
import { openWorkerStores } from '../store.js';
import type { ClaimVerdict, PushClaims } from '../registry/push-claims.js';
import { LedgerGate } from '../storage/write-gate.js';
import { OciError } from '../core/errors.js';
import { BlockList, LoginLimiter, type LoginGuard } from '../auth/login-limiter.js';
import { loginLimits } from '../auth/setup.js';
import { HttpMetrics, processRegistry } from '../observability/metrics.js';
import type { ReferenceActivity } from '../cache/reference-stats.js';
import { growingLru } from '../core/growing-lru.js';
import type { TierDirectory } from '../tiers/read-through.js';

/** Sizes of blobs the tier holds, as the primary answered them: immutable under their digest, kept an hour. */
const tierSizes = growingLru<string, number>(100_000, { ttl: 60 * 60_000 });
import { WORKER_LISTEN_ENV, isMessage, type AdminOp, type PrimaryMessage, type UsageSignal, type WorkerMessage } from './messages.js';

const send = (m: WorkerMessage) => process.send?.(m);

/** Requests to the primary, each answered by a reply with the same id. */
class PrimaryChannel {
  private next = 1;
  private readonly pending = new Map<number, { ok: (v: unknown) => void; fail: (e: Error) => void }>();

  settle(m: Extract<PrimaryMessage, { kind: 'reply' }>): void {
    const p = this.pending.get(m.id);
    this.pending.delete(m.id);
    if (m.ok) p?.ok(m.value);
    else p?.fail(m.code ? new OciError(m.code, m.message, m.detail) : new Error(m.message));
  }

  call<T>(call: AdminOp): Promise<{ id: number; value: T }> {
    const id = this.next++;
    return new Promise((ok, fail) => {
      this.pending.set(id, { ok: (value) => ok({ id, value: value as T }), fail });
      send({ kind: 'request', id, call });
    });
  }
}

/**
 * Cache signals from this worker's requests, sent to the primary in batches (at most one IPC message per 20 ms),
 * so the hot path (BuildKit's HEADs) costs an array push. Reservations are a round trip: the primary evicts,
 * so only it can promise that a blob stays.
 */
class ForwardingHooks implements CacheHooks {
  private batch: UsageSignal[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Cache lookups since the last batch: counted here and sent as one signal, so a lookup costs an addition. */
  private hits = 0;
  private misses = 0;
  /** Blobs this worker answered a HEAD or mount for: the primary hears of them up to 20 ms late, so an eviction
   *  it started meanwhile asks here before a blob goes. */
  readonly probed: ProbeWindow;
  private lastSweep = nowSeconds();

  constructor(
    private readonly channel: PrimaryChannel,
    graceSeconds: number,
  ) {
    this.probed = new ProbeWindow(graceSeconds);
  }

  private push(s: UsageSignal): void {
    this.batch.push(s);
    this.arm();
  }

  /**
   * A batch carries each blob's probe and read once, and each blob's latest HEAD per repository since the last
   * other activity: a second of them within one batch changes nothing the primary keeps (recency moves by at most
   * the batching delay; the analytics count the last probe of a blob before a push), and a HEAD storm probes the
   * same few blobs thousands of times a second, which the IPC channel otherwise serialises one by one.
   */
  private readonly seen = new Set<string>();
  private readonly probeAt = new Map<string, number>();

  private pushOnce(s: ['p' | 'r', string]): void {
    const key = s[0] + s[1];
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.push(s);
  }

  private arm(): void {
    this.timer ??= setTimeout(() => this.flush(), 20);
  }

  lookup(hit: boolean): void {
    if (hit) this.hits++;
    else this.misses++;
    this.arm();
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = nowSeconds();
    if (now - this.lastSweep >= 10) {
      this.lastSweep = now;
      this.probed.sweep(now);
    }
    if (this.hits + this.misses > 0) {
      this.batch.push(['h', this.hits, this.misses]);
      this.hits = this.misses = 0;
    }
    if (this.batch.length === 0) return;
    send({ kind: 'usage', signals: this.batch });
    this.batch = [];
    this.seen.clear();
    this.probeAt.clear();
  }

  async reserve(digests: string[]): Promise<Reservation> {
    const { id, value } = await this.channel.call<string[]>({ op: 'reserve', digests });
    // Sent after the manifest's store event on the same channel, so the primary sees the record first.
    return { missing: value, release: () => send({ kind: 'release', id }) };
  }
  blobProbed(digest: string): void {
    this.probed.protect(digest);
    this.pushOnce(['p', digest]);
  }
  blobRead(digest: string): void {
    this.pushOnce(['r', digest]);
  }
  written(digest: string): void {
    this.push(['w', digest]);
  }
  manifestUsed(repo: string, digest: string, tag: string | undefined): void {
    this.push(['m', repo, digest, tag ?? null]);
  }
  storageFull(): void {
    this.push(['f']);
  }
  fallbackServed(repo: string): void {
    this.push(['b', repo]);
  }
  /** For the reference analytics, which the primary keeps. */
  activity(a: ReferenceActivity): void {
    if (a.kind !== 'probe') {
      this.probeAt.clear();
      return this.push(['a', a]);
    }
    const key = `${a.repo}\0${a.digest}`;
    const i = this.probeAt.get(key);
    if (i !== undefined) return void (this.batch[i] = ['a', a]);
    this.probeAt.set(key, this.batch.length);
    this.push(['a', a]);
  }
  tierRead(bytes: number, ok: boolean): void {
    this.push(['t', bytes, ok]);
  }
}

/** This worker counts its own requests; a scrape it receives is answered with the primary's sum of all processes. */
function workerMetrics(channel: PrimaryChannel) {
  const registry = processRegistry();
  const source = { contentType: registry.contentType, text: async () => (await channel.call<string>({ op: 'metrics' })).value };
  return { registry, app: { http: new HttpMetrics(registry), source } };
}

/** A worker process: loads the indexes, serves HTTP on the shared port, keeps its indexes in step via the primary. */
export async function runWorker(configured: Config, log: Logger): Promise<void> {
  const listen = process.env[WORKER_LISTEN_ENV];
  const config = listen ? { ...configured, listen } : configured;
  const channel = new PrimaryChannel();
  const hooks = new ForwardingHooks(channel, config.storage.pushGraceSeconds);
  let stopping = false;
  let stop: () => void = () => {
    stopping = true; // asked to stop before serving: do it as soon as the server is up
  };
  let reloadTls = () => {}; // before it serves, a worker reads the TLS files as they are now anyway
  const pending: PrimaryMessage[] = [];
  // Logins are limited here, with the attempts in flight, and for the whole daemon by the primary, which hears of
  // every failure and tells every worker of the blocks it decides.
  const blocked = new BlockList();
  // This worker's share of the limit, so that a burst spread over all of them stays near it in all.
  const limits = loginLimits(config);
  const logins = new LoginLimiter({ ...limits, maxFailures: Math.max(1, Math.ceil(limits.maxFailures / config.workers)) });
  const loginGuard: LoginGuard = {
    retryAfter: (address) => blocked.retryAfter(address) || logins.retryAfter(address),
    admit: (address) => blocked.retryAfter(address) || logins.admit(address),
    settle: (address, failed) => {
      logins.settle(address, failed);
      if (failed) send({ kind: 'login-failed', address });
    },
  };
  let handle: (m: PrimaryMessage) => void = (m) => pending.push(m);
  // Listen to the primary from the first moment: a shutdown may come while the indexes still load.
  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    const msg = m as PrimaryMessage;
    if (msg.kind === 'shutdown') stop();
    else if (msg.kind === 'reload-tls') reloadTls();
    else if (msg.kind === 'login-blocked') blocked.block(msg.address, msg.until);
    else handle(msg);
  });
  // Unasked, the primary is gone (crashed or killed): a worker must not serve a store nobody owns.
  process.on('disconnect', () => process.exit(stopping ? 0 : 1));
  process.on('SIGTERM', () => {}); // the primary decides when a worker stops
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {}); // a reload comes from the primary (reload-tls); the signal's default would end us

  const metrics = config.metrics.enabled ? workerMetrics(channel) : undefined;
  const gate = new LedgerGate(async (req) => (await channel.call<number | undefined>({ op: 'ledger', req })).value);
  const directory: TierDirectory = {
    blobSize: async (digest) => {
      const known = tierSizes.get(digest);
      if (known !== undefined) return known;
      const size = (await channel.call<number | null | undefined>({ op: 'tier-size', digest })).value ?? undefined;
      if (size !== undefined) tierSizes.set(digest, size);
      return size;
    },
    knownSize: (digest) => tierSizes.get(digest),
    claim: async (digest) => (await channel.call<'lead' | 'done' | 'failed'>({ op: 'tier-claim', digest })).value,
    settle: (digest, ok, corrupt) => send({ kind: 'tier-settle', digest, ok, ...(corrupt ? { corrupt } : {}) }),
    importable: async (repo, ref) => (await channel.call<boolean>({ op: 'tier-importable', repo, ref })).value,
    readThrough: (bytes, ok) => hooks.tierRead(bytes, ok),
  };
  let pushes = 0;
  const claims: PushClaims | undefined = config.registry.concurrentPushWait > 0
    ? {
        missed: async (key, party, claim) => (await channel.call<ClaimVerdict>({ op: 'push-miss', key, party, claim })).value,
        writing: (key) => {
          const id = pushes++;
          send({ kind: 'push-begin', id, key });
          return () => send({ kind: 'push-end', id });
        },
        uploading: (party) => {
          const id = pushes++;
          send({ kind: 'push-hold', id, party });
          return () => send({ kind: 'push-release', id });
        },
      }
    : undefined;
  const { registry, blobs, repos } = await openWorkerStores(config, log, hooks, gate, directory, claims);
  const publish = async (event: StoreEvent) => (await channel.call<Verdict>({ op: 'publish', event })).value;
  blobs.subscribe(publish);
  repos.subscribe(publish);
  handle = (msg) => {
    if (msg.kind === 'store') {
      const { event, ack } = msg;
      // Checked and applied in one turn of the event loop: a HEAD answered before this keeps the blob, one
      // answered after misses it.
      if (event.type === 'blob-removed' && event.eviction && hooks.probed.has(event.digest)) {
        if (ack) send({ kind: 'applied', ack, kept: true });
        return;
      }
      blobs.apply(event);
      void repos.apply(event).then(() => ack && send({ kind: 'applied', ack }));
    } else if (msg.kind === 'reply') {
      channel.settle(msg);
    } else if (msg.kind === 'metrics-collect') {
      void metrics?.registry.getMetricsAsJSON().then((snapshot) => send({ kind: 'metrics', id: msg.id, snapshot }));
    } else if (msg.kind === 'tier-forget') {
      tierSizes.delete(msg.digest);
    }
  };
  for (const m of pending.splice(0)) handle(m);
  const readiness = async () => (await channel.call<string | null>({ op: 'tier-ready' })).value ?? undefined;
  const http = await serveHttp(config, registry, log, loginGuard, {
    ...(metrics ? { metrics: metrics.app } : {}),
    ...(config.analytics.enabled ? { activity: (a) => hooks.activity(a), lookup: (hit) => hooks.lookup(hit) } : {}),
    ...(config.tier?.s3 ? { readiness } : {}),
  });
  reloadTls = () => void http.reloadTls();
  stop = () => {
    stopping = true;
    void http.close().then(() => {
      hooks.flush();
      // Disconnecting delivers what is still queued on the channel, then ends this process (above).
      process.disconnect?.();
    });
  };
  if (stopping) return stop();
  send({ kind: 'listening', url: http.url });
}
