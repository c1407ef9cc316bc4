import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { parseBytes, parseDuration } from './units.js';
import { patternProblem, placeholders } from '../auth/patterns.js';

const bytes = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseBytes(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (examples: 4MiB, 500GB, 1048576)` });
    return z.NEVER;
  }
  return n;
});

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = typeof v === 'string' ? parseDuration(v) : v === 0 ? 0 : undefined;
  if (n === undefined) {
    const bare = typeof v === 'number' || /^\s*\d+(\.\d+)?\s*$/.test(v);
    ctx.addIssue({
      code: 'custom',
      message: bare ? `"${v}" has no unit (write 60s, 15m, 24h or 7d)` : `"${v}" is not a duration (examples: 30s, 15m, 24h, 7d)`,
    });
    return z.NEVER;
  }
  return n;
});

/** "500GiB", 1073741824 or "85%" (of the data directory's filesystem). */
const budget = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const pct = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v) : null;
  if (pct) {
    const percent = Number(pct[1]);
    if (percent > 0 && percent <= 100) return { percent };
  } else {
    const bytes = parseBytes(v);
    if (bytes !== undefined && bytes > 0) return { bytes };
  }
  ctx.addIssue({ code: 'custom', message: `"${v}" is not a budget (examples: 500GiB, 85%)` });
  return z.NEVER;
});

const fraction = z.number().gt(0).lt(1);

/** A socket timer: 0 turns it off; Node's timers cannot go past 2^31 − 1 ms (about 24 days). */
const timeout = duration.refine((n) => n <= 2 ** 31 - 1, 'must be at most 24d (0 turns it off)');

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:\s/]+):\d{1,5}$/;
const portInRange = (v: string) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535;

const listen = z.string().regex(HOST_PORT, 'must be HOST:PORT, e.g. 127.0.0.1:5000').refine(portInRange, 'port must be 0–65535');

/** "" (the unix socket DATA/admin.sock), unix:/ABSOLUTE/PATH, or HOST:PORT. */
const adminListen = z
  .string()
  .refine((v) => v === '' || /^unix:\/\S+$/.test(v) || (HOST_PORT.test(v) && portInRange(v)), 'must be empty, unix:/ABSOLUTE/PATH or HOST:PORT');

/** "auto" (one per core), or a count; strings from flags and env are accepted. */
const workers = z.union([z.literal('auto'), z.number(), z.string().regex(/^\d+$/, 'must be a number or "auto"')]).transform((v, ctx) => {
  const n = v === 'auto' ? availableParallelism() : Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a worker count (1–256 or "auto")` });
    return z.NEVER;
  }
  return n;
});

/** "true"/"false" (and 1/0) are accepted as strings too: they come from env variables. */
const flag = z.union([z.boolean(), z.enum(['true', 'false', '1', '0'])]).transform((v) => v === true || v === 'true' || v === '1');

/** PEM files; a config file's relative paths are resolved against its directory when it is read (load.ts). */
const tls = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  clientCa: z.string().min(1).optional(),
});

const repositoryPattern = z.string().superRefine((v, ctx) => {
  const problem = patternProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: `"${v}" ${problem}` });
});

/** A tag or a glob over tags (`pr-*`). */
const tagGlob = z.string().regex(/^[a-zA-Z0-9_*][a-zA-Z0-9._*-]{0,127}$/, 'must be a tag, or a glob of one with *');

const fallbackRule = z.strictObject({
  repositories: z.array(repositoryPattern).min(1),
  tags: z.array(tagGlob).min(1),
  to: z.array(z.union([z.literal('@recent'), z.string().regex(/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/, 'must be a tag or @recent')])).min(1),
});

const oneOrMore = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

