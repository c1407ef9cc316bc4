import { open, readFile, type FileHandle } from 'node:fs/promises';
import PQueue from 'p-queue';
import { errnoCode } from '../core/errors.js';
import { parseDigest } from '../core/digest.js';
import type { Logger } from '../observability/logger.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { StoreEvent } from '../storage/events.js';
import { writeFileAtomic } from '../storage/fs-util.js';
import type { Layout } from '../storage/layout.js';
import type { RepositoryStore } from '../storage/repository-store.js';
import { backoffMs, cancelledLine, compactJournal, doneLine, emptyJournal, itemKey, markDone, parseJournal, queuedLine, type Item, type JournalState } from './journal.js';
import { tierKeys, type Tier } from './tier.js';

/** What `status` shows of the tier (and what metrics read). Never holds credentials. */
export interface TierStats {
  /** Items queued and not uploaded yet. */
  backlog: number;
  /** Items uploaded (or found already there) since start. */
  uploaded: number;
  uploadedBytes: number;
  /** Failed attempts since start, in all and by operation. */
  failed: number;
  failures: Record<'head' | 'put' | 'delete' | 'get', number>;
  lastError: string | null;
  lastErrorAt: string | null;
  /** Blobs the tier is known to hold. */
  blobs: number;
  /** Bytes read through from the tier into the local disk (this process and the workers it heard from). */
  readThroughBytes: number;
  readThroughFailures: number;
}

type Outcome = { done: true; value?: string | number; bytes?: number } | { done: false; why: 'gone' | 'wait' };

/** Recheck delay of an item that waits for another (a tag for its manifest, a manifest for its blobs). */
const WAIT_MS = 250;
/** How long a blob seen in the tier counts as there without asking again, for a manifest that lists it. */
const CONFIRMED_MS = 60_000;
/** Tier checks at once while one manifest's blobs are confirmed. */
const CHECKS_AT_ONCE = 8;

/**
 * The write-back queue, owned by the process that owns the data directory: every committed blob, manifest record
 * and tag is journaled, then uploaded in the background (bounded concurrency, retries with exponential backoff and
 * jitter, forever: nothing is dropped while it still exists locally). Uploads are idempotent and a blob the tier
 * already holds (one HEAD) is not sent again. Blobs go before the manifests that list them, manifests before the
 * tags that name them, so another daemon reading a tag finds everything under it.
 */
export class WriteBack {
  private state: JournalState = emptyJournal();
  private fh: FileHandle | undefined;
  private appending: Promise<unknown> = Promise.resolve();
  private readonly queue: PQueue;
  /** Items in the p-queue or waiting for a retry: each is scheduled once. */
  private readonly scheduled = new Set<string>();
  private readonly attempts = new Map<string, number>();
  /** Items being sent right now, and those changed meanwhile (to send again once done). */
  private readonly running = new Set<string>();
  private readonly again = new Set<string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private started = false;
  private lastSuccessAt = 0;
  private lastErrorMs = 0;
  /** When this process last saw each blob in the tier (uploaded, or found there): a manifest whose blobs were
   *  confirmed longer ago than CONFIRMED_MS checks them again before it goes up (another daemon may expire them). */
  private readonly confirmed = new Map<string, number>();
  private readonly forgetListeners: Array<(digest: string) => void> = [];
  readonly stats: Omit<TierStats, 'backlog' | 'blobs'> = {
    uploaded: 0,
    uploadedBytes: 0,
    failed: 0,
    failures: { head: 0, put: 0, delete: 0, get: 0 },
    lastError: null,
    lastErrorAt: null,
    readThroughBytes: 0,
    readThroughFailures: 0,
  };

  constructor(
    private readonly tier: Tier,
    private readonly layout: Layout,
    private readonly blobs: BlobStore,
    private readonly repos: RepositoryStore,
    concurrency: number,
    private readonly log: Logger,
  ) {
    this.queue = new PQueue({ concurrency });
  }

  private get path(): string {
    return `${this.layout.state}/tier.log`;
  }

  /**
   * Replays the journal, queues whatever the local store holds that the tier does not (a crash between a commit
   * and its journal line, or a tier turned on for an existing store) and compacts; `start` sends it.
   */
  async open(): Promise<void> {
    const text = await readFile(this.path, 'utf8').catch((e: unknown) => {
      if (errnoCode(e) === 'ENOENT') return '';
      throw e;
    });
    this.state = parseJournal(text);
    const s = this.state;
    const want = (item: Item) => {
      if (!s.pending.has(itemKey(item))) s.pending.set(itemKey(item), item);
    };
    for (const [digest] of this.blobs.entries()) if (!s.blobs.has(digest)) want({ kind: 'b', digest });
    for (const [repo, m] of this.repos.allManifests()) if (!s.manifests.has(`${repo} ${m.digest}`)) want({ kind: 'm', repo, digest: m.digest });
    for (const t of this.repos.allTags()) if (s.tags.get(`${t.repo} ${t.tag}`) !== t.digest) want({ kind: 't', repo: t.repo, tag: t.tag });
    await this.rewrite();
  }

