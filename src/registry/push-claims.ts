/**
 * Push coalescing. Parallel CI jobs building one Dockerfile HEAD the same layer at about the same moment, all find
 * it missing, and all upload it: 16 jobs sent each shared layer 11 times over in the bench's CI storm. Instead, the
 * first HEAD that misses a blob in a repository, from a caller that may push there, claims it and gets its 404 as
 * before. A HEAD of that blob in that repository while the claim holds waits until the claimant's upload of that
 * digest ends (or the claim lapses), and is then answered from the outcome: usually 200, and its client skips the
 * upload. A chunked push names its digest only in its last request, so while the claimant (its address, in that
 * repository) is starting or writing any upload session there, its claims stay. One owner decides for every
 * process of the daemon (the primary, or the process itself).
 */
export interface PushClaims {
  /**
   * A HEAD by `party` (see pushParty) found `key` missing; `mayClaim` when it may push there. 'claimed': it is now
   * expected to upload it. 'none': nothing to wait for (nothing claimed, or the claim is the party's own:
   * containers/image HEADs each blob twice, on two connections, before its upload).
   * 'settled': another caller's claim ended (its upload finished or failed, it lapsed, or the wait reached its
   * bound), so look again.
   */
  missed(key: string, party: string, mayClaim: boolean): Promise<ClaimVerdict>;
  /** An upload of `key` began (a completing PUT, a monolithic POST, a mount); the result ends it, committed or not,
   *  after the blob and its membership are visible to every process. */
  writing(key: string): () => void;
  /** `party` is starting or writing an upload session (its digest not named yet): its claims hold until the result
   *  is called, and lapse only CLAIM_LAPSE_MS after. */
  uploading(party: string): () => void;
}

export type ClaimVerdict = 'claimed' | 'settled' | 'none';

/** What a claim is about: one digest in one repository (a claim tells nothing beyond the repository asked). */
export const pushKey = (repository: string, digest: string): string => `${repository}@${digest}`;
/** Who claims: a client address in a repository. One CI job, as jobs run on machines of their own; jobs behind one
 *  address (a NAT) are one party, and do not wait for each other. */
export const pushParty = (client: string, repository: string): string => `${client} ${repository}`;

/** A claim that no upload followed (the client only looked, or was refused) frees its waiters this long after
 *  the HEAD. Pushers upload right after their HEAD; a chunked push is claimed only from its completing PUT on. */
export const CLAIM_LAPSE_MS = 2_000;
/** Claims at once: past it a miss claims nothing (a flood of HEADs of random digests costs no more memory). */
const MAX_CLAIMS = 10_000;

interface Claim {
  holder: string;
  party?: string;
  writes: number;
  /** Sessions of its party being started or written. */
  holds: number;
  waiters: Set<() => void>;
  lapse?: NodeJS.Timeout;
}

/** The owner's book of claims. `holder` names the process asking (a worker), so a dead one's claims end. */
export class ClaimBook {
  private readonly claims = new Map<string, Claim>();
  /** Uploads in progress by id (given by the writer), with what they hold. */
  private readonly writes = new Map<string, { key: string; claim: Claim; holder: string }>();
  /** Claims by party, and the session activity holding them by id. */
  private readonly parties = new Map<string, Set<string>>();
  private readonly activity = new Map<string, { held: Array<[string, Claim]>; holder: string }>();

  constructor(
    /** The longest a HEAD waits for another caller's claim. */
    private readonly maxWaitMs: number,
    private readonly lapseMs = CLAIM_LAPSE_MS,
  ) {}

  missed(key: string, party: string, mayClaim: boolean, holder = 'self'): Promise<ClaimVerdict> {
    const held = this.claims.get(key);
    if (held) return held.party === party ? Promise.resolve('none') : this.wait(held);
    if (!mayClaim || this.claims.size >= MAX_CLAIMS) return Promise.resolve('none');
    const claim: Claim = { holder, party, writes: 0, holds: 0, waiters: new Set() };
    this.arm(key, claim);
    this.claims.set(key, claim);
    let keys = this.parties.get(party);
    if (!keys) this.parties.set(party, (keys = new Set()));
    keys.add(key);
    return Promise.resolve('claimed');
  }

  /** Session activity `id` of `party` began: the party's claims do not lapse until it ends. */
  hold(id: string, party: string, holder = 'self'): void {
    if (this.activity.has(id)) return;
    const held = [...(this.parties.get(party) ?? [])].map((key): [string, Claim] => [key, this.claims.get(key)!]);
    for (const [, claim] of held) {
      claim.holds++;
      clearTimeout(claim.lapse);
      claim.lapse = undefined;
    }
    this.activity.set(id, { held, holder });
  }

  release(id: string): void {
    const a = this.activity.get(id);
    if (!a) return;
    this.activity.delete(id);
    for (const [key, claim] of a.held) {
      if (--claim.holds === 0 && claim.writes === 0 && this.claims.get(key) === claim) this.arm(key, claim);
    }
  }

  /** Upload `id` of `key` began: the claim (made now if there was none) holds until every upload of it ended. */
  begin(id: string, key: string, holder = 'self'): void {
    if (this.writes.has(id)) return;
    let claim = this.claims.get(key);
    if (!claim) {
      claim = { holder, writes: 0, holds: 0, waiters: new Set() };
      this.claims.set(key, claim);
    }
    clearTimeout(claim.lapse);
    claim.lapse = undefined;
    claim.writes++;
    this.writes.set(id, { key, claim, holder });
  }

  end(id: string): void {
    const w = this.writes.get(id);
    if (!w) return;
    this.writes.delete(id);
    if (--w.claim.writes === 0) this.settle(w.key, w.claim);
  }

  /** A worker died: its uploads ended with it, and a claim of its that no upload holds ends now. */
  releaseHolder(holder: string): void {
    for (const [id, w] of [...this.writes]) if (w.holder === holder) this.end(id);
    for (const [id, a] of [...this.activity]) if (a.holder === holder) this.release(id);
    for (const [key, claim] of [...this.claims]) if (claim.holder === holder && claim.writes === 0) this.settle(key, claim);
  }

  /** Claims held now (for tests and the status of a stuck push). */
  get size(): number {
    return this.claims.size;
  }

  private wait(claim: Claim): Promise<ClaimVerdict> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        claim.waiters.delete(done);
        resolve('settled');
      };
      const timer = setTimeout(done, this.maxWaitMs).unref();
      claim.waiters.add(done);
    });
  }

  private arm(key: string, claim: Claim): void {
    clearTimeout(claim.lapse);
    claim.lapse = setTimeout(() => this.settle(key, claim), this.lapseMs).unref();
  }

  private settle(key: string, claim: Claim): void {
    if (this.claims.get(key) === claim) this.claims.delete(key);
    if (claim.party !== undefined) {
      const keys = this.parties.get(claim.party);
      keys?.delete(key);
      if (keys?.size === 0) this.parties.delete(claim.party);
    }
    clearTimeout(claim.lapse);
    for (const done of [...claim.waiters]) done();
  }
}

/** The book's owner asking itself (one process, or the primary). */
export function ownClaims(book: ClaimBook): PushClaims {
  let next = 0;
  return {
    missed: (key, party, mayClaim) => book.missed(key, party, mayClaim),
    writing: (key) => {
      const id = `self ${next++}`;
      book.begin(id, key);
      return () => book.end(id);
    },
    uploading: (party) => {
      const id = `self ${next++}`;
      book.hold(id, party);
      return () => book.release(id);
    },
  };
}