/** One access rule: who (exactly one of anonymous, user, oidc), and what (repositories with actions, and/or admin). */
const rule = z
  .strictObject({
    anonymous: z.literal(true).optional(),
    user: oneOrMore.optional(),
    oidc: z
      .strictObject({
        issuer: z.string().min(1),
        /** Each claim must equal the value, or one of the values. */
        claims: z.record(z.string(), oneOrMore).optional(),
      })
      .optional(),
    repositories: z.array(repositoryPattern).optional(),
    actions: z.array(z.enum(['pull', 'push', 'delete', '*'])).optional(),
    admin: z.boolean().optional(),
  })
  .superRefine((r, ctx) => {
    const fail = (message: string) => ctx.addIssue({ code: 'custom', message });
    const who = [r.anonymous, r.user, r.oidc].filter((x) => x !== undefined).length;
    if (who !== 1) fail('a rule names exactly one of anonymous: true, user or oidc');
    const repos = r.repositories?.length ?? 0;
    const actions = r.actions?.length ?? 0;
    if ((repos > 0) !== (actions > 0)) fail('repositories and actions go together');
    if (repos === 0 && !r.admin) fail('the rule grants nothing: give repositories and actions, or admin: true');
    if (r.admin && r.anonymous) fail('admin: true cannot be given to anonymous callers');
    if (!r.oidc && (r.repositories ?? []).some((p) => placeholders(p).length > 0)) fail('{claim} placeholders are for oidc rules only');
    // Any job of any project can get a token of a shared issuer (GitHub, GitLab.com, Buildkite) with any audience.
    if (r.oidc && Object.keys(r.oidc.claims ?? {}).length === 0) {
      fail('an oidc rule needs at least one claim condition (e.g. repository_owner): the audience is no secret, any project on a shared issuer can get a token for it');
    }
  });

const issuer = z
  .strictObject({
    issuer: z.url(),
    audience: oneOrMore,
    jwksFile: z.string().min(1).optional(),
    jwksUrl: z.url().optional(),
  })
  .refine((i) => !(i.jwksFile && i.jwksUrl), 'give jwksFile or jwksUrl, not both');

/** Bearer token lifetimes: at least a minute (clients refresh early), at most 24 days (a timer's range). */
const tokenLifetime = timeout.refine((n) => n >= 60_000, 'must be at least 1m');

const auth = z
  .strictObject({
    htpasswd: z.string().min(1).optional(),
    tokenTtl: tokenLifetime.prefault('1h'),
    refreshTokenTtl: tokenLifetime.prefault('7d'),
    /** The `service` of the token challenge. */
    service: z.string().regex(/^[\w.:-]+$/, 'letters, digits, . _ : - only').prefault('buildcached'),
    /** The token endpoint's public URL, when clients reach the daemon through a proxy; default: <listener>/token. */
    realm: z.url().optional(),
    oidc: z
      .strictObject({
        issuers: z.array(issuer).min(1),
        clockSkew: duration.prefault('60s'),
      })
      .optional(),
    rules: z.array(rule).min(1, 'with auth on, no rule means no access for anyone: add at least one'),
    failedLogins: z
      .strictObject({
        max: z.number().int().min(1).prefault(10),
        window: duration.prefault('1m'),
      })
      .prefault({}),
  })
  .superRefine((a, ctx) => {
    const issuers = new Set((a.oidc?.issuers ?? []).map((i) => i.issuer));
    a.rules.forEach((r, i) => {
      if (r.user !== undefined && !a.htpasswd) ctx.addIssue({ code: 'custom', path: ['rules', i, 'user'], message: 'user rules need auth.htpasswd' });
      if (r.oidc && !issuers.has(r.oidc.issuer)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'oidc', 'issuer'], message: `${r.oidc.issuer} is not one of auth.oidc.issuers` });
      }
    });
  });
/** An S3-compatible bucket below the local disk (see src/tiers). Credentials come from the SDK's default chain, never
 *  from here, so that a config file can be shared without secrets. */