  /** Starts uploading what is pending (not for the CLI's own short-lived opening of the store). */
  start(): void {
    this.started = true;
    for (const item of this.state.pending.values()) this.schedule(item, 0);
  }

  private async rewrite(): Promise<void> {
    await this.fh?.close();
    await writeFileAtomic(this.path, compactJournal(this.state), this.layout.tmp);
    this.state.lines = this.state.pending.size + this.state.blobs.size + this.state.manifests.size + this.state.tags.size;
    this.fh = await open(this.path, 'a');
  }

  /** Appends in order; compacts once the journal is mostly history. Without fsync: a line in the page cache
   *  survives `kill -9`, and what a power loss takes, the start-up reconciliation queues again. */
  private append(line: string): Promise<unknown> {
    this.appending = this.appending.then(async () => {
      if (this.closed || !this.fh) return;
      await this.fh.write(line);
      const s = this.state;
      if (++s.lines > 1000 + 2 * (s.pending.size + s.blobs.size + s.manifests.size + s.tags.size)) await this.rewrite();
    }).catch((err: unknown) => this.log.error({ err }, 'tier journal write failed'));
    return this.appending;
  }

  /** A change the store committed (here or in a worker): queued, journaled before the caller goes on. */
  async observe(e: StoreEvent): Promise<void> {
    if (e.type === 'blob-added') {
      if (!this.state.blobs.has(e.digest)) await this.enqueue({ kind: 'b', digest: e.digest });
    } else if (e.type === 'blob-removed' && e.byClient) {
      await this.enqueue({ kind: 'z', digest: e.digest });
    } else if (e.type === 'manifest-put') {
      // What was imported from the tier is there already; sending it back could undo a newer push elsewhere.
      if (e.imported) return;
      if (!this.state.manifests.has(`${e.repo} ${e.record.digest}`)) await this.enqueue({ kind: 'm', repo: e.repo, digest: e.record.digest });
      if (e.tag !== undefined) await this.enqueue({ kind: 't', repo: e.repo, tag: e.tag });
    } else if (e.type === 'tag-deleted' && !e.local) {
      await this.enqueue({ kind: 'x', repo: e.repo, tag: e.tag });
    } else if (e.type === 'manifest-deleted' && !e.local) {
      await this.enqueue({ kind: 'y', repo: e.repo, digest: e.digest });
    }
  }

  private async enqueue(item: Item): Promise<void> {
    const key = itemKey(item);
    if (this.state.pending.has(key) && this.scheduled.has(key)) {
      if (this.running.has(key)) this.again.add(key);
      return;
    }
    this.state.pending.set(key, item);
    await this.append(queuedLine(item));
    this.schedule(item, 0);
  }

  /** Records a blob found in the tier (read through, or an existence check): no upload needed. */
  knownInTier(digest: string, size: number): void {
    this.confirmed.set(digest, Date.now());
    if (this.state.blobs.get(digest) === size) return;
    markDone(this.state, { kind: 'b', digest }, String(size));
    void this.append(doneLine({ kind: 'b', digest }, size));
  }

  /** `fn` hears of every blob the tier no longer holds (deleted, expired, found missing). */
  onForget(fn: (digest: string) => void): void {
    this.forgetListeners.push(fn);
  }

  /**
   * Records that the tier no longer holds a tag, a manifest record or a blob (the bucket's expiry removed it, or
   * another daemon did): the journal forgets it, so nothing local counts on it.
   */
  async forget(item: Extract<Item, { kind: 'x' | 'y' | 'z' }>): Promise<void> {
    markDone(this.state, item);
    if (item.kind === 'z') {
      this.confirmed.delete(item.digest);
      for (const fn of this.forgetListeners) fn(item.digest);
    }
    await this.append(doneLine(item));
  }

  /** Uploads again what the tier lost though this daemon still uses it (another daemon expired it meanwhile). */
  async reupload(item: Extract<Item, { kind: 'b' | 'm' | 't' }>): Promise<void> {
    if (item.kind === 'b') await this.forget({ kind: 'z', digest: item.digest });
    else if (item.kind === 'm') await this.forget({ kind: 'y', repo: item.repo, digest: item.digest });
    else await this.forget({ kind: 'x', repo: item.repo, tag: item.tag });
    await this.enqueue(item);
  }

