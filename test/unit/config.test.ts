import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ConfigError, defaultLayer, loadConfig, mergeLayers, validateConfig } from '../../src/config/load.js';
import { DEFAULT_CONFIG_YAML } from '../../src/config/default-config.js';
import { parseBytes, parseDuration } from '../../src/config/units.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'buildcached-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function yamlFile(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

async function configError(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('loads the embedded defaults: loopback, ./data, 4 MiB manifests', async () => {
    const c = await loadConfig({ env: {} });
    expect(c.listen).toBe('127.0.0.1:5000');
    expect(c.storage.dir).toBe('./data');
    expect(c.storage.uploadTtl).toBe(24 * 3600_000);
    expect(c.storage.deleteEnabled).toBe(true);
    expect(c.registry.maxManifestBytes).toBe(4 * 1024 * 1024);
    expect(c.registry.automaticCrossMount).toBe(true);
    expect(c.registry.concurrentPushWait).toBe(60_000);
    expect(c.log.level).toBe('info');
    expect(c.shutdownTimeout).toBe(60_000);
  });

  it('applies defaults < file < env < overrides, key by key', async () => {
    const file = await yamlFile(
      'layers.yaml',
      ['listen: 127.0.0.1:6000', 'storage:', '  dir: /from/file', '  uploadTtl: 2h', 'log:', '  level: warn', ''].join('\n'),
    );
    const fileOnly = await loadConfig({ file, env: {} });
    expect(fileOnly.listen).toBe('127.0.0.1:6000');
    expect(fileOnly.storage.dir).toBe('/from/file');
    expect(fileOnly.storage.uploadTtl).toBe(2 * 3600_000);
    // A section given in the file merges with the defaults instead of replacing them.
    expect(fileOnly.storage.deleteEnabled).toBe(true);
    expect(fileOnly.log.level).toBe('warn');

    const env = { BUILDCACHED_LISTEN: '127.0.0.1:7000', BUILDCACHED_DATA: '/from/env', BUILDCACHED_LOG_LEVEL: 'error' };
    const withEnv = await loadConfig({ file, env });
    expect(withEnv.listen).toBe('127.0.0.1:7000');
    expect(withEnv.storage.dir).toBe('/from/env');
    expect(withEnv.storage.uploadTtl).toBe(2 * 3600_000);
    expect(withEnv.log.level).toBe('error');

    const withFlags = await loadConfig({ file, env, overrides: { storage: { dir: '/from/flag', uploadTtl: undefined } } });
    expect(withFlags.storage.dir).toBe('/from/flag');
    expect(withFlags.storage.uploadTtl).toBe(2 * 3600_000);
    expect(withFlags.listen).toBe('127.0.0.1:7000');
  });

  it('reads the file named by BUILDCACHED_CONFIG when no file is given', async () => {
    const file = await yamlFile('env-named.yaml', 'registry:\n  maxManifestBytes: 1MiB\n');
    const c = await loadConfig({ env: { BUILDCACHED_CONFIG: file } });
    expect(c.registry.maxManifestBytes).toBe(1024 * 1024);
  });

  it('accepts an empty file', async () => {
    const file = await yamlFile('empty.yaml', '# nothing\n');
    expect((await loadConfig({ file, env: {} })).listen).toBe('127.0.0.1:5000');
  });

  it('names a missing file', async () => {
    const e = await configError(loadConfig({ file: join(dir, 'missing.yaml'), env: {} }));
    expect(e.message).toContain('missing.yaml');
  });

  it('names a file that is not YAML or not a mapping', async () => {
    const bad = await yamlFile('bad.yaml', 'storage: [unclosed\n');
    expect((await configError(loadConfig({ file: bad, env: {} }))).message).toMatch(/bad\.yaml.*not valid YAML/);
    const list = await yamlFile('list.yaml', '- a\n- b\n');
    expect((await configError(loadConfig({ file: list, env: {} }))).message).toMatch(/list\.yaml.*mapping/);
  });

  it('names the key of an invalid environment value', async () => {
    const e = await configError(loadConfig({ env: { BUILDCACHED_LOG_LEVEL: 'loud' } }));
    expect(e.message).toContain('log.level');
    const l = await configError(loadConfig({ env: { BUILDCACHED_LISTEN: 'nowhere' } }));
    expect(l.message).toContain('listen');
  });

  it('names the key of an invalid file value', async () => {
    const file = await yamlFile('badvalue.yaml', 'registry:\n  maxManifestBytes: lots\n');
    const e = await configError(loadConfig({ file, env: {} }));
    expect(e.message).toContain('registry.maxManifestBytes');
    expect(e.message).toContain('lots');
  });

  it('refuses a duration without a unit, naming the key: 60 could be seconds or milliseconds', async () => {
    for (const yaml of ['shutdownTimeout: 60\n', 'shutdownTimeout: "60"\n', 'storage:\n  uploadTtl: 86400\n']) {
      const file = await yamlFile('bare.yaml', yaml);
      const e = await configError(loadConfig({ file, env: {} }));
      expect(e.message).toMatch(/(shutdownTimeout|storage\.uploadTtl): .*no unit/);
    }
  });

  it('reads the admin listener and token from the environment', async () => {
    const c = await loadConfig({ env: { BUILDCACHED_ADMIN_LISTEN: '127.0.0.1:0', BUILDCACHED_ADMIN_TOKEN: 'x'.repeat(32) } });
    expect(c.admin).toEqual({ listen: '127.0.0.1:0', token: 'x'.repeat(32) });
    expect((await loadConfig({ env: {} })).admin).toEqual({ listen: '', token: '' });
  });

  it('resolves tls paths against the config file, leaves absolute ones, and has no tls by default', async () => {
    expect((await loadConfig({ env: {} })).tls).toBeUndefined();
    const file = await yamlFile('tls.yaml', 'tls:\n  cert: certs/server.crt\n  key: /etc/keys/server.key\n  clientCa: ../ca.crt\n');
    expect((await loadConfig({ file, env: {} })).tls).toEqual({
      cert: join(dir, 'certs', 'server.crt'),
      key: '/etc/keys/server.key',
      clientCa: join(dir, '..', 'ca.crt'),
    });
    const e = await configError(loadConfig({ file: await yamlFile('tls-half.yaml', 'tls:\n  cert: server.crt\n'), env: {} }));
    expect(e.message).toContain('tls.key');
  });

  it('reads allowInsecure from the file or BUILDCACHED_ALLOW_INSECURE; off by default', async () => {
    expect((await loadConfig({ env: {} })).allowInsecure).toBe(false);
    expect((await loadConfig({ file: await yamlFile('insecure.yaml', 'allowInsecure: true\n'), env: {} })).allowInsecure).toBe(true);
    expect((await loadConfig({ env: { BUILDCACHED_ALLOW_INSECURE: 'true' } })).allowInsecure).toBe(true);
    expect((await loadConfig({ env: { BUILDCACHED_ALLOW_INSECURE: '0' } })).allowInsecure).toBe(false);
    expect((await configError(loadConfig({ env: { BUILDCACHED_ALLOW_INSECURE: 'yes please' } }))).message).toContain('allowInsecure');
  });

  it('names an unknown (typo) key instead of ignoring it', async () => {
    const file = await yamlFile('typo.yaml', 'storage:\n  deleteEnabeld: false\n');
    const e = await configError(loadConfig({ file, env: {} }));
    expect(e.message).toContain('storage');
    expect(e.message).toContain('deleteEnabeld');
  });
});

