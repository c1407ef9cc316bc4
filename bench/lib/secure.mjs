// Credentials and a certificate for the auth and TLS rounds: an htpasswd file (bcrypt, as both registries read it),
// buildcached's auth and TLS config files, and a self-signed certificate for 127.0.0.1 made with openssl.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';

export function secureSetup(dir) {
  mkdirSync(dir, { recursive: true });
  const password = 'bench-password';
  const htpasswd = join(dir, 'htpasswd');
  // Cost 10, htpasswd -B's default: what an operator's file holds.
  writeFileSync(htpasswd, `bench:${bcrypt.hashSync(password, 10).replace(/^\$2b\$/, '$2y$')}\n`);
  const cert = join(dir, 'server.crt');
  const key = join(dir, 'server.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const authConfig = join(dir, 'auth.yaml');
  writeFileSync(authConfig, JSON.stringify({ auth: { htpasswd, rules: [{ user: 'bench', repositories: ['**'], actions: ['pull', 'push', 'delete'] }] } }));
  const tlsConfig = join(dir, 'tls.yaml');
  writeFileSync(tlsConfig, JSON.stringify({ tls: { cert, key } }));
  return {
    htpasswd,
    authConfig,
    tlsConfig,
    tls: { cert, key },
    ca: readFileSync(cert),
    basic: `Basic ${Buffer.from(`bench:${password}`).toString('base64')}`,
  };
}