  /** What the journal says the tier holds: blob digests, `REPO DIGEST` of records, `REPO TAG` → digest. */
  held(): { blobs: ReadonlySet<string>; manifests: ReadonlySet<string>; tags: ReadonlyMap<string, string>; confirmedSince(digest: string, ms: number): boolean } {
    return {
      blobs: new Set(this.state.blobs.keys()),
      manifests: this.state.manifests,
      tags: this.state.tags,
      confirmedSince: (digest, ms) => (this.confirmed.get(digest) ?? 0) >= ms,
    };
  }

  /** Blobs still to be uploaded (or deleted) by this daemon. */
  pendingBlobs(): Set<string> {
    const out = new Set<string>();
    for (const item of this.state.pending.values()) if (item.kind === 'b' || item.kind === 'z') out.add(item.digest);
    return out;
  }

  /** Size of a blob the tier holds, from the journal's index (no request). */
  blobSize(digest: string): number | undefined {
    return this.state.blobs.get(digest);
  }

  /** Whether a client's delete of this tag or manifest, or an upload of this tag, is still on its way to the tier. */
  unsettled(repo: string, ref: { tag: string } | { digest: string }): boolean {
    const p = this.state.pending;
    return 'tag' in ref ? p.has(`x ${repo} ${ref.tag}`) || p.has(`t ${repo} ${ref.tag}`) : p.has(`y ${repo} ${ref.digest}`);
  }

  /** Whether the tier holds every byte of `digest` (uploaded and confirmed), so it may leave the local disk. */
  holds(digest: string): boolean {
    return this.state.blobs.has(digest) && !this.state.pending.has(`b ${digest}`);
  }

  /** Degraded: the last attempt failed and nothing succeeded since. */
  get degraded(): boolean {
    return this.lastErrorMs > this.lastSuccessAt;
  }

  status(): TierStats {
    return { ...this.stats, failures: { ...this.stats.failures }, backlog: this.state.pending.size, blobs: this.state.blobs.size };
  }

  /** Resolves once nothing is pending (tests, shutdown with a reachable store). */
  async drained(): Promise<void> {
    while (this.state.pending.size > 0 && !this.closed) await new Promise((r) => setTimeout(r, 50));
  }

  private schedule(item: Item, delayMs: number): void {
    const key = itemKey(item);
    if (this.closed || !this.started) return;
    this.scheduled.add(key);
    const add = () => void this.queue.add(() => this.attempt(item));
    if (delayMs === 0) return add();
    const t = setTimeout(() => {
      this.timers.delete(t);
      add();
    }, delayMs);
    t.unref();
    this.timers.add(t);
  }

  private async attempt(item: Item): Promise<void> {
    const key = itemKey(item);
    if (this.closed) return;
    let outcome: Outcome;
    this.running.add(key);
    try {
      outcome = await this.run(item);
    } catch (e) {
      this.running.delete(key);
      const n = (this.attempts.get(key) ?? 0) + 1;
      this.attempts.set(key, n);
      this.failed(item, e);
      this.schedule(item, backoffMs(n, Math.random()));
      return;
    }
    this.running.delete(key);
    if (!outcome.done && outcome.why === 'wait') return this.schedule(item, WAIT_MS);
    this.scheduled.delete(key);
    this.attempts.delete(key);
    this.lastSuccessAt = Date.now();
    if (outcome.done) {
      if (item.kind === 'b') this.confirmed.set(item.digest, Date.now());
      if (item.kind === 'z') {
        this.confirmed.delete(item.digest);
        for (const fn of this.forgetListeners) fn(item.digest);
      }
      this.stats.uploaded++;
      this.stats.uploadedBytes += outcome.bytes ?? 0;
      markDone(this.state, item, outcome.value === undefined ? undefined : String(outcome.value));
      await this.append(doneLine(item, outcome.value));
    } else {
      // Gone locally before it could be uploaded (evicted, deleted): nothing to send.
      this.state.pending.delete(key);
      await this.append(cancelledLine(item));
    }
    // Changed again while it was being sent (a tag re-pointed): send the new state too.
    if (this.again.delete(key)) await this.enqueue(item);
  }

  private failed(item: Item, e: unknown): void {
    const op = item.kind === 'x' || item.kind === 'y' || item.kind === 'z' ? 'delete' : ((e as { op?: string }).op === 'head' ? 'head' : 'put');
    this.stats.failed++;
    this.stats.failures[op]++;
    const message = (e as Error)?.message ?? String(e);
    this.stats.lastError = message;
    this.stats.lastErrorAt = new Date().toISOString();
    // One line per outage rather than per attempt: the first failure after a success.
    if (this.lastErrorMs <= this.lastSuccessAt) this.log.warn({ item: itemKey(item), err: message }, 'tier upload failed; retrying with backoff');
    this.lastErrorMs = Date.now();
  }

  /** Whether `key` still waits to be uploaded. */
  private waiting(key: string): boolean {
    return this.state.pending.has(key);
  }

