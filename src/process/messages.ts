import type { StoreEvent } from '../storage/events.js';

/**
 * What the primary and worker processes tell each other over the cluster IPC channel.
 * Workers serve HTTP; the primary owns the data-dir lock, recency, eviction and the admin operations.
 */

/** One cache signal, batched: p = HEAD/mount protect, r = read, w = written, m = manifest used, f = disk full. */
export type UsageSignal =
  | ['p', string]
  | ['r', string]
  | ['w', string]
  | ['m', string, string, string | null]
  | ['f'];

export type AdminOp =
  | { op: 'status' }
  | { op: 'du'; repoPrefix?: string }
  | { op: 'gc'; dryRun: boolean }
  | { op: 'prune'; olderThanMs: number; repoPrefix?: string; dryRun: boolean };

export type WorkerMessage =
  | { kind: 'store'; event: StoreEvent }
  | { kind: 'usage'; signals: UsageSignal[] }
  | { kind: 'admin'; id: number; call: AdminOp }
  | { kind: 'listening'; url: string };

export type PrimaryMessage =
  | { kind: 'store'; event: StoreEvent }
  | { kind: 'admin-reply'; id: number; ok: true; value: unknown }
  | { kind: 'admin-reply'; id: number; ok: false; message: string }
  | { kind: 'shutdown' };

export const isMessage = (m: unknown): m is { kind: string } =>
  typeof m === 'object' && m !== null && typeof (m as { kind?: unknown }).kind === 'string';

/** Set by the primary on replacement workers: the address the daemon already serves on. */
export const WORKER_LISTEN_ENV = 'BUILDCACHED_WORKER_LISTEN';
