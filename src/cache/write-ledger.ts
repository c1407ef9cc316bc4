import { OciError } from '../core/errors.js';
import type { LedgerRequest } from '../storage/write-gate.js';

/** Reservations grow ahead of a chunked body by this much, so a long stream asks the owner once per slab. */
const SLAB = 8 * 1024 * 1024;

export interface WriteLimits {
  /** The disk budget: blobs, upload sessions and writes in progress together never exceed it. */
  maxBytes: number;
  /** The largest blob one upload (session or monolithic) may hold. */
  maxUploadBytes: number;
  /** Share of the budget that all open upload sessions may hold together. */
  uploadShare: number;
  maxSessions: number;
  /** Open sessions per client address (0: no per-client cap). */
  maxSessionsPerClient: number;
  /** A session is removed once it is older than this… */
  uploadTtlMs: number;
  /** …or has not been written to for this long. */
  uploadIdleMs: number;
}

interface Session {
  client: string;
  startedAt: number;
  lastActive: number;
  /** Bytes in its data file, as of the end of its last write. */
  bytes: number;
  /** The lease of the request writing to it now. */
  lease?: number;
}

interface Lease {
  holder: string;
  bytes: number;
  session?: string;
}

export interface LedgerStatus {
  sessions: number;
  sessionBytes: number;
  inFlightBytes: number;
}

/**
 * The owner's book of everything being written: upload sessions (who holds each, how big each is, how long it
 * has been idle) and the space reserved by writes in progress. Every write reserves its bytes here before they
 * reach the disk, so `usage()` — committed blobs plus sessions plus reservations — never passes the budget: a
 * write that would is first given room by eviction (down to the low watermark), and refused if eviction cannot
 * free enough. Holders are named (a worker process, or 'self'), so the leases of a process that died are ended.
 */
export class WriteLedger {
  private readonly sessions = new Map<string, Session>();
  private readonly perClient = new Map<string, number>();
  private readonly leases = new Map<number, Lease>();
  private nextLease = 1;
  private sessionBytes = 0;
  private leasedBytes = 0;
  private sessionLeasedBytes = 0;
  private roomMaking: Promise<void> | undefined;
  /** Evicts so that `bytes` more fit (the evictor, down to its low watermark); set once the evictor exists. */
  makeRoom: (bytes: number) => Promise<void> = async () => {};

  constructor(
    private readonly blobBytes: () => number,
    private readonly limits: WriteLimits,
  ) {}

  /** Bytes counted against the budget. */
  usage(): number {
    return this.blobBytes() + this.sessionBytes + this.leasedBytes;
  }

  status(): LedgerStatus {
    return { sessions: this.sessions.size, sessionBytes: this.sessionBytes, inFlightBytes: this.leasedBytes };
  }

  /** A session found on disk at start-up (no caps: it exists already). */
  seed(id: string, client: string, startedAt: number, lastActive: number, bytes: number): void {
    this.addSession(id, { client, startedAt, lastActive, bytes });
  }

  /** Async even where the answer is immediate: a refusal is a rejected promise, never a throw at the caller. */
  async handle(req: LedgerRequest, holder: string): Promise<number | undefined> {
    switch (req.op) {
      case 'open':
        return this.open(req.session, req.client);
      case 'close':
        return this.close(req.session);
      case 'lock':
        return this.lock(req.session, holder, req.bytes);
      case 'reserve':
        return this.reserve(holder, req.bytes);
      case 'grow':
        return this.grow(req.lease, req.total);
      case 'unlock':
        return this.unlock(req.lease, req.size);
      case 'release':
        return this.endLease(req.lease);
    }
  }

  open(id: string, client: string): undefined {
    const { maxSessions, maxSessionsPerClient } = this.limits;
    if (this.sessions.size >= maxSessions) {
      throw new OciError('TOOMANYREQUESTS', `${maxSessions} upload sessions are open, the most this registry allows; retry later`);
    }
    if (maxSessionsPerClient > 0 && (this.perClient.get(client) ?? 0) >= maxSessionsPerClient) {
      throw new OciError('TOOMANYREQUESTS', `this client has ${maxSessionsPerClient} upload sessions open, the most allowed; finish or cancel some`);
    }
    const now = Date.now();
    this.addSession(id, { client, startedAt: now, lastActive: now, bytes: 0 });
    return undefined;
  }

  private addSession(id: string, s: Session): void {
    this.sessions.set(id, s);
    this.perClient.set(s.client, (this.perClient.get(s.client) ?? 0) + 1);
    this.sessionBytes += s.bytes;
  }