  private async run(item: Item): Promise<Outcome> {
    switch (item.kind) {
      case 'b':
        return this.uploadBlob(item.digest);
      case 'm': {
        const d = parseDigest(item.digest);
        const rec = this.repos.manifest(item.repo, item.digest);
        // Its bytes and everything it lists first, so that a reader of the record finds them all.
        if (this.waiting(`b ${item.digest}`) || (rec && [...rec.references].some((r) => this.waiting(`b ${r}`)))) return { done: false, why: 'wait' };
        if (rec && !(await this.blobsStillThere([item.digest, ...rec.references]))) return { done: false, why: 'wait' };
        const data = await readFile(this.layout.manifestMeta(item.repo, d)).catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
        if (!data) return { done: false, why: 'gone' };
        await this.tier.put(tierKeys.manifest(item.repo, d), () => data, data.length);
        return { done: true, bytes: data.length };
      }
      case 't': {
        const target = await readFile(this.layout.tag(item.repo, item.tag), 'utf8').catch((e: unknown) => (errnoCode(e) === 'ENOENT' ? undefined : Promise.reject(e)));
        if (target === undefined) return { done: false, why: 'gone' };
        const digest = target.trim();
        if (this.waiting(`m ${item.repo} ${digest}`)) return { done: false, why: 'wait' };
        const body = Buffer.from(digest);
        await this.tier.put(tierKeys.tag(item.repo, item.tag), () => body, body.length);
        return { done: true, value: digest, bytes: body.length };
      }
      case 'x':
        await this.tier.delete(tierKeys.tag(item.repo, item.tag));
        return { done: true };
      case 'y':
        await this.tier.delete(tierKeys.manifest(item.repo, parseDigest(item.digest)));
        return { done: true };
      case 'z': {
        // Pushed again since the delete: the tier keeps it (a queued upload, or the one it has, serves it).
        if ((await this.blobs.locate(parseDigest(item.digest))) !== undefined) return { done: false, why: 'gone' };
        await this.tier.delete(tierKeys.blob(parseDigest(item.digest)));
        return { done: true };
      }
    }
  }

  /**
   * Before a manifest record goes up: the blobs it lists that this daemon counts as in the tier, but has not seen
   * there for a while, are asked for again — another daemon's expiry may have removed them since. One that is gone
   * and still here is uploaded again first (false: the manifest waits for it); one gone from both is reported.
   */
  private async blobsStillThere(digests: string[]): Promise<boolean> {
    const since = Date.now() - CONFIRMED_MS;
    const stale = [...new Set(digests)].filter((d) => this.state.blobs.has(d) && (this.confirmed.get(d) ?? 0) < since);
    let complete = true;
    for (let i = 0; i < stale.length; i += CHECKS_AT_ONCE) {
      await Promise.all(
        stale.slice(i, i + CHECKS_AT_ONCE).map(async (digest) => {
          const d = parseDigest(digest);
          let there: number | undefined;
          try {
            there = await this.tier.head(tierKeys.blob(d));
          } catch (e) {
            throw Object.assign(e as Error, { op: 'head' });
          }
          if (there !== undefined) {
            this.confirmed.set(digest, Date.now());
            return;
          }
          if ((await this.blobs.locate(d)) !== undefined) {
            complete = false;
            await this.reupload({ kind: 'b', digest });
          } else {
            await this.forget({ kind: 'z', digest });
            this.log.warn({ digest }, 'a manifest going up lists a blob the tier no longer has and this disk does not either');
          }
        }),
      );
    }
    return complete;
  }

  private async uploadBlob(digest: string): Promise<Outcome> {
    // A client's delete of it goes first (it cancels itself, seeing the blob back here).
    if (this.waiting(`z ${digest}`)) return { done: false, why: 'wait' };
    const d = parseDigest(digest);
    const size = await this.blobs.locate(d);
    if (size === undefined) return { done: false, why: 'gone' };
    let there: number | undefined;
    try {
      there = await this.tier.head(tierKeys.blob(d));
    } catch (e) {
      throw Object.assign(e as Error, { op: 'head' });
    }
    if (there === size) return { done: true, value: size };
    // Opened before the upload: an eviction that unlinks the file meanwhile cannot cut the upload short.
    let fh: FileHandle;
    try {
      fh = await open(this.layout.blobPath(d), 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { done: false, why: 'gone' };
      throw e;
    }
    try {
      await this.tier.put(tierKeys.blob(d), () => fh.createReadStream({ start: 0, autoClose: false }), size);
    } finally {
      await fh.close();
    }
    return { done: true, value: size, bytes: size };
  }

  /** Stops scheduling; what is pending stays in the journal for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.queue.clear();
    await this.appending;
    await this.fh?.close();
    this.fh = undefined;
  }
}