describe('validateConfig', () => {
  // The embedded defaults as raw YAML values: every required key, whatever keys the schema grows.
  const base = defaultLayer();
  const withLayer = (layer: Record<string, unknown>) => mergeLayers(base, layer);

  it('converts units', () => {
    const c = validateConfig(
      withLayer({ registry: { maxManifestBytes: 1000 }, shutdownTimeout: '1500ms', storage: { uploadTtl: '1h' } }),
    );
    expect(c.registry.maxManifestBytes).toBe(1000);
    expect(c.shutdownTimeout).toBe(1500);
    expect(c.storage.uploadTtl).toBe(3600_000);
  });

  it.each([
    ['listen', { listen: '127.0.0.1' }],
    ['listen', { listen: '127.0.0.1:70000' }],
    ['listen', { listen: 5000 }],
    ['storage.dir', { storage: { dir: '' } }],
    ['storage.uploadTtl', { storage: { uploadTtl: 'soon' } }],
    ['storage.uploadTtl', { storage: { uploadTtl: -5 } }],
    ['storage.uploadTtl', { storage: { uploadTtl: '' } }],
    ['storage.deleteEnabled', { storage: { deleteEnabled: 'yes' } }],
    ['registry.maxManifestBytes', { registry: { maxManifestBytes: '4 parsecs' } }],
    ['registry.maxManifestBytes', { registry: { maxManifestBytes: -1 } }],
    ['registry.maxManifestBytes', { registry: { maxManifestBytes: 1.5 } }],
    ['registry.automaticCrossMount', { registry: { automaticCrossMount: 1 } }],
    ['registry.concurrentPushWait', { registry: { concurrentPushWait: 60 } }],
    ['log.level', { log: { level: 'verbose' } }],
    ['shutdownTimeout', { shutdownTimeout: 'forever' }],
    ['shutdownTimeout', { shutdownTimeout: 60 }],
    ['admin.listen', { admin: { listen: 'unix:relative.sock' } }],
    ['admin.listen', { admin: { listen: 'localhost' } }],
    ['admin.token', { admin: { token: 'short' } }],
    ['http.headersTimeout', { http: { headersTimeout: 'slow' } }],
    ['http.idleTimeout', { http: { idleTimeout: '30d' } }],
    ['http.keepAliveTimeout', { http: { keepAliveTimeout: -1 } }],
    ['http.maxConnections', { http: { maxConnections: 0 } }],
    ['http.maxConnections', { http: { maxConnections: 'many' } }],
    ['http.maxBufferedManifestBytes', { http: { maxBufferedManifestBytes: '1MiB' } }],
    ['http.maxBufferedManifestBytes', { http: { maxBufferedManifestBytes: '1GiB' }, registry: { maxManifestBytes: '2GiB' } }],
  ])('names %s when it is invalid', (key, layer) => {
    try {
      validateConfig(withLayer(layer));
      expect.unreachable('validateConfig should throw');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as Error).message).toContain(`${key}:`);
    }
  });

  it('names a missing section', () => {
    const { registry: _r, ...rest } = base;
    expect(() => validateConfig(rest)).toThrow(/registry/);
  });

  it('accepts the embedded defaults as they are', () => {
    expect(validateConfig(base).listen).toBe('127.0.0.1:5000');
  });

  it('embeds config/default.yaml as it is now (npm run build regenerates the copy)', () => {
    expect(DEFAULT_CONFIG_YAML).toBe(readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8'));
  });

  it('accepts unix-socket and HOST:PORT admin listeners', () => {
    expect(validateConfig(withLayer({ admin: { listen: 'unix:/run/buildcached/admin.sock' } })).admin.listen).toBe('unix:/run/buildcached/admin.sock');
    expect(validateConfig(withLayer({ admin: { listen: '127.0.0.1:5001' } })).admin.listen).toBe('127.0.0.1:5001');
  });

  it('has generous HTTP timeouts and a connection cap by default, and 0 turns a timeout off', () => {
    const { http } = validateConfig(base);
    expect(http).toEqual({ headersTimeout: 30_000, idleTimeout: 120_000, keepAliveTimeout: 5_000, maxConnections: 1000, maxBufferedManifestBytes: 64 * 1024 * 1024 });
    expect(validateConfig(withLayer({ http: { idleTimeout: 0, headersTimeout: '0' } })).http).toMatchObject({ idleTimeout: 0, headersTimeout: 0 });
  });

  it('accepts IPv6 and any-address listen values', () => {
    expect(validateConfig(withLayer({ listen: '[::1]:5000' })).listen).toBe('[::1]:5000');
    expect(validateConfig(withLayer({ listen: '0.0.0.0:0' })).listen).toBe('0.0.0.0:0');
  });
});

