import { readFile, stat } from 'node:fs/promises';
import type { Logger } from '../observability/logger.js';

/**
 * A config-side file (htpasswd, a JWKS) read again when it changes, checked at most every `recheckMs`. A change
 * that fails to read or parse keeps the last good one.
 */
export class WatchedFile<T> {
  private value: T | undefined;
  private version = '';
  private checkedAt = 0;
  private checking: Promise<void> | undefined;

  constructor(
    readonly path: string,
    private readonly parse: (text: string) => T,
    private readonly log: Logger,
    private readonly onChange: (value: T) => void = () => {},
    private readonly recheckMs = 2_000,
  ) {}

  /** The first read: a missing or unreadable file is an error for the caller (start-up stops on it). */
  async load(): Promise<T> {
    await this.reload();
    return this.value!;
  }

  private async reload(): Promise<void> {
    const st = await stat(this.path);
    const version = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (version === this.version) return;
    const value = this.parse(await readFile(this.path, 'utf8'));
    this.value = value;
    this.version = version;
    this.onChange(value);
  }

  /**
   * The content, checked against the disk at most every `recheckMs`: the request that finds a check due waits for
   * one stat (and a read, when the file changed), so a change counts from the first request after it.
   */
  async current(): Promise<T> {
    const now = Date.now();
    if (!this.checking && now - this.checkedAt >= this.recheckMs) {
      this.checkedAt = now;
      this.checking = this.reload()
        .catch((err: unknown) => this.log.error({ err, file: this.path }, 'reading the file again failed: keeping what was loaded before'))
        .finally(() => (this.checking = undefined));
    }
    if (this.checking) await this.checking;
    return this.value!;
  }
}
