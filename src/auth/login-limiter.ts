import { LRUCache } from 'lru-cache';

/** What the HTTP layer asks about failed logins: local answers only, so a request never waits for them. */
export interface LoginGuard {
  /** Seconds until `address` may try credentials again; 0 when it may now. */
  retryAfter(address: string): number;
  failed(address: string): void;
}

export interface LoginLimits {
  /** Failed logins allowed per address within one window. */
  maxFailures: number;
  windowMs: number;
}

/**
 * Counts failed logins per client address in fixed windows; past `maxFailures` the address is blocked for the rest
 * of its window. Bounded: the least recently seen addresses are forgotten first.
 */
export class LoginLimiter {
  private readonly windows = new LRUCache<string, { failures: number; resetAt: number }>({ max: 100_000 });

  constructor(
    private readonly limits: LoginLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a failure; returns when the address is blocked until (ms epoch), or undefined while it is not. */
  failed(address: string): number | undefined {
    const now = this.now();
    let w = this.windows.get(address);
    if (!w || w.resetAt <= now) {
      w = { failures: 0, resetAt: now + this.limits.windowMs };
      this.windows.set(address, w);
    }
    w.failures++;
    return w.failures >= this.limits.maxFailures ? w.resetAt : undefined;
  }
}

/** Blocks as they were decided (here, or by the primary for every worker), by address. */
export class BlockList {
  private readonly until = new LRUCache<string, number>({ max: 100_000 });

  constructor(private readonly now: () => number = Date.now) {}

  block(address: string, untilMs: number): void {
    this.until.set(address, untilMs);
  }

  retryAfter(address: string): number {
    const until = this.until.get(address);
    if (until === undefined) return 0;
    const left = until - this.now();
    if (left <= 0) {
      this.until.delete(address);
      return 0;
    }
    return Math.ceil(left / 1000);
  }
}

/** The guard of a single process: counts and blocks locally. */
export function localGuard(limits: LoginLimits): LoginGuard {
  const limiter = new LoginLimiter(limits);
  const blocked = new BlockList();
  return {
    retryAfter: (a) => blocked.retryAfter(a),
    failed: (a) => {
      const until = limiter.failed(a);
      if (until !== undefined) blocked.block(a, until);
    },
  };
}
