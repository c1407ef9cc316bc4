import { statfs } from 'node:fs/promises';

export type BudgetSpec = { bytes: number } | { percent: number };

/** The byte budget: a fixed size, or a share of the data directory's filesystem (measured at start). */
export async function resolveBudget(spec: BudgetSpec, dir: string): Promise<number> {
  if ('bytes' in spec) return spec.bytes;
  const fs = await statfs(dir);
  return Math.floor((fs.blocks * fs.bsize * spec.percent) / 100);
}

/**
 * Bytes free on the data directory's filesystem when the budget promises more than the disk can give — more than
 * is free plus what the store already holds (a share of a disk shared with other data) — else undefined.
 */
export async function overcommitted(maxBytes: number, dir: string, storeBytes: number): Promise<number | undefined> {
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  return maxBytes > free + storeBytes ? free : undefined;
}
