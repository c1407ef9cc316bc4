import type { Readable } from 'node:stream';
import { pushKey, pushParty, type PushClaims } from './push-claims.js';
import { OciError } from '../core/errors.js';
import { digestOf, parseDigest, type Digest } from '../core/digest.js';
import type { BlobReader, BlobStore } from '../storage/blob-store.js';
import type { ChunkOptions, UploadSession, UploadStore } from '../storage/upload-store.js';
import type { ManifestRecord, RepositoryStore } from '../storage/repository-store.js';
import { DigestList } from '../storage/digest-list.js';
import type { BlobMembership } from '../storage/blob-membership.js';
import { cacheConfigSize, parseManifest, referrerArtifactType, requiredDigests, type ParsedManifest } from './manifest.js';
import { OCI_INDEX } from './media-types.js';
import type { Reference } from './names.js';
import { RECENT, type FallbackRules } from './fallback.js';
import type { TierAccess } from '../tiers/read-through.js';

/** Who HEADs a blob, for push coalescing: its address, and what it may do (asked on a miss only: a hit pays no
 *  rule matching). */
export interface HeadCaller {
  address: string;
  access: { can(repo: string, action: 'push'): boolean };
  /** Set when the HEAD waited for another client's upload (a field, not a callback: no closure per HEAD). */
  waited?: boolean;
}

export interface RegistryOptions {
  /** Mount without `from` succeeds when the blob exists (OCI "automatic content discovery"). */
  automaticCrossMount: boolean;
  deleteEnabled: boolean;
  /** Which missing tags are answered with another tag's manifest. */
  fallback: FallbackRules;
}

/**
 * What the cache layer learns from traffic: uses that order eviction, HEADs and mounts that protect a blob while
 * a push is in progress, writes that may cross the budget, and a full disk.
 */
export interface CacheHooks {
  /**
   * Holds blobs against eviction while a manifest that references them is stored, and reports which of them do
   * not exist (asked of whoever evicts, so that an answer of "present" stays true until `release`).
   */
  reserve(digests: string[]): Promise<Reservation>;
  blobProbed(digest: string): void;
  blobRead(digest: string): void;
  written(digest: string): void;
  manifestUsed(repo: string, digest: string, tag: string | undefined): void;
  /** A missing tag of `repo` was answered with another tag's manifest. */
  fallbackServed(repo: string): void;
  storageFull(): void;
}

export interface Reservation {
  missing: string[];
  release(): void;
}

export interface ResolvedManifest {
  record: ManifestRecord;
  /** The tag whose manifest answered, when the tag asked for does not exist and a fallback rule applied. */
  fallback?: string;
}

export interface StoredManifest extends ResolvedManifest {
  reader: BlobReader;
}

export interface Page {
  items: string[];
  /** The last item returned when more remain: the `last` of the next page. */
  next?: string;
}

/**
 * The registry's domain: the rules of the distribution API over the stores (what must exist before a manifest is
 * accepted, how references resolve, what a mount means when all repositories share one blob store). It speaks in
 * names, digests and streams; HTTP stays outside.
 */
export class Registry {
  constructor(
    readonly blobs: BlobStore,
    readonly uploads: UploadStore,
    readonly repos: RepositoryStore,
    private readonly options: RegistryOptions,
    private readonly cache: CacheHooks,
    /** Tenant isolation: which repositories have which blobs. Without it every repository reads the one store. */
    private readonly members?: BlobMembership,
    /** A tier below the local disk: blobs and manifests missing here are looked for there. */
    private readonly tier?: TierAccess,
    /** Push coalescing (see push-claims.ts); without it a HEAD never waits. */
    private readonly claims?: PushClaims,
  ) {}

