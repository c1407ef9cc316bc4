import { growingLru } from '../core/growing-lru.js';

/** What the HTTP layer asks about logins from an address: local answers only, so a request never waits for them. */
export interface LoginGuard {
  /** Seconds `address` is blocked for (too many failures), 0 when it is not; counts nothing. */
  retryAfter(address: string): number;
  /** 0 admits an attempt (which must then be settled); otherwise the seconds to wait before trying again. */
  admit(address: string): number;
  settle(address: string, failed: boolean): void;
}

export interface LoginLimits {
  /** Failed logins allowed per address within one window. */
  maxFailures: number;
  windowMs: number;
}

interface Window {
  failures: number;
  /** Attempts admitted and not settled yet: they count against the limit, so a burst cannot outrun it. */
  inflight: number;
  resetAt: number;
}

/**
 * Counts logins per client address in fixed windows: failures, and attempts still being checked (bcrypt takes a
 * while). Once failures and attempts in flight reach `maxFailures`, the address waits for the end of its window.
 * Bounded: the least recently seen addresses are forgotten first.
 */
export class LoginLimiter {
  private readonly windows = growingLru<string, Window>(100_000);

  constructor(
    private readonly limits: LoginLimits,
    private readonly now: () => number = Date.now,
  ) {}

  private window(address: string): Window {
    const now = this.now();
    let w = this.windows.get(address);
    if (!w) {
      w = { failures: 0, inflight: 0, resetAt: now + this.limits.windowMs };
      this.windows.set(address, w);
    } else if (w.resetAt <= now) {
      w.failures = 0;
      w.resetAt = now + this.limits.windowMs;
    }
    return w;
  }

  retryAfter(address: string): number {
    const w = this.window(address);
    return w.failures >= this.limits.maxFailures ? Math.max(1, Math.ceil((w.resetAt - this.now()) / 1000)) : 0;
  }

  admit(address: string): number {
    const w = this.window(address);
    if (w.failures + w.inflight >= this.limits.maxFailures) return Math.max(1, Math.ceil((w.resetAt - this.now()) / 1000));
    w.inflight++;
    return 0;
  }

  settle(address: string, failed: boolean): void {
    const w = this.window(address);
    w.inflight = Math.max(0, w.inflight - 1);
    if (failed) w.failures++;
  }

  /** Records a failure seen elsewhere (a worker's); returns the end of the block it starts, if it does. */
  failed(address: string): number | undefined {
    const w = this.window(address);
    w.failures++;
    return w.failures >= this.limits.maxFailures ? w.resetAt : undefined;
  }
}

/** Blocks as they were decided (by the primary, for every worker), by address. */
export class BlockList {
  private readonly until = growingLru<string, number>(100_000);

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

  /** Blocks still running, for a process that starts after they were decided. */
  active(): Array<[string, number]> {
    const now = this.now();
    return [...this.until.entries()].filter(([, until]) => until > now);
  }
}

/** The guard of a single process: counts and blocks locally. */
export function localGuard(limits: LoginLimits): LoginGuard {
  const limiter = new LoginLimiter(limits);
  return { retryAfter: (a) => limiter.retryAfter(a), admit: (a) => limiter.admit(a), settle: (a, failed) => limiter.settle(a, failed) };
}
