/**
 * TLS against the real daemon, with a CA, server and client certificates the test makes with openssl: skopeo and
 * curl over HTTPS with `--workers 2`, mTLS, a SIGHUP certificate swap under a streaming pull, a failed reload, a bad
 * certificate at start-up, and the refusal to listen beyond loopback in the clear.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, DAEMON_MAIN, makeTempDir, requireTools, runDaemonExpectingFailure, skipWithoutTools, sleep, startDaemon, type Daemon } from '../helpers/daemon.js';
import { writeOciLayout, type GeneratedImage } from '../helpers/oci-image.js';
import { containersEnv, run, runOk, type ContainersEnv } from '../helpers/tools.js';

const TOOLS = { skopeo: 'skopeo', curl: 'curl', openssl: 'openssl' };
const skip = skipWithoutTools('TLS e2e tests', TOOLS);
const MiB = 1024 * 1024;

/** CA, two server certificates for 127.0.0.1/localhost (for the swap) and a client certificate, in `dir`. */
async function makeCertificates(dir: string): Promise<void> {
  const ossl = (args: string[]) => runOk('openssl', args, { cwd: dir });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ossl(['req', '-x509', ...newKey, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=buildcached test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = async (name: string, cn: string, ext: string) => {
    await writeFile(join(dir, `${name}.ext`), ext);
    await ossl(['req', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
    await ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
      '-out', `${name}.crt`, '-extfile', `${name}.ext`]);
  };
  const server = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n';
  await issue('server1', 'localhost', server);
  await issue('server2', 'localhost', server);
  await issue('client', 'ci-runner', 'extendedKeyUsage=clientAuth\n');
}

/** The certificate a new connection to the daemon is served. */
function servedCertificate(port: number, ca: Buffer): Promise<PeerCertificate> {
  return new Promise((ok, fail) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const cert = s.getPeerCertificate();
      s.end();
      ok(cert);
    });
    s.on('error', fail);
  });
}