  /** A blob's size: on the local disk, or else in the tier. What memory knows first — the local index, then the
   *  tier's (sizes never change under a digest) — so that a HEAD of a blob in the tier touches neither disk nor S3. */
  private async blobSize(d: Digest): Promise<number | undefined> {
    const known = this.blobs.size(d.value) ?? this.tier?.knownSize(d.value);
    if (known !== undefined) return known;
    return (await this.blobs.locate(d)) ?? (await this.tier?.blobSize(d.value));
  }

  /**
   * Whether repository `name` may serve blob `digest`. With tenant isolation, only when it has it: uploaded or
   * mounted into it, or a manifest of it (or a descriptor one of its manifests lists — what was pushed before
   * isolation was turned on). Knowing a digest grants nothing.
   */
  private async holds(name: string, digest: string): Promise<boolean> {
    if (!this.members) return true;
    if (await this.members.lookup(name, digest)) return true;
    return this.repos.manifest(name, digest) !== undefined || this.repos.hasParent(name, digest);
  }

  /** The blob's size, if it exists and `name` may serve it; otherwise BLOB_UNKNOWN, the same either way. */
  private async sizeIn(name: string, d: Digest): Promise<number> {
    const size = await this.blobSize(d);
    if (size === undefined || !(await this.holds(name, d.value))) {
      throw new OciError('BLOB_UNKNOWN', `blob ${d.value} is unknown`, { digest: d.value });
    }
    return size;
  }

  /** Records that `name` has a blob it just uploaded or mounted (durably, before the client hears so). */
  private async joined(name: string, digest: string): Promise<void> {
    await this.members?.add(name, digest);
  }

  /**
   * HEAD: answered from memory, and protects the blob for the push grace window (BuildKit skips its upload). A
   * miss while another caller is about to upload or is uploading it here waits for that upload, then looks again;
   * one by a caller that may push here claims it (see push-claims.ts).
   */
  async headBlob(name: string, d: Digest, caller?: HeadCaller): Promise<number> {
    let size: number;
    try {
      size = await this.sizeIn(name, d);
    } catch (e) {
      if (!this.claims || !caller || !(e instanceof OciError && e.code === 'BLOB_UNKNOWN')) throw e;
      const mayPush = caller.access.can(name, 'push');
      if ((await this.claims.missed(pushKey(name, d.value), pushParty(caller.address, name), mayPush)) !== 'settled') throw e;
      caller.waited = true;
      size = await this.sizeIn(name, d);
    }
    this.cache.blobProbed(d.value);
    return size;
  }

  /** A reader of the blob, local or read through from the tier; call its `ready` before answering. */
  async openBlob(name: string, d: Digest): Promise<BlobReader> {
    const size = await this.sizeIn(name, d);
    const reader = (await this.blobs.openReader(d)) ?? this.tier?.openBlob(d, size);
    if (!reader) throw new OciError('BLOB_UNKNOWN', `blob ${d.value} is unknown`, { digest: d.value });
    this.cache.blobRead(d.value);
    return reader;
  }

  async deleteBlob(name: string, d: Digest): Promise<void> {
    if (!this.options.deleteEnabled) throw new OciError('UNSUPPORTED', 'deletion is disabled on this registry');
    // The bytes are shared by every repository that has them: one tenant's delete must not take them from
    // another, and refusing only when another has them would tell who does. Eviction and gc remove them.
    if (this.members) throw new OciError('UNSUPPORTED', 'with tenant isolation, blobs are removed by eviction and gc only; delete the manifest');
    await this.sizeIn(name, d);
    const holders = this.repos.referenceCount(d.value);
    if (holders > 0) {
      // 405 rather than 403: clients treat it as "this registry does not delete this", never as a failed login.
      throw new OciError('UNSUPPORTED', `blob ${d.value} is still referenced by ${holders} manifest(s); delete them first`);
    }
    await this.blobs.delete(d, { byClient: true });
  }