  close(id: string): undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.lease !== undefined) this.endLease(s.lease);
    this.sessions.delete(id);
    this.sessionBytes -= s.bytes;
    const n = (this.perClient.get(s.client) ?? 1) - 1;
    if (n > 0) this.perClient.set(s.client, n);
    else this.perClient.delete(s.client);
    return undefined;
  }

  async lock(id: string, holder: string, bytes: number): Promise<number> {
    const s = this.sessions.get(id);
    if (!s) throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${id} is unknown or expired`);
    if (s.lease !== undefined) {
      throw new OciError('UPLOAD_OUT_OF_ORDER', `another request is writing to upload ${id}; one request at a time`);
    }
    // Taken before any wait for room, so a second writer is refused at once, not after the first one's eviction.
    const lease = this.addLease({ holder, bytes: 0, session: id });
    s.lease = lease;
    return this.cover(lease, bytes);
  }

  reserve(holder: string, bytes: number): Promise<number> {
    return this.cover(this.addLease({ holder, bytes: 0 }), bytes);
  }

  /** Grows a new lease to its first `bytes`; a refusal ends it. */
  private async cover(lease: number, bytes: number): Promise<number> {
    try {
      if (bytes > 0) await this.grow(lease, bytes);
    } catch (e) {
      this.endLease(lease);
      throw e;
    }
    return lease;
  }

  private addLease(l: Lease): number {
    const id = this.nextLease++;
    this.leases.set(id, l);
    return id;
  }

  /** Extends a lease to cover `total` bytes (a slab more when that fits too). Answers the bytes covered. */
  async grow(id: number, total: number): Promise<number> {
    const l = this.leases.get(id);
    if (!l) throw new Error(`write lease ${id} is unknown`);
    if (total <= l.bytes) return l.bytes;
    const session = l.session !== undefined ? this.sessions.get(l.session) : undefined;
    const held = session?.bytes ?? 0;
    const max = Math.min(this.limits.maxUploadBytes, this.limits.maxBytes);
    if (held + total > max) {
      throw new OciError('UPLOAD_TOO_LARGE', `the upload would hold ${held + total} bytes; this registry takes blobs of at most ${max} bytes`, {
        limit: max,
      });
    }
    const need = total - l.bytes;
    const share = Math.floor(this.limits.uploadShare * this.limits.maxBytes);
    const withinShare = (n: number) => !session || this.sessionBytes + this.sessionLeasedBytes + n <= share;
    if (!withinShare(need)) {
      throw new OciError('NO_ROOM', `upload sessions in progress hold the ${share} bytes they may use together; retry once some finish`);
    }
    for (let attempt = 0; !this.fits(need); attempt++) {
      if (attempt === 2) {
        throw new OciError('NO_ROOM', 'the cache budget is full of content that cannot be evicted now; nothing was stored, retry later');
      }
      await this.room(need);
    }
    // The slab ahead is taken only when it fits as well, so a nearly full budget still admits the exact bytes.
    const extra = this.fits(need + SLAB) && withinShare(need + SLAB) && held + total + SLAB <= max ? SLAB : 0;
    this.addLeased(l, need + extra);
    return l.bytes;
  }

  private fits(bytes: number): boolean {
    return this.usage() + bytes <= this.limits.maxBytes;
  }

  /** One eviction at a time frees room for all the writes waiting for it. */
  private async room(bytes: number): Promise<void> {
    if (!this.roomMaking) {
      this.roomMaking = this.makeRoom(bytes).finally(() => (this.roomMaking = undefined));
    }
    await this.roomMaking.catch(() => undefined);
  }

  private addLeased(l: Lease, by: number): void {
    l.bytes += by;
    this.leasedBytes += by;
    if (l.session !== undefined) this.sessionLeasedBytes += by;
  }

  unlock(id: number, size: number): undefined {
    const l = this.leases.get(id);
    const s = l?.session !== undefined ? this.sessions.get(l.session) : undefined;
    this.endLease(id);
    if (s) {
      this.sessionBytes += size - s.bytes;
      s.bytes = size;
      s.lastActive = Date.now();
    }
    return undefined;
  }

  private endLease(id: number): undefined {
    const l = this.leases.get(id);
    if (!l) return undefined;
    this.leases.delete(id);
    this.addLeased(l, -l.bytes);
    if (l.session !== undefined) {
      const s = this.sessions.get(l.session);
      if (s?.lease === id) s.lease = undefined;
    }
    return undefined;
  }

  /** Ends every lease of a holder that is gone (a worker process that died); answers the sessions it held, whose
   *  size on disk the caller re-reads (a chunk may have been cut short). */
  releaseHolder(holder: string): string[] {
    const sessions: string[] = [];
    for (const [id, l] of [...this.leases]) {
      if (l.holder !== holder) continue;
      if (l.session !== undefined) sessions.push(l.session);
      this.endLease(id);
    }
    return sessions;
  }

  /** A session's size as found on disk. */
  resize(id: string, size: number): void {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessionBytes += size - s.bytes;
    s.bytes = size;
  }

  /** Sessions no request holds that are past their age or idle limit. */
  expired(now = Date.now()): string[] {
    const out: string[] = [];
    for (const [id, s] of this.sessions) {
      if (s.lease !== undefined) continue;
      if (now - s.startedAt > this.limits.uploadTtlMs || now - s.lastActive > this.limits.uploadIdleMs) out.push(id);
    }
    return out;
  }
}
