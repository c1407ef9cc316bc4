/**
 * Authentication against the real daemon with `--workers 2`: skopeo through the Docker token flow with --creds,
 * with a docker config.json (auths.<host>.auth), and with a CI OIDC JWT as the password; refusals as skopeo shows
 * them; failed-login limits that hold across workers; the admin API through the registry port for an admin rule
 * only; credentials never in the logs; and start-up refusing a missing htpasswd file.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authFixture, basic, PASSWORDS, type AuthFixture } from '../helpers/auth-fixture.js';
import { cleanup, makeTempDir, requireTools, runDaemonExpectingFailure, servingPids, skipWithoutTools, startDaemon, type Daemon } from '../helpers/daemon.js';
import { writeOciLayout, type GeneratedImage } from '../helpers/oci-image.js';
import { containersEnv, run, runOk, type ContainersEnv } from '../helpers/tools.js';

const TOOLS = { skopeo: 'skopeo' };
const skip = skipWithoutTools('auth e2e tests', TOOLS);

/** One request on its own connection (agent-less), so that requests spread over the workers. */
async function get(url: string, auth?: string): Promise<{ status: number; headers: Headers; body: string }> {
  const res = await fetch(url, { headers: { ...(auth ? { Authorization: auth } : {}), Connection: 'close' } });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

describe.skipIf(skip)('auth with --workers 2', () => {
  let fx: AuthFixture;
  let daemon: Daemon;
  let ce: ContainersEnv;
  let image: GeneratedImage;
  let work: string;
  let jwt: string;
  const skopeo = (args: string[], ok = true) =>
    (ok ? runOk : run)('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, ...args], { env: ce.env, timeoutMs: 150_000 });

  beforeAll(async () => {
    requireTools(TOOLS);
    fx = await authFixture();
    work = await makeTempDir('buildcached-auth-e2e-');
    ce = await containersEnv();
    image = await writeOciLayout(join(work, 'image'), { layerSizes: [3 * 1024 * 1024 + 11, 20_000], tag: 'v1', label: 'auth' });
    const config = join(fx.dir, 'auth.yaml');
    await writeFile(config, JSON.stringify({ auth: { ...fx.auth, htpasswd: 'htpasswd', failedLogins: { max: 6, window: '1m' } } }));
    daemon = await startDaemon({ args: ['--config', config, '--workers', '2'] });
    jwt = await fx.jwt();
  }, 120_000);

  afterAll(async () => {
    await cleanup();
    await fx?.close();
  });

  it('skopeo --dest-creds pushes through the token flow; anonymous pull of a private repository is refused', async () => {
    const ref = `docker://${daemon.hostPort}/team/app:v1`;
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', `ci:${PASSWORDS.ci}`, `oci:${image.dir}:v1`, ref]);
    const lines = daemon.logLines();
    // The token endpoint was used, and the pushes carried its token (the log names the user on both).
    expect(lines.some((l) => l.route === '/token' && l.status === 200 && l.user === 'ci')).toBe(true);
    expect(lines.some((l) => l.method === 'PUT' && l.repo === 'team/app' && l.status === 201 && l.user === 'ci')).toBe(true);
    const anonymous = await skopeo(['inspect', '--raw', '--tls-verify=false', ref], false);
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toMatch(/unauthorized|authentication required/i);
    // The reader may pull team/**, with credentials from a docker config.json.
    const authfile = join(work, 'config.json');
    await writeFile(authfile, JSON.stringify({ auths: { [daemon.hostPort]: { auth: Buffer.from(`reader:${PASSWORDS.reader}`).toString('base64') } } }));
    const out = join(work, 'pulled');
    await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', '--authfile', authfile, ref, `oci:${out}:v1`]);
    const inspected = await skopeo(['inspect', '--raw', '--tls-verify=false', '--authfile', authfile, ref]);
    expect(JSON.parse(inspected.stdout).layers).toHaveLength(2);
    // ... but not push there: skopeo reports the refusal.
    const push = await skopeo(['copy', '--dest-tls-verify=false', '--authfile', authfile, `oci:${image.dir}:v1`, `docker://${daemon.hostPort}/team/other:v1`], false);
    expect(push.code).not.toBe(0);
    expect(push.stderr).toMatch(/denied|unauthorized|not allowed/i);
  }, 180_000);

  it('a CI job pushes to its own repository with its OIDC JWT as the password, and not to another', async () => {
    await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', `oidc:${jwt}`, `oci:${image.dir}:v1`, `docker://${daemon.hostPort}/acme/web/cache:main`]);
    const other = await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', `oidc:${jwt}`, `oci:${image.dir}:v1`, `docker://${daemon.hostPort}/acme/api/cache:main`], false);
    expect(other.code).not.toBe(0);
    const lines = daemon.logLines();
    expect(lines.some((l) => l.repo === 'acme/web/cache' && l.method === 'PUT' && l.status === 201 && typeof l.user === 'string' && String(l.user).startsWith('oidc:'))).toBe(true);
  }, 180_000);

  it('failed logins are counted for the whole daemon: the limit holds whichever worker answers', async () => {
    const base = `${daemon.url}/v2/`;
    const before = daemon.logLines().length;
    let blockedAt = -1;
    for (let i = 0; i < 20 && blockedAt < 0; i++) {
      const res = await get(base, basic('ci', `guess-${i}`));
      if (res.status === 429) blockedAt = i;
      else expect(res.status).toBe(401);
    }
    // Six failures allowed in the window for the daemon, each worker taking its share (three) on its own.
    expect(blockedAt).toBeGreaterThanOrEqual(3);
    expect(blockedAt).toBeLessThanOrEqual(6);
    const failures = daemon.logLines().slice(before).filter((l) => l.route === '/v2/' || l.status === 401);
    expect(new Set(failures.map((l) => l.pid)).size).toBe(2);
    // Blocked on every worker, the right password included, with a Retry-After.
    for (let i = 0; i < 6; i++) {
      const res = await get(base, basic('ci', PASSWORDS.ci));
      expect(res.status).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    expect(servingPids(daemon).size).toBe(2);
  });

  it('passwords, JWTs and tokens never appear in the logs', async () => {
    const logs = daemon.logs() + daemon.stderr();
    for (const secret of [...Object.values(PASSWORDS), jwt, jwt.split('.')[2]!]) expect(logs).not.toContain(secret);
    expect(logs).not.toMatch(/eyJ[\w-]{20,}\.[\w-]{20,}/); // no JWT of any kind, ours included
  });
});

describe.skipIf(skip)('admin through the registry port', () => {
  let fx: AuthFixture;
  let daemon: Daemon;

  beforeAll(async () => {
    fx = await authFixture();
    const config = join(fx.dir, 'auth.yaml');
    await writeFile(config, JSON.stringify({ auth: fx.auth }));
    daemon = await startDaemon({ args: ['--config', config, '--workers', '2'] });
  }, 60_000);

  afterAll(async () => {
    await cleanup();
    await fx?.close();
  });

  it('needs an admin: true rule: ops gets the status, ci is refused (403), anonymous is asked to sign in (401)', async () => {
    const ops = await get(`${daemon.url}/admin/v1/status`, basic('ops', PASSWORDS.ops));
    expect(ops.status, ops.body).toBe(200);
    expect(JSON.parse(ops.body)).toHaveProperty('bytesUsed');
    expect((await get(`${daemon.url}/admin/v1/status`, basic('ci', PASSWORDS.ci))).status).toBe(403);
    expect((await get(`${daemon.url}/admin/v1/status`)).status).toBe(401);
    // A token opens it only when issued for the admin scope: an admin's pull token handed to a build does not.
    const tokenFor = async (scope: string) =>
      (JSON.parse((await get(`${daemon.url}/token?scope=${encodeURIComponent(scope)}`, basic('ops', PASSWORDS.ops))).body) as { token: string }).token;
    const pullToken = await tokenFor('repository:team/app:pull');
    const refused = await get(`${daemon.url}/admin/v1/status`, `Bearer ${pullToken}`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toContain('scope="registry:admin:*"');
    expect((await get(`${daemon.url}/admin/v1/status`, `Bearer ${await tokenFor('registry:admin:*')}`)).status).toBe(200);
    // ci asking for the admin scope gets a token without it.
    const ciToken = (JSON.parse((await get(`${daemon.url}/token?scope=registry:admin:*`, basic('ci', PASSWORDS.ci))).body) as { token: string }).token;
    expect((await get(`${daemon.url}/admin/v1/status`, `Bearer ${ciToken}`)).status).toBe(403);
    // /metrics on the registry port is an admin's too with auth on (metrics.listen serves scrapers without it).
    expect((await get(`${daemon.url}/metrics`)).status).toBe(401);
    expect((await get(`${daemon.url}/metrics`, basic('ci', PASSWORDS.ci))).status).toBe(403);
    const scraped = await get(`${daemon.url}/metrics`, basic('ops', PASSWORDS.ops));
    expect(scraped.status).toBe(200);
    expect(scraped.body).toContain('buildcached_http_requests_total');
    // The local channel the CLI uses needs no rule.
    const cli = await run(process.execPath, [join(process.cwd(), 'dist', 'main.js'), 'status', '--json', '--data', daemon.dataDir]);
    expect(cli.code, cli.stderr).toBe(0);
  });

  it('without an auth section the registry port serves no admin API at all', async () => {
    const open = await startDaemon();
    expect((await get(`${open.url}/admin/v1/status`)).status).toBe(404);
  });
});

describe.skipIf(skip)('start-up', () => {
  it('refuses a missing htpasswd file, naming it', async () => {
    const fx = await authFixture();
    try {
      const config = join(fx.dir, 'broken.yaml');
      await writeFile(config, JSON.stringify({ auth: { ...fx.auth, htpasswd: 'no-such-htpasswd' } }));
      for (const workers of ['1', '2']) {
        const r = await runDaemonExpectingFailure({ args: ['--config', config, '--workers', workers] });
        expect(r.code).not.toBe(0);
        expect(r.stderr + r.stdout).toContain('no-such-htpasswd');
      }
    } finally {
      await fx.close();
    }
  });
});