describe('mergeLayers', () => {
  it('merges nested sections, later layers win, undefined is no value', () => {
    expect(mergeLayers({ a: { b: 1, c: 2 }, d: 1 }, { a: { c: 3 }, d: undefined }, { e: [1] })).toEqual({
      a: { b: 1, c: 3 },
      d: 1,
      e: [1],
    });
  });
});

describe('units', () => {
  it.each([
    ['0', 0],
    ['1048576', 1048576],
    [4096, 4096],
    ['4MiB', 4 * 1024 ** 2],
    ['4mib', 4 * 1024 ** 2],
    ['4M', 4 * 1024 ** 2],
    ['500GB', 500 * 1000 ** 3],
    ['1.5KiB', 1536],
    ['2 TiB', 2 * 1024 ** 4],
    ['10b', 10],
    ['1kb', 1000],
  ])('parseBytes(%s) = %s', (input, bytes) => {
    expect(parseBytes(input)).toBe(bytes);
  });

  it.each(['', 'MiB', '-1', '1 parsec', '1e3', 'ten', '1..5MiB', '99999999999TiB'])('parseBytes rejects %s', (input) => {
    expect(parseBytes(input)).toBeUndefined();
  });

  it.each([-1, 1.5, Number.NaN, Infinity])('parseBytes rejects the number %s', (n) => {
    expect(parseBytes(n)).toBeUndefined();
  });

  it.each([
    ['30s', 30_000],
    ['15m', 900_000],
    ['24h', 86_400_000],
    ['7d', 604_800_000],
    ['250ms', 250],
  ])('parseDuration(%s) = %s', (input, msValue) => {
    expect(parseDuration(input)).toBe(msValue);
  });

  it.each(['', 'soon', '-5m', 'abc1s', '250', '60 '])('parseDuration rejects %s', (input) => {
    expect(parseDuration(input)).toBeUndefined();
  });
});

