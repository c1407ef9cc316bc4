/**
 * The write-back journal (`state/tier.log`): one line per change, appended, replayed at start-up, rewritten when it
 * grows. `q ITEM` queues an item; `d ITEM [VALUE]` records it done — for a blob, its size (so HEAD and eviction know
 * what the tier holds without asking it); for a tag, the digest uploaded. Items, space-separated (names, tags and
 * digests hold no spaces):
 *   b DIGEST          upload blob DIGEST
 *   m REPO DIGEST     upload a manifest record
 *   t REPO TAG        upload a tag (its target at upload time)
 *   x REPO TAG        delete a tag from the tier
 *   y REPO DIGEST     delete a manifest record from the tier
 *   z DIGEST          delete a blob from the tier (a client's delete; done also records an expiry's)
 * `c ITEM` cancels an item that went away locally before it could be uploaded.
 * A line cut short by a crash is skipped: it was never acknowledged to anyone but this process.
 */

export type Item =
  | { kind: 'b'; digest: string }
  | { kind: 'm'; repo: string; digest: string }
  | { kind: 't'; repo: string; tag: string }
  | { kind: 'x'; repo: string; tag: string }
  | { kind: 'y'; repo: string; digest: string }
  | { kind: 'z'; digest: string };

export interface JournalState {
  /** Items queued and not done, by key, in the order they were first queued. */
  pending: Map<string, Item>;
  /** Blobs the tier holds (uploaded by this daemon, or found there), with their sizes. */
  blobs: Map<string, number>;
  /** `REPO DIGEST` of manifest records uploaded. */
  manifests: Set<string>;
  /** `REPO TAG` → the digest uploaded for it. */
  tags: Map<string, string>;
  /** Lines read: the journal is compacted once this is far above what the state needs. */
  lines: number;
}

export const itemKey = (i: Item): string =>
  i.kind === 'b' || i.kind === 'z' ? `${i.kind} ${i.digest}` : i.kind === 'm' || i.kind === 'y' ? `${i.kind} ${i.repo} ${i.digest}` : `${i.kind} ${i.repo} ${i.tag}`;

/** An item from its key; undefined for anything malformed. */
export function parseItem(words: string[]): Item | undefined {
  const [kind, a, b] = words;
  if ((kind === 'b' || kind === 'z') && a && b === undefined && /^[a-z0-9]+:[a-f0-9]+$/.test(a)) return { kind, digest: a };
  if (!a || !b) return undefined;
  if (kind === 'm' || kind === 'y') return /^[a-z0-9]+:[a-f0-9]+$/.test(b) ? { kind, repo: a, digest: b } : undefined;
  if (kind === 't' || kind === 'x') return { kind, repo: a, tag: b };
  return undefined;
}

export const emptyJournal = (): JournalState => ({ pending: new Map(), blobs: new Map(), manifests: new Set(), tags: new Map(), lines: 0 });

/** Folds one `d` line's meaning into the state. */
export function markDone(s: JournalState, item: Item, value?: string): void {
  s.pending.delete(itemKey(item));
  switch (item.kind) {
    case 'b':
      s.blobs.set(item.digest, Number(value ?? 0));
      break;
    case 'm':
      s.manifests.add(`${item.repo} ${item.digest}`);
      break;
    case 't':
      if (value) s.tags.set(`${item.repo} ${item.tag}`, value);
      break;
    case 'x':
      s.tags.delete(`${item.repo} ${item.tag}`);
      break;
    case 'y':
      s.manifests.delete(`${item.repo} ${item.digest}`);
      break;
    case 'z':
      s.blobs.delete(item.digest);
      break;
  }
}

/** Replays a journal's text. Only complete lines (ending in a newline) count. */
export function parseJournal(text: string): JournalState {
  const s = emptyJournal();
  const end = text.lastIndexOf('\n');
  for (const line of end < 0 ? [] : text.slice(0, end).split('\n')) {
    s.lines++;
    const words = line.split(' ');
    const op = words[0];
    if (op === 'q') {
      const item = parseItem(words.slice(1));
      if (item && !s.pending.has(itemKey(item))) s.pending.set(itemKey(item), item);
    } else if (op === 'c') {
      const item = parseItem(words.slice(1));
      if (item) s.pending.delete(itemKey(item));
    } else if (op === 'd') {
      // A done line may end with a value (a blob's size, a tag's digest).
      const withValue = words[1] === 'b' || words[1] === 'z' ? 3 : 4;
      const item = parseItem(words.slice(1, withValue));
      const value = words[withValue];
      if (item && (item.kind !== 'b' || /^\d+$/.test(value ?? ''))) markDone(s, item, value);
    }
  }
  return s;
}

export const queuedLine = (i: Item): string => `q ${itemKey(i)}\n`;
export const cancelledLine = (i: Item): string => `c ${itemKey(i)}\n`;
export const doneLine = (i: Item, value?: string | number): string => `d ${itemKey(i)}${value === undefined ? '' : ` ${value}`}\n`;

/** The shortest journal that replays to `s`. */
export function compactJournal(s: JournalState): string {
  const out: string[] = [];
  for (const [digest, size] of s.blobs) out.push(doneLine({ kind: 'b', digest }, size));
  for (const k of s.manifests) {
    const [repo, digest] = k.split(' ') as [string, string];
    out.push(doneLine({ kind: 'm', repo, digest }));
  }
  for (const [k, digest] of s.tags) {
    const [repo, tag] = k.split(' ') as [string, string];
    out.push(doneLine({ kind: 't', repo, tag }, digest));
  }
  for (const item of s.pending.values()) out.push(queuedLine(item));
  return out.join('');
}

/** Retry delay after `attempt` failures (1, 2, …): exponential from `baseMs`, capped, with jitter over its upper
 *  half so that a recovered store is not hit by every retry at once. `random` is in [0, 1). */
export function backoffMs(attempt: number, random: number, baseMs = 500, capMs = 15_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * random);
}
