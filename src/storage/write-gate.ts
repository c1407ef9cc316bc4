/**
 * The daemon-wide rules for writes, decided by one owner for every process of a daemon (the primary with worker
 * processes, or the process itself): which request is the one writer of an upload session right now, how many
 * sessions a client may hold, and whether a write fits the disk budget. Nothing here depends on a process hearing
 * of another's change in time: each question is put to the owner and answered there.
 */
export interface WriteGate {
  /** Registers a new upload session for `client` (its address); refuses past the session caps. */
  openSession(id: string, client: string): Promise<void>;
  /** The session is gone (completed, cancelled or expired): its bytes and any lock are released. */
  closeSession(id: string): Promise<void>;
  /**
   * Makes this request the one writer of a session, with room reserved for `bytes` more (the declared chunk
   * length, or 0). Refuses while another request holds the session, anywhere in the daemon.
   */
  lockSession(id: string, bytes: number): Promise<SessionLease>;
  /** Room for a write outside any session (a monolithic blob, a manifest) of `bytes` (0 when unknown). */
  reserve(bytes: number): Promise<SpaceLease>;
}

export interface SpaceLease {
  /** Ensures the lease covers `total` bytes written by this request; refuses (the write must stop) if not. */
  ensure(total: number): Promise<void>;
  /** Ends the lease: the bytes it covered are no longer counted (committed content is counted as blobs). */
  release(): Promise<void>;
}

export interface SessionLease {
  ensure(total: number): Promise<void>;
  /** Ends this request's hold of the session, which now holds `size` bytes on disk. */
  unlock(size: number): Promise<void>;
}

/** What a write lease asks of the owner, in plain data (it crosses the IPC channel between processes). */
export type LedgerRequest =
  | { op: 'open'; session: string; client: string }
  | { op: 'close'; session: string }
  | { op: 'lock'; session: string; bytes: number }
  | { op: 'reserve'; bytes: number }
  | { op: 'grow'; lease: number; total: number }
  | { op: 'unlock'; lease: number; size: number }
  | { op: 'release'; lease: number };

/** `lock` and `reserve` answer a lease id, `grow` the bytes now covered; the others nothing. */
export type LedgerCall = (req: LedgerRequest) => Promise<number | undefined>;

/**
 * A WriteGate that puts every question to the owner through `call` (in-process, or over IPC). Leases remember
 * what they cover, so a write that stays within its reservation asks nothing more.
 */
export class LedgerGate implements WriteGate {
  constructor(private readonly call: LedgerCall) {}

  async openSession(id: string, client: string): Promise<void> {
    await this.call({ op: 'open', session: id, client });
  }

  async closeSession(id: string): Promise<void> {
    await this.call({ op: 'close', session: id });
  }

  async lockSession(id: string, bytes: number): Promise<SessionLease> {
    const lease = this.lease(Number(await this.call({ op: 'lock', session: id, bytes })), bytes);
    return { ensure: lease.ensure, unlock: (size) => this.call({ op: 'unlock', lease: lease.id, size }).then(() => undefined) };
  }

  async reserve(bytes: number): Promise<SpaceLease> {
    const lease = this.lease(Number(await this.call({ op: 'reserve', bytes })), bytes);
    return { ensure: lease.ensure, release: () => this.call({ op: 'release', lease: lease.id }).then(() => undefined) };
  }

  private lease(id: number, covered: number) {
    return {
      id,
      ensure: async (total: number) => {
        if (total > covered) covered = Number(await this.call({ op: 'grow', lease: id, total }));
      },
    };
  }
}