  /** Reports what a write committed (or that the disk is full) to the cache layer. */
  private async writing<T>(digest: string | undefined, op: Promise<T>): Promise<T> {
    try {
      const result = await op;
      if (digest) this.cache.written(digest);
      return result;
    } catch (e) {
      if (e instanceof OciError && e.code === 'STORAGE_FULL') this.cache.storageFull();
      throw e;
    }
  }

  /** An upload of `d` into `name`: HEADs of it there wait until `op` (which commits it and records its membership)
   *  is done. */
  private pushing<T>(name: string, d: Digest, op: () => Promise<T>): Promise<T> {
    return until(this.claims?.writing(pushKey(name, d.value)), op);
  }

  /** Monolithic upload: the whole blob in one request, verified against its digest before it exists. */
  putBlob(name: string, body: Readable, d: Digest, length?: number): Promise<number> {
    return this.pushing(name, d, async () => {
      const size = await this.writing(d.value, this.blobs.write(body, d, length));
      await this.joined(name, d.value);
      return size;
    });
  }

  /**
   * Cross-repository mount of `d` from `from` into `name`. In the one shared store a mount succeeds whenever the
   * blob exists; with tenant isolation only when `from` has it (without `from`: when `name` already has it), and
   * `name` then has it too. No `from` needs automatic discovery on. (Whether the caller may read `from` at all is
   * the auth layer's to decide.)
   */
  async canMount(name: string, d: Digest, from: string | undefined): Promise<boolean> {
    if (from === undefined && !this.options.automaticCrossMount) return false;
    if ((await this.blobSize(d)) === undefined || !(await this.holds(from ?? name, d.value))) return false;
    await this.pushing(name, d, () => this.joined(name, d.value));
    this.cache.blobProbed(d.value);
    return true;
  }

  /** `client` is the caller's address: sessions are capped per client. */
  startUpload(name: string, client: string): Promise<UploadSession> {
    return this.sessionWork(client, name, () => this.writing(undefined, this.uploads.create(name, client)));
  }

  upload(name: string, id: string): Promise<UploadSession> {
    return this.uploads.get(id, name);
  }

  appendChunk(s: UploadSession, body: Readable, opts: ChunkOptions): Promise<number> {
    return this.sessionWork(s.client, s.repository, () => this.writing(undefined, this.uploads.append(s, body, opts)));
  }

  /** A session being started or written: the claims its client made here hold meanwhile (its digest comes last). */
  private sessionWork<T>(client: string, name: string, op: () => Promise<T>): Promise<T> {
    return until(this.claims?.uploading(pushParty(client, name)), op);
  }

  finishUpload(s: UploadSession, d: Digest, body: Readable | undefined, opts: ChunkOptions): Promise<number> {
    return this.pushing(s.repository, d, async () => {
      const size = await this.writing(d.value, this.uploads.finish(s, d, body, opts));
      await this.joined(s.repository, d.value);
      return size;
    });
  }

  cancelUpload(s: UploadSession): Promise<void> {
    return this.uploads.cancel(s);
  }

  /**
   * Validates and stores a manifest. Its digest is of the exact bytes received; every descriptor it references
   * (BuildKit's cache index lists layers and a cache config, not manifests) must already be stored — with
   * tenant isolation, stored in this repository.
   */
  /** Stores a manifest; says too the size of the BuildKit cache config it lists, for the reference analytics. */
  async putManifest(name: string, ref: Reference, body: Buffer, contentType: string | undefined): Promise<{ record: ManifestRecord; cacheConfigBytes: number | undefined }> {
    const digest = digestOf(body, ref.kind === 'digest' ? ref.digest.algorithm : 'sha256');
    if (ref.kind === 'digest' && ref.digest.value !== digest.value) {
      throw new OciError('DIGEST_INVALID', `manifest hashes to ${digest.value}, not ${ref.digest.value}`, {
        expected: ref.digest.value,
        actual: digest.value,
      });
    }
    const parsed = parseManifest(body, contentType);
    const required = requiredDigests(parsed);
    const reservation = await this.cache.reserve(required);
    try {
      const missing = new Set(reservation.missing);
      for (const d of required) if (!missing.has(d) && !(await this.holds(name, d))) missing.add(d);
      const record = await this.storeManifest(name, ref, body, digest, parsed, required, [...missing]);
      return { record, cacheConfigBytes: cacheConfigSize(parsed) };
    } finally {
      // Once the record exists it keeps the blobs alive; until then the reservation did.
      reservation.release();
    }
  }