describe('auth config', () => {
  const ISSUE_EXAMPLE = `auth:
  htpasswd: htpasswd
  tokenTtl: 1h
  oidc:
    issuers:
      - issuer: https://token.actions.githubusercontent.com
        audience: buildcached
        jwksFile: github-jwks.json
  rules:
    - anonymous: true
      repositories: ["public/**"]
      actions: [pull]
    - user: ci
      repositories: ["**"]
      actions: [pull, push, delete]
    - user: ops
      admin: true
    - oidc: { issuer: https://token.actions.githubusercontent.com, claims: { repository_owner: acme } }
      repositories: ["{repository}/**", "acme/shared/*"]
      actions: [pull, push]
`;

  it('takes the documented example as written, with paths relative to the config file and defaults filled in', async () => {
    const c = await loadConfig({ file: await yamlFile('auth.yaml', ISSUE_EXAMPLE), env: {} });
    expect(c.auth?.htpasswd).toBe(join(dir, 'htpasswd'));
    expect(c.auth?.oidc?.issuers[0]!.jwksFile).toBe(join(dir, 'github-jwks.json'));
    expect(c.auth?.tokenTtl).toBe(3600_000);
    expect(c.auth?.refreshTokenTtl).toBe(7 * 24 * 3600_000);
    expect(c.auth?.service).toBe('buildcached');
    expect(c.auth?.failedLogins).toEqual({ max: 10, window: 60_000 });
    expect(c.auth?.rules).toHaveLength(4);
    expect((await loadConfig({ env: {} })).auth).toBeUndefined();
  });

  it.each([
    ['a rule naming two kinds of caller', '- { user: ci, anonymous: true, repositories: ["**"], actions: [pull] }', 'exactly one of'],
    ['repositories without actions', '- { user: ci, repositories: ["**"] }', 'go together'],
    ['a rule granting nothing', '- { user: ci }', 'grants nothing'],
    ['admin for anonymous callers', '- { anonymous: true, admin: true }', 'cannot be given to anonymous'],
    ['a placeholder outside an oidc rule', '- { user: ci, repositories: ["{repository}/**"], actions: [pull] }', 'oidc rules only'],
    ['a bad pattern', '- { user: ci, repositories: ["Acme//x"], actions: [pull] }', 'invalid segment'],
    ['an unknown action', '- { user: ci, repositories: ["**"], actions: [pul] }', 'auth.rules.0.actions'],
    ['an oidc rule without a claim condition', '- { oidc: { issuer: "https://token.actions.githubusercontent.com" }, repositories: ["**"], actions: [pull] }', 'at least one claim condition'],
    ['an issuer that is not configured', '- { oidc: { issuer: "https://gitlab.com" }, repositories: ["**"], actions: [pull] }', 'not one of auth.oidc.issuers'],
  ])('refuses %s, naming the problem', async (_what, rule, message) => {
    const text = `auth:\n  htpasswd: htpasswd\n  rules:\n    ${rule}\n`;
    const e = await configError(loadConfig({ file: await yamlFile('bad-auth.yaml', text), env: {} }));
    expect(e.message).toContain(message);
  });

  it('refuses user rules without an htpasswd file, and no rules at all', async () => {
    const noFile = await configError(loadConfig({ file: await yamlFile('a1.yaml', 'auth:\n  rules:\n    - { user: ci, admin: true }\n'), env: {} }));
    expect(noFile.message).toContain('need auth.htpasswd');
    const none = await configError(loadConfig({ file: await yamlFile('a2.yaml', 'auth:\n  htpasswd: h\n  rules: []\n'), env: {} }));
    expect(none.message).toContain('no rule means no access');
  });
});

