/**
 * The README's systemd install, step by step (issue 9): no systemd runs as PID 1 here, so the steps run in a fresh
 * temp directory with every absolute path (/opt, /etc, /usr/local/bin, /var/lib) moved under a temp root, the user
 * comes from `systemd-sysusers --root`, `systemd-analyze verify` checks the unit, and the daemon is started the way
 * systemd would start it: the unit's ExecStart, its Environment= and nothing else, as its user (setpriv), with its
 * StateDirectory= made for that user and its UMask=. It must serve, answer the CLI, and exit 0 on SIGTERM — from an
 * install holding only package.json, dist/ and the production node_modules/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmod, chown, cp, mkdir, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, cleanup, makeTempDir, skipWithoutTools, track } from '../helpers/daemon.js';
import { request } from '../helpers/registry-client.js';

const TOOLS = { npm: 'npm', git: 'git', 'systemd-sysusers': 'systemd', 'systemd-analyze': 'systemd', setpriv: 'util-linux' };
const skip = skipWithoutTools('the install test', TOOLS);
const asRoot = process.getuid?.() === 0;

/** The commands of the README block after the `<!-- install:` marker, comments dropped. */
async function readmeInstallSteps(): Promise<string[]> {
  const readme = await readFile(join(REPO_ROOT, 'README.md'), 'utf8');
  const block = /<!-- install:[^\n]*-->\n```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  if (!block) throw new Error('README.md has no install block after an "<!-- install:" marker');
  return block
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** Moves the system paths a step names under `root`. */
const underRoot = (root: string, s: string) => s.replace(/(^|[\s=])\/(opt|etc|usr\/local\/bin|var\/lib)\//g, `$1${root}/$2/`);

/** A step's environment: nothing of this test run's npm, node_modules/.bin or buildcached settings. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(npm_|BUILDCACHED_|NODE_ENV$|VITEST)/.test(k)) env[k] = v;
  env.PATH = (env.PATH ?? '').split(':').filter((p) => !p.includes('node_modules')).join(':');
  // The packages come from the npm cache when they are there (CI filled it with its own `npm ci`).
  env.npm_config_prefer_offline = 'true';
  env.npm_config_update_notifier = 'false';
  return env;
}

function run(cmd: string, cwd: string): { status: number | null; out: string } {
  const r = spawnSync('bash', ['-c', cmd], { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 180_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Unit {
  user: string;
  execStart: string;
  environment: Record<string, string>;
  stateDirectory: string;
  stateDirectoryMode: number;
  umask: number;
}

function parseUnit(text: string): Unit {
  const values = (key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
  const one = (key: string) => {
    const v = values(key);
    if (v.length !== 1) throw new Error(`the unit has ${v.length} ${key}= lines`);
    return v[0]!;
  };
  const environment: Record<string, string> = {};
  for (const e of values('Environment')) environment[e.slice(0, e.indexOf('='))] = e.slice(e.indexOf('=') + 1);
  return {
    user: one('User'),
    execStart: one('ExecStart'),
    environment,
    stateDirectory: one('StateDirectory'),
    stateDirectoryMode: parseInt(one('StateDirectoryMode'), 8),
    umask: parseInt(one('UMask'), 8),
  };
}

/** uid and gid of `user` in the root's /etc/passwd (made by systemd-sysusers --root). */
async function lookupUser(root: string, user: string): Promise<{ uid: number; gid: number }> {
  const line = (await readFile(join(root, 'etc', 'passwd'), 'utf8')).split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`systemd-sysusers made no user ${user}`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

describe.skipIf(skip)('installing with systemd, as the README says', () => {
  afterAll(cleanup);

  it('the production install serves as the unit runs it, answers the CLI and stops on SIGTERM', async () => {
    const tmp = await makeTempDir('buildcached-install-');
    await chmod(tmp, 0o755); // the service user must reach the install below it
    const release = join(tmp, 'release');
    const root = join(tmp, 'root');
    // A release is the repository's files (as `git archive` of a tag would give), without dist/ or node_modules/.
    const files = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO_ROOT, encoding: 'utf8' }).stdout.split('\0').filter(Boolean);
    for (const f of files) await cp(join(REPO_ROOT, f), join(release, f)).catch(() => undefined);
    // What any system has already.
    for (const d of ['etc/sysusers.d', 'etc/systemd/system', 'usr/local/bin', 'var/lib']) await mkdir(join(root, d), { recursive: true });

    const steps = await readmeInstallSteps();
    expect(steps.at(-1)).toBe('sudo systemctl enable --now buildcached');
    for (const step of steps) {
      let cmd = underRoot(root, step.replace(/^sudo /, ''));
      if (/^systemctl /.test(cmd)) continue; // no systemd here: the start below does what it would
      if (cmd === 'systemd-sysusers') cmd += ` --root=${root}`;
      const r = run(cmd, release);
      expect(r.status, `${step}\n${r.out}`).toBe(0);
    }

    const install = join(root, 'opt', 'buildcached');
    expect((await readdir(install)).sort()).toEqual(['dist', 'node_modules', 'package.json']);
    expect(await readdir(join(install, 'node_modules'))).not.toContain('typescript');
    const unitFile = join(root, 'etc', 'systemd', 'system', 'buildcached.service');
    const verify = spawnSync('systemd-analyze', ['verify', unitFile], { encoding: 'utf8' });
    expect(verify.status, verify.stderr).toBe(0);
    expect(verify.stderr.trim()).toBe('');

    const unit = parseUnit(await readFile(unitFile, 'utf8'));
    const { uid, gid } = asRoot ? await lookupUser(root, unit.user) : { uid: process.getuid!(), gid: process.getgid!() };
    const dataDir = join(root, 'var', 'lib', unit.stateDirectory);
    expect(underRoot(root, unit.environment.BUILDCACHED_DATA ?? '')).toBe(dataDir);
    await mkdir(dataDir, { recursive: true });
    await chmod(dataDir, unit.stateDirectoryMode);
    if (asRoot) await chown(dataDir, uid, gid);
    const env: NodeJS.ProcessEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin' };
    for (const [k, v] of Object.entries(unit.environment)) env[k] = underRoot(root, v);
    // The one change: the sample config listens on 0.0.0.0:5000; tests use loopback ephemeral ports (env beats file).
    env.BUILDCACHED_LISTEN = '127.0.0.1:0';
    const asUser = (argv: string[]) => (asRoot ? ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', ...argv] : argv);
    const umasked = (argv: string[]) => ['sh', '-c', `umask ${unit.umask.toString(8)} && exec "$@"`, 'sh', ...argv];
    const [cmd, ...args] = umasked(asUser(underRoot(root, unit.execStart).split(/\s+/)));
    const daemon = track(spawn(cmd!, args, { cwd: '/', env, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    daemon.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    daemon.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const exited = new Promise<{ code: number | null; signal: string | null }>((done) => daemon.once('exit', (code, signal) => done({ code, signal })));
    let url: string | undefined;
    for (let i = 0; i < 300 && !url && daemon.exitCode === null; i++) {
      url = /"msg":"listening on (http:\/\/[^"]+)"/.exec(out)?.[1];
      if (!url) await new Promise((r) => setTimeout(r, 50));
    }
    expect(url, `no "listening on" line\nstdout:\n${out}\nstderr:\n${err}`).toBeDefined();

    expect((await request('GET', `${url}/v2/`)).status).toBe(200);
    expect((await request('GET', `${url}/healthz`)).status).toBe(200);
    const socket = await stat(join(dataDir, 'admin.sock'));
    expect([socket.uid, socket.mode & 0o777]).toEqual([uid, 0o600]);
    // The CLI, through the /usr/local/bin link, as the service user.
    const [cliCmd, ...cliArgs] = asUser([join(root, 'usr', 'local', 'bin', 'buildcached'), 'status', '--json', '--data', dataDir]);
    const cli = spawnSync(cliCmd!, cliArgs, { env, encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    expect((JSON.parse(cli.stdout) as { blobCount: number }).blobCount).toBe(0);

    daemon.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(err).toBe('');

    // The other documented way: dist/ built elsewhere, production dependencies installed beside it.
    const prodOnly = run('npm ci --omit=dev --no-audit --no-fund', release);
    expect(prodOnly.status, prodOnly.out).toBe(0);
    expect(prodOnly.out).toContain('keeping the dist/');
  }, 300_000);
});