const s3 = z
  .strictObject({
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name (3–63 of a-z, 0-9, ".", "-")'),
    /** Keys go under `<prefix>/`; empty = the bucket's root. */
    prefix: z.string().regex(/^([A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*)?\/?$/, 'must be a key prefix such as "buildcached" or "ci/cache"').default(''),
    region: z.string().min(1).default('us-east-1'),
    /** MinIO, R2, Ceph…: absent means AWS itself. */
    endpoint: z.url().optional(),
    /** Default: on with a custom endpoint (`localhost` would otherwise become `bucket.localhost`). */
    forcePathStyle: flag.optional(),
    /** Default `when_required` with a custom endpoint: flexible checksums send aws-chunked bodies that some stores corrupt or refuse. */
    checksums: z.enum(['when_required', 'when_supported']).optional(),
    uploadConcurrency: z.number().int().min(1).max(256).default(4),
    partSize: bytes.refine((n) => n >= 5 * 1024 * 1024, 'must be at least 5MiB (the S3 minimum part size)').default(16 * 1024 * 1024),
    // Fractions allowed (a short bound for a trial); 0 keeps the bucket's content forever.
    retentionDays: z.number().min(0).default(30),
    touchInterval: duration.refine((ms) => ms >= 1000, 'must be at least 1s').default(3_600_000),
    tagStaleness: duration.default(5_000),
  })
  .transform((t) => ({
    ...t,
    prefix: t.prefix.replace(/\/+$/, ''),
    forcePathStyle: t.forcePathStyle ?? t.endpoint !== undefined,
    checksums: t.checksums ?? (t.endpoint !== undefined ? 'when_required' : 'when_supported'),
  }));

export type S3Config = z.output<typeof s3>;

/** The whole configuration. Unknown keys are errors, so a typo never silently falls back to a default. */
export const configSchema = z.strictObject({
  listen,
  workers,
  /** Absent: plain HTTP. */
  tls: tls.optional(),
  /** Absent: no authentication (every caller may do everything). */
  auth: auth.optional(),
  /** Lets the daemon listen beyond loopback with neither TLS nor auth (see src/config/exposure.ts). */
  allowInsecure: flag,
  storage: z
    .strictObject({
      dir: z.string().min(1),
      maxBytes: budget,
      highWatermark: fraction,
      lowWatermark: fraction,
      pushGraceSeconds: z.number().int().min(0),
      uploadTtl: duration,
      uploadIdleTimeout: duration,
      maxUploadBytes: bytes,
      uploadShare: z.number().gt(0).max(1),
      maxUploadSessions: z.number().int().min(1),
      maxUploadSessionsPerClient: z.number().int().min(0),
      deleteEnabled: z.boolean(),
    })
    .refine((s) => s.lowWatermark < s.highWatermark, {
      message: 'lowWatermark must be below highWatermark',
      path: ['lowWatermark'],
    }),
  registry: z.strictObject({
    maxManifestBytes: bytes,
    automaticCrossMount: z.boolean(),
    /** How long a HEAD waits for another caller's upload of that blob (push-claims.ts); 0: never. */
    concurrentPushWait: timeout,
    tenantIsolation: z.enum(['auto', 'on', 'off']),
    /** A manifest asked for by a tag that does not exist is answered with another tag's (see fallback.ts). */
    fallback: z.array(fallbackRule),
  }),
  http: z.strictObject({
    headersTimeout: timeout,
    idleTimeout: timeout,
    keepAliveTimeout: timeout,
    maxConnections: z.number().int().min(1),
    maxBufferedManifestBytes: bytes,
  }),
  admin: z.strictObject({
    listen: adminListen,
    token: z.string().refine((t) => t === '' || (t.length >= 16 && !/\s/.test(t)), 'must be empty or 16 or more characters without spaces'),
  }),
  analytics: z.strictObject({
    /** false: no per-reference analytics and no hit rate over time are counted. */
    enabled: flag,
    maxReferences: z.number().int().min(1),
  }),
  metrics: z.strictObject({
    topReferences: z.number().int().min(0),
    enabled: flag,
    /** "" (only GET /metrics on `listen`), or HOST:PORT of a listener of its own as well. */
    listen: z.string().refine((v) => v === '' || (HOST_PORT.test(v) && portInRange(v)), 'must be empty or HOST:PORT'),
  }),
  /** Tiers below the local disk; absent: local disk only. */
  tier: z.strictObject({ s3: s3.optional() }).optional(),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    format: z.enum(['json', 'pretty']),
  }),
  shutdownTimeout: duration,
}).refine((c) => c.http.maxBufferedManifestBytes >= c.registry.maxManifestBytes, {
  message: 'must be at least registry.maxManifestBytes, or a manifest of the largest size could never be accepted',
  path: ['http', 'maxBufferedManifestBytes'],
});

export type Config = z.output<typeof configSchema>;
