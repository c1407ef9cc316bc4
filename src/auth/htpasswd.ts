import { createHash, randomBytes } from 'node:crypto';
import PQueue from 'p-queue';
import { OciError } from '../core/errors.js';
import bcrypt from 'bcryptjs';
import { growingLru } from '../core/growing-lru.js';
import type { Logger } from '../observability/logger.js';
import { WatchedFile } from './watched-file.js';

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

export interface HtpasswdParse {
  users: Map<string, string>;
  /** Lines that could not be used, by number, with why (never the line itself: it holds a hash). */
  problems: string[];
}

/** `user:hash` lines, bcrypt only (htpasswd -B): MD5, SHA1 and crypt hashes are too weak to accept. */
export function parseHtpasswd(text: string): HtpasswdParse {
  const users = new Map<string, string>();
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0) problems.push(`line ${i + 1}: not user:hash`);
    else if (!BCRYPT.test(hash)) problems.push(`line ${i + 1} (${user}): not a bcrypt hash (create entries with htpasswd -B)`);
    else users.set(user, hash);
  });
  return { users, problems };
}

/** Short, one-way: changes when a user's hash changes, so tokens issued before a password change stop working. */
const fingerprintOf = (hash: string) => createHash('sha256').update(hash).digest('base64url').slice(0, 12);

const costOf = (hash: string) => Number(hash.slice(4, 6));

/** bcrypt checks at once, per process, and how many may wait: bcryptjs runs on the event loop, so a flood of
 *  logins must queue behind a few rather than stall every other request. */
const CONCURRENT_CHECKS = 2;
const WAITING_CHECKS = 200;

interface Users {
  entries: Map<string, { hash: string; fingerprint: string }>;
  /** Compared against when the user is unknown, at the file's usual cost, so that a wrong user name takes as
   *  long as a wrong password (the hash of a random string nobody kept). */
  dummy: string;
}

/**
 * The htpasswd file, read again when it changes. Verified credentials are remembered for a few minutes by a hash
 * of user and password, so that clients sending Basic credentials on every request do not pay bcrypt each time;
 * a change of the file forgets them.
 */
export class Htpasswd {
  private readonly file: WatchedFile<Users>;
  private readonly verified = growingLru<string, string>(10_000, { ttl: 5 * 60_000 });
  private readonly checks = new PQueue({ concurrency: CONCURRENT_CHECKS });

  constructor(path: string, log: Logger) {
    this.file = new WatchedFile(
      path,
      (text) => {
        const { users, problems } = parseHtpasswd(text);
        for (const p of problems) log.warn({ file: path }, `htpasswd ${p}; entry ignored`);
        const costs = [...users.values()].map(costOf).sort((a, b) => a - b);
        const cost = costs[Math.floor(costs.length / 2)] ?? 10;
        return {
          entries: new Map([...users].map(([user, hash]) => [user, { hash, fingerprint: fingerprintOf(hash) }])),
          dummy: bcrypt.hashSync(randomBytes(18).toString('base64'), cost),
        };
      },
      log,
      (users) => {
        this.verified.clear();
        log.info({ file: path, users: users.entries.size }, 'htpasswd loaded');
      },
    );
  }

  /** The first read: a missing or unreadable file stops start-up. */
  async load(): Promise<void> {
    await this.file.load();
  }

  /** The user's current fingerprint, or undefined when the user no longer exists. */
  async fingerprint(user: string): Promise<string | undefined> {
    return (await this.file.current()).entries.get(user)?.fingerprint;
  }

  private key(user: string, password: string): string {
    return createHash('sha256').update(user).update('\0').update(password).digest('base64url');
  }

  /** The user's fingerprint when this password was verified a moment ago (no bcrypt), else undefined. */
  async cached(user: string, password: string): Promise<string | undefined> {
    const entry = (await this.file.current()).entries.get(user);
    return entry && this.verified.get(this.key(user, password)) === entry.fingerprint ? entry.fingerprint : undefined;
  }

  /** The user's fingerprint when the password is right, else undefined; TOOMANYREQUESTS when too many wait.
   *  Always runs bcrypt: `cached` is the cheap look first. */
  async verify(user: string, password: string): Promise<string | undefined> {
    const users = await this.file.current();
    const entry = users.entries.get(user);
    if (this.checks.size >= WAITING_CHECKS) throw new OciError('TOOMANYREQUESTS', 'too many logins being checked; retry shortly', { retryAfter: 1 });
    const ok = await this.checks.add(() => bcrypt.compare(password, entry?.hash ?? users.dummy));
    if (!ok || !entry) return undefined;
    this.verified.set(this.key(user, password), entry.fingerprint);
    return entry.fingerprint;
  }
}
