/**
 * Runs the Debian container tools (skopeo, buildah) against the test daemon with a configuration of their own in a
 * temp dir, so nothing on this machine (registries.conf, auth files, policies) changes what they do and nothing
 * contacts any registry but the loopback one.
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, track } from './daemon.js';

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ContainersEnv {
  dir: string;
  env: Record<string, string>;
  policy: string;
  registriesConf: string;
  registriesD: string;
}

/** A private containers config: no search registries, accept-anything policy, empty auth, own tmp. */
export async function containersEnv(): Promise<ContainersEnv> {
  const dir = await makeTempDir('buildcached-tools-');
  const registriesConf = join(dir, 'registries.conf');
  const policy = join(dir, 'policy.json');
  const auth = join(dir, 'auth.json');
  const registriesD = join(dir, 'registries.d');
  const tmp = join(dir, 'tmp');
  await mkdir(registriesD);
  await mkdir(tmp);
  await mkdir(join(dir, 'run'), { mode: 0o700 });
  await writeFile(registriesConf, 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  // containers/image also looks for $HOME/.config/containers/policy.json before /etc/containers/policy.json.
  await mkdir(join(dir, '.config', 'containers'), { recursive: true });
  await writeFile(join(dir, '.config', 'containers', 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(auth, JSON.stringify({ auths: {} }));
  return {
    dir,
    policy,
    registriesConf,
    registriesD,
    env: {
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      REGISTRY_AUTH_FILE: auth,
      TMPDIR: tmp,
      HOME: dir,
      XDG_RUNTIME_DIR: join(dir, 'run'),
      XDG_CONFIG_HOME: join(dir, '.config'),
      // Belt and braces: if anything tried a proxy, it would not leave the machine either.
      NO_PROXY: '*',
      no_proxy: '*',
    },
  };
}

/** Runs a command to completion, capturing output. Killed (by pid) after `timeoutMs` or by cleanup(). */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...(opts.env ?? {}) };
    delete env.HTTP_PROXY;
    delete env.HTTPS_PROXY;
    delete env.http_proxy;
    delete env.https_proxy;
    const p = track(spawn(cmd, args, { env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    p.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a command and throws (with its output) unless it exits 0. */
export async function runOk(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<ToolResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  return r;
}
