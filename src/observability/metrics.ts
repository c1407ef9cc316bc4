import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** Every series this daemon exports starts with it, Node's default process metrics included. */
export const METRIC_PREFIX = 'buildcached_';

/** One process's metrics, as prom-client serialises them for aggregation across processes. */
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[];

/** Prometheus text exposition of the whole daemon, produced where the metrics live (this process or the primary). */
export interface MetricsSource {
  contentType: string;
  text(): Promise<string>;
}

/** prom-client's gauges named like counters, which `promtool check metrics` rejects; the same figures remain,
 *  by type, in nodejs_active_handles, nodejs_active_requests and nodejs_active_resources. */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** A registry with Node's default process metrics (CPU, memory, event loop lag, GC), prefixed. */
export function processRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(`${METRIC_PREFIX}${name}`);
  return registry;
}

/** The metrics of several processes summed into one exposition (prom-client's cluster aggregation rules). */
export function aggregate(snapshots: MetricsSnapshot[]): Promise<string> {
  return AggregatorRegistry.aggregate(snapshots).metrics();
}

export const metricsSource = (registry: Registry): MetricsSource => ({ contentType: registry.contentType, text: () => registry.metrics() });

export type CacheKind = 'blob_head' | 'blob_get' | 'manifest';

const BLOB_ROUTE = '/v2/<name>/blobs/<digest>';
const MANIFEST_ROUTE = '/v2/<name>/manifests/<reference>';

export interface CacheLookup {
  kind: CacheKind;
  hit: boolean;
}

/**
 * Whether a request was a cache lookup, and its outcome: a found blob or manifest is a hit, a 404 a miss; any
 * other answer (a bad name, a refused request) says nothing about the cache. Pure, from what the request log sees.
 */
export function cacheLookup(method: string, route: string, status: number): CacheLookup | undefined {
  let kind: CacheKind;
  if (route === BLOB_ROUTE && method === 'HEAD') kind = 'blob_head';
  else if (route === BLOB_ROUTE && method === 'GET') kind = 'blob_get';
  else if (route === MANIFEST_ROUTE && (method === 'GET' || method === 'HEAD')) kind = 'manifest';
  else return undefined;
  if (status === 404) return { kind, hit: false };
  return status >= 200 && status < 400 ? { kind, hit: true } : undefined;
}

/** What the request log knows of a finished request. */
export interface RequestOutcome {
  method: string;
  route: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  seconds: number;
  /** The repository and the path's tag or digest, once a route parsed them. */
  repo?: string;
  ref?: string;
  /** A manifest PUT's BuildKit cache config size (see Registry.putManifest). */
  cacheConfigBytes?: number;
  /** A blob HEAD that waited for another client's upload of the blob (push coalescing). */
  coalesced?: boolean;
}

/**
 * The HTTP side of the metrics, counted in the process that served the request: in-memory counters only, so a
 * request pays a few map look-ups and no I/O or lock.
 */
export class HttpMetrics {
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly duration: Histogram<'method' | 'route'>;
  private readonly received: Counter;
  private readonly sent: Counter;
  private readonly hits: Counter<'kind'>;
  private readonly misses: Counter<'kind'>;
  private readonly coalesced: Counter<'outcome'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: `${METRIC_PREFIX}http_requests_total`,
      help: 'HTTP requests answered, by method, route template and status (0: the connection closed before an answer)',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: `${METRIC_PREFIX}http_request_duration_seconds`,
      help: 'Time from a request to the end of its answer, by method and route template',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 120],
      registers,
    });
    this.received = new Counter({ name: `${METRIC_PREFIX}http_bytes_received_total`, help: 'Request body bytes read', registers });
    this.sent = new Counter({ name: `${METRIC_PREFIX}http_bytes_sent_total`, help: 'Response body bytes sent', registers });
    this.hits = new Counter({ name: `${METRIC_PREFIX}cache_hits_total`, help: 'Cache lookups answered with the content, by kind', labelNames: ['kind'], registers });
    this.misses = new Counter({ name: `${METRIC_PREFIX}cache_misses_total`, help: 'Cache lookups answered 404, by kind', labelNames: ['kind'], registers });
    this.coalesced = new Counter({
      name: `${METRIC_PREFIX}push_coalesced_total`,
      help: "Blob HEADs that waited for another client's upload of that blob (push coalescing), by what they then found: found (its client skips the upload) or missing",
      labelNames: ['outcome'],
      registers,
    });
    // Present at zero from the start, so that a rate over them works before the first miss.
    for (const kind of ['blob_head', 'blob_get', 'manifest'] satisfies CacheKind[]) {
      this.hits.inc({ kind }, 0);
      this.misses.inc({ kind }, 0);
    }
    for (const outcome of ['found', 'missing']) this.coalesced.inc({ outcome }, 0);
  }

  /** `lookup`: the request's cacheLookup, which the caller works out once for every observer. */
  observe(r: RequestOutcome, lookup: CacheLookup | undefined): void {
    this.requests.inc({ method: r.method, route: r.route, status: String(r.status) });
    this.duration.observe({ method: r.method, route: r.route }, r.seconds);
    if (r.bytesIn) this.received.inc(r.bytesIn);
    if (r.bytesOut) this.sent.inc(r.bytesOut);
    if (lookup) (lookup.hit ? this.hits : this.misses).inc({ kind: lookup.kind });
    if (r.coalesced) this.coalesced.inc({ outcome: r.status === 200 ? 'found' : 'missing' });
  }
}

/** A gauge whose value is read at scrape time from state the process holds anyway. */
export function scrapedGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name: `${METRIC_PREFIX}${name}`,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** A counter whose running total is kept elsewhere (the evictor's totals…) and copied in at scrape time. */
export function scrapedCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
  read: () => Array<[Partial<Record<L, string>>, number]>,
): void {
  new Counter<L>({
    name: `${METRIC_PREFIX}${name}`,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels as Record<L, string>, value);
    },
  });
}
