import { z } from 'zod';
import { parseBytes, parseDuration } from './units.js';

const bytes = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseBytes(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (examples: 4MiB, 500GB, 1048576)` });
    return z.NEVER;
  }
  return n;
});

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseDuration(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (examples: 30s, 15m, 24h, 7d)` });
    return z.NEVER;
  }
  return n;
});

const listen = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'must be HOST:PORT, e.g. 127.0.0.1:5000')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port must be 0–65535');

/** The whole configuration. Unknown keys are errors, so a typo never silently falls back to a default. */
export const configSchema = z.strictObject({
  listen,
  storage: z.strictObject({
    dir: z.string().min(1),
    uploadTtl: duration,
    deleteEnabled: z.boolean(),
  }),
  registry: z.strictObject({
    maxManifestBytes: bytes,
    automaticCrossMount: z.boolean(),
  }),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
  }),
  shutdownTimeout: duration,
});

export type Config = z.output<typeof configSchema>;
