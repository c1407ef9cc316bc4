import type { Registry } from 'prom-client';
import type { OpenedStore } from '../store.js';
import { countReferences } from '../cache/inventory.js';
import type { ReferenceCounters } from '../cache/reference-stats.js';
import { HttpMetrics, metricsSource, processRegistry, scrapedCounter, scrapedGauge, type MetricsSource } from './metrics.js';

/**
 * The store's side of the metrics, registered in the process that owns the store (the single process, or the
 * primary): every value is read at scrape time from in-memory state (the budget ledger, the indexes, the
 * evictor's totals), so neither a request nor a scrape touches the disk.
 */
export function registerStoreMetrics(registry: Registry, store: OpenedStore, topReferences: number): void {
  scrapedGauge(registry, 'disk_bytes_used', 'Bytes counted against the disk budget: blobs, upload sessions and writes in progress', () => store.evictor.usage().total);
  scrapedGauge(registry, 'disk_bytes_budget', 'The disk budget (storage.maxBytes) in bytes', () => store.evictor.budget.maxBytes ?? 0);
  scrapedGauge(registry, 'blobs', 'Blobs in the store', () => store.blobs.count);
  scrapedGauge(registry, 'references', 'Cache references: tags, and manifests no tag or index points to', () => countReferences(store.repos));
  scrapedGauge(registry, 'upload_sessions', 'Upload sessions open', () => store.ledger.status().sessions);
  const totals = store.evictor.totals;
  scrapedCounter(registry, 'evictions_total', 'What eviction, gc and prune removed, by unit', ['unit'], () => [
    [{ unit: 'tag' }, totals.tags],
    [{ unit: 'manifest' }, totals.manifests],
    [{ unit: 'blob' }, totals.blobs],
    [{ unit: 'upload' }, totals.uploads],
  ]);
  scrapedCounter(registry, 'evicted_bytes_total', 'Bytes reclaimed by eviction, gc and prune', [], () => [[{}, totals.bytesReclaimed]]);
  if (topReferences > 0) registerReferenceMetrics(registry, store, topReferences);
  // The one place a storage tier feeds the metrics: without one, these series do not exist.
  const tier = store.tierStats;
  if (!tier) return;
  scrapedGauge(registry, 'tier_backlog', 'Blobs waiting to be uploaded to the storage tier', () => tier().backlog);
  scrapedCounter(registry, 'tier_uploaded_bytes_total', 'Bytes uploaded to the storage tier', [], () => [[{}, tier().uploadedBytes]]);
  scrapedCounter(registry, 'tier_failures_total', 'Failed storage tier operations, by operation', ['op'], () =>
    Object.entries(tier().failures).map(([op, n]) => [{ op }, n]),
  );
  scrapedCounter(registry, 'tier_read_through_bytes_total', 'Bytes served by reading through from the storage tier', [], () => [[{}, tier().readThroughBytes]]);
}

/** The analytics of the `top` references by saved bytes, one series each (label `reference="repo:tag"`). */
function registerReferenceMetrics(registry: Registry, store: OpenedStore, top: number): void {
  const topN = () =>
    store.references
      .entries()
      .sort((a, b) => b.counters.savedBytes - a.counters.savedBytes || b.counters.pulls - a.counters.pulls)
      .slice(0, top);
  const series = (name: string, help: string, value: (c: ReferenceCounters) => number) =>
    scrapedCounter(registry, name, help, ['reference'], () => topN().map((r) => [{ reference: `${r.repo}:${r.tag}` }, value(r.counters)]));
  series('reference_pushes_total', 'Exports (manifest PUTs by tag) of the top references', (c) => c.pushes);
  series('reference_pulls_total', 'Imports (manifest GETs by tag) of the top references', (c) => c.pulls);
  series('reference_uploads_skipped_total', 'Blob uploads the cache saved the top references at export (HEAD hits)', (c) => c.uploadsSkipped);
  series('reference_saved_bytes_total', 'Bytes of the uploads the cache saved the top references at export', (c) => c.savedBytes);
  series('reference_served_bytes_total', 'Blob bytes served for the top references', (c) => c.servedBytes);
}

/** A daemon in one process holds every metric: its own HTTP counters and the store's gauges. */
export function singleProcessMetrics(store: OpenedStore, topReferences: number): { http: HttpMetrics; source: MetricsSource } {
  const registry = processRegistry();
  registerStoreMetrics(registry, store, topReferences);
  return { http: new HttpMetrics(registry), source: metricsSource(registry) };
}
