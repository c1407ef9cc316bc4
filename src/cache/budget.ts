import { statfs } from 'node:fs/promises';

export type BudgetSpec = { bytes: number } | { percent: number };

/** The byte budget: a fixed size, or a share of the data directory's filesystem (measured at start). */
export async function resolveBudget(spec: BudgetSpec, dir: string): Promise<number> {
  if ('bytes' in spec) return spec.bytes;
  const fs = await statfs(dir);
  return Math.floor((fs.blocks * fs.bsize * spec.percent) / 100);
}