  private async storeManifest(
    name: string,
    ref: Reference,
    body: Buffer,
    digest: Digest,
    parsed: ParsedManifest,
    required: string[],
    missing: string[],
  ): Promise<ManifestRecord> {
    if (missing.length > 0) {
      throw new OciError('MANIFEST_BLOB_UNKNOWN', `manifest references ${missing.length} unknown blob(s), first ${missing[0]}`, {
        digests: missing.slice(0, 20),
      });
    }
    const record: ManifestRecord = {
      digest: digest.value,
      mediaType: parsed.mediaType,
      size: body.length,
      // With tenant isolation a manifest's references make its repository hold them, so only those checked as
      // held count: a foreign-layer descriptor (`urls`, never checked) would otherwise let a manifest that merely
      // names a digest read another tenant's blob.
      references: new DigestList(this.members ? required : parsed.references.map((r) => r.digest)),
    };
    if (parsed.subject) record.subject = parsed.subject.digest;
    const artifactType = referrerArtifactType(parsed);
    if (artifactType) record.artifactType = artifactType;
    if (parsed.annotations) record.annotations = parsed.annotations;
    const tag = ref.kind === 'tag' ? ref.tag : undefined;
    await this.writing(digest.value, this.blobs.writeBuffer(body, digest));
    await this.writing(undefined, this.repos.putManifest(name, record, tag));
    this.cache.manifestUsed(name, digest.value, tag);
    return record;
  }

  /** A manifest by reference: from this disk, or else imported from the tier (a push another daemon on the same
   *  bucket received). */
  private async find(name: string, ref: Reference): Promise<ManifestRecord | undefined> {
    const record = await this.lookup(name, ref);
    if (record || !this.tier || !(await this.tier.importManifest(name, ref))) return record;
    return this.lookup(name, ref);
  }

  /**
   * A missing tag's stand-in: the first of the matching rule's `to` tags that exists in the same repository, here
   * or in the tier (`@recent`: the tag changed most recently here), so a new branch's first build imports a warm
   * cache.
   */
  private async fallbackFor(name: string, tag: string): Promise<ResolvedManifest | undefined> {
    for (const candidate of this.options.fallback.candidates(name, tag)) {
      const served = candidate === RECENT ? this.repos.latestTag(name, tag) : candidate;
      const record = served === undefined ? undefined : await this.find(name, { kind: 'tag', tag: served });
      if (record) return { record, fallback: served! };
    }
    return undefined;
  }

  /** A manifest by tag or digest; a missing tag may be answered by a fallback (never a missing digest). */
  async resolve(name: string, ref: Reference): Promise<ResolvedManifest> {
    const record = await this.find(name, ref);
    const found = record ? { record } : ref.kind === 'tag' ? await this.fallbackFor(name, ref.tag) : undefined;
    if (!found) {
      const what = ref.kind === 'tag' ? `${name}:${ref.tag}` : `${name}@${ref.digest.value}`;
      throw new OciError('MANIFEST_UNKNOWN', `manifest ${what} is unknown`, { name });
    }
    // A fallback is a use of the tag that answered: it keeps that cache warm.
    const tag = found.fallback ?? (ref.kind === 'tag' ? ref.tag : undefined);
    this.cache.manifestUsed(name, found.record.digest, tag);
    if (found.fallback) this.cache.fallbackServed(name);
    if (tag !== undefined) this.tier?.tagServed(name, tag, found.record.digest);
    return found;
  }

