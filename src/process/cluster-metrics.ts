import type { Worker } from 'node:cluster';
import type { Registry } from 'prom-client';
import { aggregate, type MetricsSnapshot, type MetricsSource } from '../observability/metrics.js';
import type { PrimaryMessage } from './messages.js';

/** A worker too busy to answer within this is left out of that one scrape rather than stalling it. */
const COLLECT_TIMEOUT_MS = 2_000;

/**
 * The primary's scrape of the whole daemon: its own registry (store gauges, its process metrics) plus a snapshot
 * asked of every serving worker over the cluster channel, summed. Whichever worker receives GET /metrics forwards
 * it here, so one scrape sees every process.
 */
export class ClusterMetrics implements MetricsSource {
  readonly contentType: string;
  private next = 1;
  private readonly pending = new Map<number, { left: Set<Worker>; got: MetricsSnapshot[]; done: () => void }>();

  constructor(
    private readonly own: Registry,
    private readonly workers: () => Iterable<Worker>,
    private readonly post: (w: Worker, m: PrimaryMessage) => void,
  ) {
    this.contentType = own.contentType;
  }

  async text(): Promise<string> {
    const own = await this.own.getMetricsAsJSON();
    const id = this.next++;
    const left = new Set([...this.workers()].filter((w) => w.isConnected()));
    const got: MetricsSnapshot[] = [];
    if (left.size > 0) {
      await new Promise<void>((done) => {
        const timer = setTimeout(() => this.finish(id), COLLECT_TIMEOUT_MS);
        this.pending.set(id, { left, got, done: () => (clearTimeout(timer), done()) });
        for (const w of left) this.post(w, { kind: 'metrics-collect', id });
      });
    }
    return aggregate([own, ...got]);
  }

  /** A worker's snapshot for collection `id`. */
  received(id: number, w: Worker, snapshot: MetricsSnapshot): void {
    const p = this.pending.get(id);
    if (!p || !p.left.delete(w)) return;
    p.got.push(snapshot);
    if (p.left.size === 0) this.finish(id);
  }

  /** A worker that died answers no collection. */
  gone(w: Worker): void {
    for (const [id, p] of this.pending) if (p.left.delete(w) && p.left.size === 0) this.finish(id);
  }

  private finish(id: number): void {
    const p = this.pending.get(id);
    this.pending.delete(id);
    p?.done();
  }
}