describe('tier.s3', () => {
  it('is off when absent', async () => {
    expect((await loadConfig({ env: {} })).tier).toBeUndefined();
  });

  it('is turned on by BUILDCACHED_S3_BUCKET, with defaults for a custom endpoint', async () => {
    const c = await loadConfig({ env: { BUILDCACHED_S3_BUCKET: 'ci-cache', BUILDCACHED_S3_ENDPOINT: 'http://127.0.0.1:9000', BUILDCACHED_S3_PREFIX: 'bc/', BUILDCACHED_S3_REGION: 'eu-west-1' } });
    expect(c.tier?.s3).toMatchObject({
      bucket: 'ci-cache',
      endpoint: 'http://127.0.0.1:9000',
      prefix: 'bc',
      region: 'eu-west-1',
      forcePathStyle: true,
      checksums: 'when_required',
      uploadConcurrency: 4,
      partSize: 16 * 1024 * 1024,
      touchInterval: 3_600_000,
      tagStaleness: 5_000,
    });
  });

  it('keeps AWS defaults without an endpoint', async () => {
    const c = await loadConfig({ env: { BUILDCACHED_S3_BUCKET: 'ci-cache' } });
    expect(c.tier?.s3).toMatchObject({ forcePathStyle: false, checksums: 'when_supported', region: 'us-east-1', prefix: '' });
  });

  it('names the key of a bad value, and wants a bucket', async () => {
    expect((await configError(loadConfig({ env: { BUILDCACHED_S3_ENDPOINT: 'http://127.0.0.1:9000' } }))).message).toMatch(/tier\.s3\.bucket/);
    const file = await yamlFile('s3-bad.yaml', 'tier:\n  s3:\n    bucket: ok-bucket\n    partSize: 1MiB\n    checksums: always\n');
    const msg = (await configError(loadConfig({ file, env: {} }))).message;
    expect(msg).toMatch(/tier\.s3\.partSize: must be at least 5MiB/);
    expect(msg).toMatch(/tier\.s3\.checksums/);
  });
});