describe.skipIf(skip)('TLS', () => {
  let dir: string;
  let ce: ContainersEnv;
  let image: GeneratedImage;
  let ca: Buffer;
  const serial = async (name: string) => (await runOk('openssl', ['x509', '-in', join(dir, `${name}.crt`), '-noout', '-serial'])).stdout.trim().split('=')[1];

  /** A config file beside the certificates, naming them relative to itself. */
  const configFile = async (name: string, text: string) => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  beforeAll(async () => {
    requireTools(TOOLS);
    dir = await makeTempDir('buildcached-tls-');
    ce = await containersEnv();
    [, image] = await Promise.all([
      makeCertificates(dir),
      writeOciLayout(join(dir, 'image'), { layerSizes: [32 * MiB + 777, 100_000], tag: 'v1', label: 'tls' }),
    ]);
    ca = await readFile(join(dir, 'ca.crt'));
    // What skopeo's --cert-dir wants: the CA as ca.crt (a client pair would be client.cert + client.key).
    await mkdir(join(dir, 'trust'));
    await copyFile(join(dir, 'ca.crt'), join(dir, 'trust', 'ca.crt'));
  }, 120_000);

  afterAll(cleanup);

  describe('with --workers 2', () => {
    let daemon: Daemon;

    beforeAll(async () => {
      // The served files are copies, so that the swap below can replace them in place.
      await copyFile(join(dir, 'server1.crt'), join(dir, 'served.crt'));
      await copyFile(join(dir, 'server1.key'), join(dir, 'served.key'));
      const config = await configFile('https.yaml', 'tls:\n  cert: served.crt\n  key: served.key\n');
      daemon = await startDaemon({ args: ['--config', config, '--workers', '2'] });
    }, 60_000);

    it('says https:// where it listens and in daemon.json', async () => {
      expect(daemon.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(daemon.workerCount).toBe(2);
      const owner = JSON.parse(await readFile(join(daemon.dataDir, 'daemon.json'), 'utf8')) as { url: string };
      expect(owner.url).toBe(daemon.url);
      // The CLI's `health` (the Docker HEALTHCHECK) finds that URL there and asks it over TLS.
      const health = await run(process.execPath, [DAEMON_MAIN, 'health', '--data', daemon.dataDir]);
      expect(health.code, health.stderr).toBe(0);
      expect(health.stdout).toBe('ok\n');
    });

    it('curl --cacert talks to it; without the CA the certificate is refused; plain HTTP gets nowhere', async () => {
      const ok = await run('curl', ['-sS', '--cacert', join(dir, 'ca.crt'), '-o', '/dev/null', '-w', '%{http_code}', `${daemon.url}/v2/`]);
      expect(ok.stdout, ok.stderr).toBe('200');
      // The system's trust store does not know the test's CA.
      const untrusted = await run('curl', ['-sS', '-o', '/dev/null', `${daemon.url}/v2/`]);
      expect(untrusted.code).not.toBe(0);
      const plain = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://${daemon.hostPort}/v2/`]);
      expect(plain.stdout).not.toBe('200');
    });

    it('chooses AES-128-GCM when the client offers it (OpenSSL clients ask for AES-256-GCM first); a client without it still connects', async () => {
      const { port } = new URL(daemon.url);
      const cipherOf = (ciphers?: string) =>
        new Promise<string>((resolve, reject) => {
          const s = connect({ host: '127.0.0.1', port: Number(port), ca, servername: 'localhost', ...(ciphers ? { ciphers } : {}) }, () => {
            resolve(s.getCipher().standardName);
            s.end();
          });
          s.on('error', reject);
        });
      expect(await cipherOf()).toBe('TLS_AES_128_GCM_SHA256');
      expect(await cipherOf('TLS_CHACHA20_POLY1305_SHA256')).toBe('TLS_CHACHA20_POLY1305_SHA256');
    });

    it('skopeo pushes and pulls an image over TLS with --dest-cert-dir / --src-cert-dir', async () => {
      const skopeo = (args: string[]) =>
        runOk('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, ...args], { env: ce.env, timeoutMs: 150_000 });
      const ref = `docker://${daemon.hostPort}/e2e/tls:v1`;
      await skopeo(['copy', '--preserve-digests', '--dest-cert-dir', join(dir, 'trust'), `oci:${image.dir}:v1`, ref]);
      const out = join(dir, 'pulled');
      await skopeo(['copy', '--preserve-digests', '--src-cert-dir', join(dir, 'trust'), ref, `oci:${out}:v1`]);
      const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
      expect(index.manifests[0]!.digest).toBe(image.manifestDigest);
      // Without the CA, containers/image refuses the certificate.
      const refused = await run('skopeo', ['--insecure-policy', '--registries.d', ce.registriesD, 'inspect', '--raw', ref], { env: ce.env });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/certificate/);
    }, 180_000);

    it('SIGHUP swaps the certificate without cutting a pull in flight; a failed reload keeps the one in use', async () => {
      const [before, old, fresh] = await Promise.all([servedCertificate(daemon.port, ca), serial('server1'), serial('server2')]);
      expect(before.serialNumber).toBe(old);
      const layer = image.layers[0]!;
      let pulledCert: PeerCertificate | undefined;
      let streamed: (() => void) | undefined;
      const pull = new Promise<{ status: number; length: number; digest: string }>((ok, fail) => {
        const req = https.get(`${daemon.url}/v2/e2e/tls/blobs/${layer.digest}`, { ca, agent: false }, (res) => {
          pulledCert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
          const hash = createHash('sha256');
          let length = 0;
          // Hold the download after its first bytes until the certificate has been swapped.
          res.once('data', () => {
            res.pause();
            streamed = () => res.resume();
          });
          res.on('data', (c: Buffer) => {
            hash.update(c);
            length += c.length;
          });
          res.on('end', () => ok({ status: res.statusCode ?? 0, length, digest: `sha256:${hash.digest('hex')}` }));
          res.on('error', fail);
        });
        req.on('error', fail);
      });
      while (!streamed) await sleep(10);

      const reloads = () => daemon.logLines().filter((l) => l.msg === 'TLS certificate reloaded').length;
      await copyFile(join(dir, 'server2.crt'), join(dir, 'served.crt'));
      await copyFile(join(dir, 'server2.key'), join(dir, 'served.key'));
      process.kill(daemon.pid, 'SIGHUP');
      // Each worker holds a listener of its own, and each says when it reloaded.
      for (let i = 0; i < 500 && reloads() < 2; i++) await sleep(20);
      expect(reloads()).toBe(2);
      // New connections, whichever worker takes them, get the new certificate.
      for (let i = 0; i < 6; i++) expect((await servedCertificate(daemon.port, ca)).serialNumber).toBe(fresh);

      streamed();
      const got = await pull;
      expect(got).toEqual({ status: 200, length: layer.size, digest: layer.digest });
      expect(pulledCert?.serialNumber).toBe(old);
      expect(daemon.proc.exitCode).toBeNull();

      // A key that does not go with the certificate: every worker says so, and keeps serving the previous pair.
      await copyFile(join(dir, 'client.key'), join(dir, 'served.key'));
      process.kill(daemon.pid, 'SIGHUP');
      const failures = () => daemon.logLines().filter((l) => l.msg === 'TLS reload failed: still serving the previous certificate');
      for (let i = 0; i < 500 && failures().length < 2; i++) await sleep(20);
      expect(failures()).toHaveLength(2);
      expect(JSON.stringify(failures()[0])).toContain('tls.key');
      for (let i = 0; i < 4; i++) expect((await servedCertificate(daemon.port, ca)).serialNumber).toBe(fresh);
      const ok = await run('curl', ['-sS', '--cacert', join(dir, 'ca.crt'), '-o', '/dev/null', '-w', '%{http_code}', `${daemon.url}/v2/`]);
      expect(ok.stdout, ok.stderr).toBe('200');
    }, 60_000);

    afterAll(async () => {
      expect((await daemon.stop()).code).toBe(0);
    });
  });

  it('mTLS: a client without a certificate is refused at the handshake, one with a certificate the CA signed is served', async () => {
    const config = await configFile('mtls.yaml', `tls:\n  cert: server1.crt\n  key: server1.key\n  clientCa: ${join(dir, 'ca.crt')}\n`);
    const daemon = await startDaemon({ args: ['--config', config, '--workers', '1'] });
    const curl = (extra: string[]) =>
      run('curl', ['-sS', '--cacert', join(dir, 'ca.crt'), ...extra, '-o', '/dev/null', '-w', '%{http_code}', `${daemon.url}/v2/`]);
    const without = await curl([]);
    expect(without.code, without.stderr).not.toBe(0);
    expect(without.stdout).not.toBe('200');
    const withCert = await curl(['--cert', join(dir, 'client.crt'), '--key', join(dir, 'client.key')]);
    expect(withCert.stdout, withCert.stderr).toBe('200');
    expect((await daemon.stop()).code).toBe(0);
  }, 60_000);

  it('a bad certificate or key at start-up stops the daemon with a message naming the key', async () => {
    await writeFile(join(dir, 'garbage.crt'), 'not a certificate\n');
    const cases: Array<[string, RegExp]> = [
      ['tls:\n  cert: garbage.crt\n  key: server1.key\n', /tls\.cert: .*garbage\.crt holds no usable PEM certificate/],
      ['tls:\n  cert: server1.crt\n  key: client.key\n', /tls\.key: .*client\.key is not the private key of .*server1\.crt/],
      ['tls:\n  cert: server1.crt\n  key: missing.key\n', /tls\.key: cannot read .*missing\.key: ENOENT/],
      ['tls:\n  cert: server1.crt\n  key: server1.key\n  clientCa: garbage.crt\n', /tls\.clientCa: .*garbage\.crt/],
    ];
    for (const [i, [text, message]] of cases.entries()) {
      const config = await configFile(`bad-${i}.yaml`, text);
      for (const workers of ['1', '2']) {
        const r = await runDaemonExpectingFailure({ args: ['--config', config, '--workers', workers] });
        expect(r.listened, text).toBe(false);
        expect(r.code, `${text}\n${r.stderr}`).toBe(1);
        expect(r.stderr).toMatch(message);
      }
    }
  }, 120_000);

  it('refuses to listen beyond loopback in the clear unless allowInsecure says so', async () => {
    const refused = await runDaemonExpectingFailure({ listen: '0.0.0.0:0', args: ['--workers', '1'] });
    expect(refused.listened).toBe(false);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 .*set tls .*auth.*allowInsecure: true/);

    // Bound to every interface, spoken to on loopback only.
    const allowed = await startDaemon({ listen: '0.0.0.0:0', args: ['--workers', '1'], env: { BUILDCACHED_ALLOW_INSECURE: 'true' } });
    const plain = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${allowed.port}/v2/`]);
    expect(plain.stdout, plain.stderr).toBe('200');
    expect((await allowed.stop()).code).toBe(0);

    const config = await configFile('wide-tls.yaml', 'tls:\n  cert: server1.crt\n  key: server1.key\n');
    const withTls = await startDaemon({ listen: '0.0.0.0:0', args: ['--config', config, '--workers', '1'] });
    expect(withTls.url).toMatch(/^https:/);
    const tls = await run('curl', ['-sS', '--cacert', join(dir, 'ca.crt'), '-o', '/dev/null', '-w', '%{http_code}', `https://127.0.0.1:${withTls.port}/v2/`]);
    expect(tls.stdout, tls.stderr).toBe('200');
    expect((await withTls.stop()).code).toBe(0);
  }, 60_000);
});
