/**
 * Credentials for the auth suites, all real: an htpasswd file of bcrypt hashes, RSA keys the test generates, a
 * JWKS file and a JWKS served over HTTP on 127.0.0.1, and JWTs signed with those keys (or others, to forge).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { SignJWT, exportJWK, generateKeyPair, type JWTPayload } from 'jose';

export const FILE_ISSUER = 'https://token.actions.githubusercontent.com';
export const AUDIENCE = 'buildcached';
export const PASSWORDS = { ci: 'ci-secret-password', reader: 'reader-secret-password', ops: 'ops-secret-password' } as const;

export interface AuthFixture {
  dir: string;
  /** The issuer whose keys are served at a loopback JWKS URL. */
  urlIssuer: string;
  /** The `auth` config section (issue 11's example, plus the URL issuer). */
  auth: Record<string, unknown>;
  /** A JWT from `issuer` (default: the file issuer) with these claims over sensible defaults. */
  jwt(claims?: JWTPayload, opts?: { issuer?: string; key?: 'good' | 'forged'; expiresIn?: number; audience?: string }): Promise<string>;
  close(): Promise<void>;
}

async function serveJwks(body: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/jwks.json') res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  return server;
}

export async function authFixture(extraRules: unknown[] = []): Promise<AuthFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'buildcached-auth-'));
  const lines = await Promise.all(Object.entries(PASSWORDS).map(async ([u, p]) => `${u}:${(await bcrypt.hash(p, 5)).replace(/^\$2b\$/, '$2y$')}`));
  await writeFile(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
  const good = await generateKeyPair('RS256', { extractable: true });
  const forged = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(good.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const jwks = JSON.stringify({ keys: [jwk] });
  await writeFile(join(dir, 'github-jwks.json'), jwks);
  const server = await serveJwks(jwks);
  const urlIssuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const auth = {
    htpasswd: join(dir, 'htpasswd'),
    tokenTtl: '1h',
    oidc: {
      issuers: [
        { issuer: FILE_ISSUER, audience: AUDIENCE, jwksFile: join(dir, 'github-jwks.json') },
        { issuer: urlIssuer, audience: AUDIENCE, jwksUrl: `${urlIssuer}/jwks.json` },
      ],
    },
    rules: [
      { anonymous: true, repositories: ['public/**'], actions: ['pull'] },
      { user: 'ci', repositories: ['**'], actions: ['pull', 'push', 'delete'] },
      { user: 'reader', repositories: ['team/**'], actions: ['pull'] },
      { user: 'ops', admin: true },
      { oidc: { issuer: FILE_ISSUER, claims: { repository_owner: 'acme' } }, repositories: ['{repository}/**', 'acme/shared/*'], actions: ['pull', 'push'] },
      { oidc: { issuer: urlIssuer, claims: { project_path: 'grp/proj' } }, repositories: ['{project_path}/**'], actions: ['pull', 'push'] },
      ...extraRules,
    ],
  };
  return {
    dir,
    urlIssuer,
    auth,
    async jwt(claims = {}, opts = {}) {
      const key = (opts.key === 'forged' ? forged : good).privateKey;
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ repository: 'acme/web', repository_owner: 'acme', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .setIssuer(opts.issuer ?? FILE_ISSUER)
        .setAudience(opts.audience ?? AUDIENCE)
        .setSubject('repo:acme/web:ref:refs/heads/main')
        .setIssuedAt(now - 10)
        .setExpirationTime(now + (opts.expiresIn ?? 300))
        .sign(key);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