  private async lookup(name: string, ref: Reference): Promise<ManifestRecord | undefined> {
    const digest = ref.kind === 'tag' ? await this.repos.lookupTag(name, ref.tag) : ref.digest.value;
    return digest ? await this.repos.lookupManifest(name, digest) : undefined;
  }

  async openManifest(name: string, ref: Reference): Promise<StoredManifest> {
    const found = await this.resolve(name, ref);
    const { record } = found;
    const d = parseDigest(record.digest);
    // Its bytes may have gone to the tier (a manifest is a blob too).
    const reader = (await this.blobs.openReader(d)) ?? this.tier?.openBlob(d, record.size);
    if (!reader) throw new OciError('MANIFEST_UNKNOWN', `manifest ${record.digest} content is missing`, { name });
    await reader.ready?.();
    // The layer GETs that follow a manifest's find the blobs local sooner.
    if (this.tier) this.tier.warm([...record.references].filter((r) => !this.blobs.has(r)));
    return { ...found, reader };
  }

  async deleteManifest(name: string, ref: Reference): Promise<void> {
    if (!this.options.deleteEnabled) throw new OciError('UNSUPPORTED', 'deletion is disabled on this registry');
    // Load what another worker may have written a moment ago, so deleting it does not answer "unknown".
    if (ref.kind === 'tag') {
      await this.repos.lookupTag(name, ref.tag);
      await this.repos.deleteTag(name, ref.tag);
    } else {
      await this.repos.lookupManifest(name, ref.digest.value);
      await this.repos.deleteManifest(name, ref.digest.value);
    }
  }

  /** With a tier, what it has too: another daemon's pushes are readable here (a GET imports them). */
  async tags(name: string, n: number | undefined, last: string | undefined): Promise<Page> {
    const local = this.repos.tags(name);
    const remote = this.tier ? await this.tier.tags(name) : [];
    if (!local && remote.length === 0) throw new OciError('NAME_UNKNOWN', `repository ${name} is unknown`, { name });
    return paginate(sortedUnion(local ?? [], remote), n, last);
  }

  /** Repositories in name order, the tier's included; with `visible`, only those it accepts (pagination counts
   *  only them). */
  async catalog(n: number | undefined, last: string | undefined, visible?: (name: string) => boolean): Promise<Page> {
    const remote = this.tier ? await this.tier.repositories() : [];
    const all = sortedUnion(this.repos.repositories(), remote);
    return paginate(visible ? all.filter(visible) : all, n, last);
  }

  /** OCI 1.1 referrers: an image index of the manifests in `name` whose subject is `subject`. */
  referrers(name: string, subject: Digest, artifactType: string | undefined): object {
    const manifests = this.repos
      .manifests(name)
      .filter((m) => m.subject === subject.value && (artifactType === undefined || m.artifactType === artifactType))
      .map((m) => ({
        mediaType: m.mediaType,
        digest: m.digest,
        size: m.size,
        ...(m.artifactType ? { artifactType: m.artifactType } : {}),
        ...(m.annotations ? { annotations: m.annotations } : {}),
      }));
    return { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
  }
}

function sortedUnion(a: string[], b: string[]): string[] {
  return b.length === 0 ? a : [...new Set([...a, ...b])].sort();
}

/** Sorted-list pagination: items after `last`, at most `n` of them. */
/** Runs `op`, then calls `done` (a claim's end) however it went. */
async function until<T>(done: (() => void) | undefined, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } finally {
    done?.();
  }
}

export function paginate(sorted: string[], n: number | undefined, last: string | undefined): Page {
  const from = last === undefined ? 0 : upperBound(sorted, last);
  const end = n === undefined ? sorted.length : Math.min(sorted.length, from + n);
  const items = sorted.slice(from, end);
  return end < sorted.length && items.length > 0 ? { items, next: items[items.length - 1]! } : { items };
}

function upperBound(sorted: string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
