import ms from 'ms';

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** "4MiB", "500GB", "1048576" or a number → bytes; undefined when it is not a size. */
export function parseBytes(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return undefined;
  const n = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * "24h", "15m", "7d", "500ms" → milliseconds; undefined when it is not a duration. A bare number other than 0 is not
 * one: whether `60` means seconds or milliseconds is exactly what a reader of a config file cannot tell.
 */
export function parseDuration(v: string): number | undefined {
  // Zero is zero in any unit ("0 turns it off").
  if (/^\s*0+\s*$/.test(v)) return 0;
  if (!/[a-z]\s*$/i.test(v)) return undefined;
  let n: number | undefined;
  try {
    n = ms(v as ms.StringValue) as number | undefined;
  } catch {
    return undefined; // ms throws on an empty (or over-long) string instead of returning undefined
  }
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : undefined;
}
