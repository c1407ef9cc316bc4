import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
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

/** Compared against when the user is unknown, so that a wrong user name costs as long as a wrong password (the
 *  hash of a random string nobody kept). */
const DUMMY_HASH = '$2b$10$hGvkCfGFZpUyhY/YZGwIRe8Ape5UN.OOlUFyFkpGheB0DVEcrZGgi';

/**
 * The htpasswd file, read again when it changes. Verified credentials are remembered for a few minutes by a hash
 * of user and password, so that clients sending Basic credentials on every request do not pay bcrypt each time;
 * a change of the file forgets them.
 */
export class Htpasswd {
  /** Users with their hash and its fingerprint, computed once per read of the file. */
  private readonly file: WatchedFile<Map<string, { hash: string; fingerprint: string }>>;
  private readonly verified = new LRUCache<string, string>({ max: 10_000, ttl: 5 * 60_000 });

  constructor(path: string, log: Logger) {
    this.file = new WatchedFile(
      path,
      (text) => {
        const { users, problems } = parseHtpasswd(text);
        for (const p of problems) log.warn({ file: path }, `htpasswd ${p}; entry ignored`);
        return new Map([...users].map(([user, hash]) => [user, { hash, fingerprint: fingerprintOf(hash) }]));
      },
      log,
      (users) => {
        this.verified.clear();
        log.info({ file: path, users: users.size }, 'htpasswd loaded');
      },
    );
  }

  /** The first read: a missing or unreadable file stops start-up. */
  async load(): Promise<void> {
    await this.file.load();
  }

  /** The user's current fingerprint, or undefined when the user no longer exists. */
  fingerprint(user: string): string | undefined {
    return this.file.current().get(user)?.fingerprint;
  }

  /** The user's fingerprint when the password is right, else undefined. */
  async verify(user: string, password: string): Promise<string | undefined> {
    const key = createHash('sha256').update(user).update('\0').update(password).digest('base64url');
    const entry = this.file.current().get(user);
    if (entry && this.verified.get(key) === entry.fingerprint) return entry.fingerprint;
    const ok = await bcrypt.compare(password, entry?.hash ?? DUMMY_HASH);
    if (!ok || !entry) return undefined;
    this.verified.set(key, entry.fingerprint);
    return entry.fingerprint;
  }
}
