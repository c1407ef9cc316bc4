import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_CONFIG_YAML } from './default-config.js';
import { configSchema, type Config } from './schema.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Later layers win key by key; nested sections merge instead of replacing each other. */
export function mergeLayers(...layers: Tree[]): Tree {
  const out: Tree = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue;
      out[k] = isTree(v) && isTree(out[k]) ? mergeLayers(out[k] as Tree, v) : v;
    }
  }
  return out;
}

async function readYaml(path: string): Promise<Tree> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  return resolvePaths(parseLayer(text, `config file ${path}`), dirname(resolve(path)));
}

/** A config file names its certificates, htpasswd and JWKS files relative to itself, so that it can move with them. */
function resolvePaths(layer: Tree, base: string): Tree {
  const at = (v: unknown) => (typeof v === 'string' && v !== '' ? resolve(base, v) : v);
  const out: Tree = { ...layer };
  if (isTree(layer.tls)) out.tls = { ...layer.tls, cert: at(layer.tls.cert), key: at(layer.tls.key), clientCa: at(layer.tls.clientCa) };
  if (isTree(layer.auth)) {
    const auth: Tree = { ...layer.auth, htpasswd: at(layer.auth.htpasswd) };
    const oidc = layer.auth.oidc;
    if (isTree(oidc) && Array.isArray(oidc.issuers)) {
      auth.oidc = { ...oidc, issuers: oidc.issuers.map((i: unknown) => (isTree(i) ? { ...i, jwksFile: at(i.jwksFile) } : i)) };
    }
    out.auth = auth;
  }
  return out;
}

function parseLayer(text: string, what: string): Tree {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${what} is not valid YAML: ${(e as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (!isTree(doc)) throw new ConfigError(`${what} must hold a mapping of keys`);
  return doc;
}

/** The embedded defaults (config/default.yaml, compiled in), as a config layer. */
export const defaultLayer = (): Tree => parseLayer(DEFAULT_CONFIG_YAML, 'the embedded config/default.yaml');

/** The environment variables the daemon reads, as a config layer. */
export function envLayer(env: NodeJS.ProcessEnv): Tree {
  return {
    listen: env.BUILDCACHED_LISTEN,
    workers: env.BUILDCACHED_WORKERS,
    allowInsecure: env.BUILDCACHED_ALLOW_INSECURE,
    storage: { dir: env.BUILDCACHED_DATA },
    admin: { listen: env.BUILDCACHED_ADMIN_LISTEN, token: env.BUILDCACHED_ADMIN_TOKEN },
    metrics: { listen: env.BUILDCACHED_METRICS_LISTEN },
    log: { level: env.BUILDCACHED_LOG_LEVEL, format: env.BUILDCACHED_LOG_FORMAT },
    ...s3Env(env),
  };
}

/** The S3 tier from env: the bucket alone turns it on; the others refine a tier the file or the bucket variable set. */
function s3Env(env: NodeJS.ProcessEnv): Tree {
  const s3 = { bucket: env.BUILDCACHED_S3_BUCKET, endpoint: env.BUILDCACHED_S3_ENDPOINT, prefix: env.BUILDCACHED_S3_PREFIX, region: env.BUILDCACHED_S3_REGION };
  return Object.values(s3).some((v) => v !== undefined) ? { tier: { s3 } } : {};
}

export interface LoadOptions {
  /** --config; BUILDCACHED_CONFIG when absent. */
  file?: string;
  /** Values from command-line flags, highest precedence. */
  overrides?: Tree;
  env?: NodeJS.ProcessEnv;
}

/** defaults < config file < environment < flags, validated as a whole; errors name the offending key. */
export async function loadConfig(opts: LoadOptions = {}): Promise<Config> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.BUILDCACHED_CONFIG;
  const layers = [defaultLayer()];
  if (file) layers.push(await readYaml(file));
  layers.push(envLayer(env), opts.overrides ?? {});
  return validateConfig(mergeLayers(...layers));
}

export function validateConfig(raw: unknown): Config {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
  throw new ConfigError(`invalid configuration:\n${problems.join('\n')}`);
}
