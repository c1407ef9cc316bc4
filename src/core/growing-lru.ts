import { LRUCache } from 'lru-cache';

type Options<K extends {}, V extends {}> = Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'>;

/**
 * An LRU cache of at most `entries` entries whose memory grows with its use. Given `max`, lru-cache allocates its
 * arrays for every entry up front (28–44 bytes each: megabytes for a 100 000-entry cache, in every process, used or
 * not); counting entries through `maxSize` instead keeps the same bound and allocates as entries arrive.
 */
export function growingLru<K extends {}, V extends {}>(entries: number, options: Options<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: entries, sizeCalculation: () => 1 });
}
