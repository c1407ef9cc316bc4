import type { ManifestRecordData } from './repository-store.js';

/**
 * A committed change to a store's index. With several worker processes on one data directory each process keeps
 * its own in-memory index; every change one of them commits to disk is sent to the others as one of these, and
 * applied there to memory only (the disk already holds it): blob events as they say, repository events by
 * re-reading the tag or record file they name (see RepositoryStore.apply).
 */
export type StoreEvent =
  | { type: 'blob-added'; digest: string; size: number }
  /** The blob is being removed: every lookup must miss it from now on. By eviction, a process that answered a
   *  HEAD or mount for it within the grace window may keep it instead (see StoreListener).
   *  `byClient`: a client's DELETE, not an eviction or a repair: a tier below deletes it too. */
  | { type: 'blob-removed'; digest: string; eviction?: boolean; byClient?: boolean }
  /** Its file is gone: a new commit of the same digest may go ahead. */
  | { type: 'blob-unlinked'; digest: string }
  /** `imported`: read from a tier (another daemon's push), not pushed here. */
  | { type: 'manifest-put'; repo: string; record: ManifestRecordData; tag?: string; imported?: boolean }
  /** `local`: removed from this disk only (eviction, repair), not deleted by a client: a tier keeps it. */
  | { type: 'tag-deleted'; repo: string; tag: string; local?: boolean }
  | { type: 'manifest-deleted'; repo: string; digest: string; local?: boolean };

/** 'kept': some process refused an eviction's `blob-removed` (a client it answered may be about to reference the
 *  blob), and applied nothing. */
export type Verdict = 'applied' | 'kept';

/** May return a promise: the change then counts as done (and its request is answered) only once every other
 *  process has applied it, so a client reading through another worker right after sees its own write. */
export type StoreListener = (e: StoreEvent) => void | Promise<Verdict | void>;
