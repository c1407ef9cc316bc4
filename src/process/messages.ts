import type { StoreEvent } from '../storage/events.js';
import type { LedgerRequest } from '../storage/write-gate.js';
import type { ErrorCode } from '../core/errors.js';
import type { MetricsSnapshot } from '../observability/metrics.js';
import type { ReferenceActivity } from '../cache/reference-stats.js';

/**
 * What the primary and worker processes tell each other over the cluster IPC channel.
 * Workers serve HTTP; the primary owns the data-dir lock, recency, eviction and the admin listener.
 */

/** One cache signal, batched: p = HEAD/mount protect, r = read, w = written, m = manifest used, f = disk full,
 *  b = a fallback served (branch fallback) in a repository, a = a request's activity on a cache reference
 *  (analytics), h = cache lookups found and not found since the last batch (the hit rate over time),
 *  t = bytes read through from the tier (0 with a failure). */
export type UsageSignal =
  | ['a', ReferenceActivity]
  | ['h', number, number]
  | ['t', number, boolean]
  | ['p', string]
  | ['r', string]
  | ['w', string]
  | ['m', string, string, string | null]
  | ['f']
  | ['b', string];

/** Requests a worker makes of the primary and awaits an answer to. */
export type AdminOp =
  | { op: 'reserve'; digests: string[] }
  /** A change this worker committed: answered once every process applied it. */
  | { op: 'publish'; event: StoreEvent }
  /** A write-gate question (session lock, caps, room in the budget), answered from the primary's ledger. */
  | { op: 'ledger'; req: LedgerRequest }
  /** GET /metrics reached this worker: the whole daemon's exposition, which only the primary can sum. */
  | { op: 'metrics' }
  /** The size of a blob the tier holds (from the owner's journal or its cached existence checks). */
  | { op: 'tier-size'; digest: string }
  /** Who fetches `digest` from the tier: answered 'lead', or once the fetch that leads is done or failed. */
  | { op: 'tier-claim'; digest: string }
  /** Whether a tag or manifest may be imported from the tier (no client's delete of it still on its way). */
  | { op: 'tier-importable'; repo: string; ref: { tag: string } | { digest: string } }
  /** Why the daemon is degraded (the tier unreachable), or null. */
  | { op: 'tier-ready' }
  /** A HEAD missed `key` (push-claims.ts): answered 'claimed' or 'none' at once, 'settled' once a claim ended. */
  | { op: 'push-miss'; key: string; party: string; claim: boolean };

export type WorkerMessage =
  /** `kept`: refused an eviction's blob removal (see Verdict) and applied nothing. */
  | { kind: 'applied'; ack: number; kept?: boolean }
  | { kind: 'usage'; signals: UsageSignal[] }
  | { kind: 'request'; id: number; call: AdminOp }
  /** Ends the reservation made by request `id`. */
  | { kind: 'release'; id: number }
  | { kind: 'listening'; url: string }
  /** A failed login from `address`: the primary counts them for the whole daemon. */
  | { kind: 'login-failed'; address: string }
  /** This worker's metrics, for the primary's collection `id`. */
  | { kind: 'metrics'; id: number; snapshot: MetricsSnapshot }
  /** The fetch this worker led (a 'lead' answer to tier-claim) committed the blob, or failed. */
  | { kind: 'tier-settle'; digest: string; ok: boolean; corrupt?: boolean }
  /** This worker's upload `id` of `key` began, or (`push-end`) ended, committed or not. */
  | { kind: 'push-begin'; id: number; key: string }
  | { kind: 'push-end'; id: number }
  /** Upload session work `id` of `party` (push-claims.ts) began, or (`push-release`) ended. */
  | { kind: 'push-hold'; id: number; party: string }
  | { kind: 'push-release'; id: number };

export type PrimaryMessage =
  /** Apply, then answer `applied` with the same ack number. */
  | { kind: 'store'; event: StoreEvent; ack: number }
  | { kind: 'reply'; id: number; ok: true; value: unknown }
  /** `code` and `detail` when the failure is an OciError, so the worker answers the client as the owner would. */
  | { kind: 'reply'; id: number; ok: false; message: string; code?: ErrorCode; detail?: unknown }
  | { kind: 'shutdown' }
  /** SIGHUP reached the primary: read the TLS files again (each worker holds its own listener). */
  | { kind: 'reload-tls' }
  /** Too many failed logins from `address`: every worker refuses its credentials until `until` (ms epoch). */
  | { kind: 'login-blocked'; address: string; until: number }
  /** Send this worker's metrics snapshot (answered with `metrics` and the same id). */
  | { kind: 'metrics-collect'; id: number }
  /** The tier no longer holds this blob (deleted or expired): a size remembered for it is dropped. */
  | { kind: 'tier-forget'; digest: string };

export const isMessage = (m: unknown): m is { kind: string } =>
  typeof m === 'object' && m !== null && typeof (m as { kind?: unknown }).kind === 'string';

/** Set by the primary on replacement workers: the address the daemon already serves on. */
export const WORKER_LISTEN_ENV = 'BUILDCACHED_WORKER_LISTEN';
/** Where the primary wrote its validated configuration, as JSON, for each worker it forks (a file, not the value:
 *  one environment string is limited to 128 KiB, which a config with many rules passes). */
export const WORKER_CONFIG_ENV = 'BUILDCACHED_WORKER_CONFIG_FILE';
