import { createHash } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { LRUCache } from 'lru-cache';
import type { Action, Scope } from './scope.js';
import type { Principal } from './principal.js';
import type { Claims } from './patterns.js';

/** The `iss` of every token buildcached issues. */
export const ISSUER = 'buildcached';

/** What a verified token of ours says: who, and what it grants (access tokens) or nothing more (refresh tokens). */
export interface TokenContent {
  principal: Principal;
  /** For users: the fingerprint of their htpasswd entry when the token was issued (a password change ends it). */
  fingerprint?: string;
  grants: Scope[];
  expiresAt: number;
}

type Use = 'access' | 'refresh';

/** The principal as a compact claim: only what the rules need to judge it again. */
type PrincipalClaim = { k: 'a' } | { k: 'u'; n: string; f?: string } | { k: 'o'; i: string; s: string; c: Claims };

function toClaim(p: Principal, fingerprint: string | undefined): PrincipalClaim {
  if (p.kind === 'user') return { k: 'u', n: p.name, ...(fingerprint ? { f: fingerprint } : {}) };
  if (p.kind === 'oidc') return { k: 'o', i: p.issuer, s: p.subject, c: p.claims };
  return { k: 'a' };
}

function fromClaim(c: PrincipalClaim): Principal {
  if (c.k === 'u') return { kind: 'user', name: c.n };
  if (c.k === 'o') return { kind: 'oidc', issuer: c.i, subject: c.s, claims: c.c };
  return { kind: 'anonymous' };
}

/** Grants as `[name, "pull,push"]` pairs, `["*catalog"]` / `["*admin"]` for the others: names never start with `*`. */
type GrantClaim = [string, string] | ['*catalog'] | ['*admin'];

const toGrants = (g: Scope[]): GrantClaim[] => g.map((s) => (s.type === 'repository' ? [s.name, s.actions.join(',')] : [`*${s.type}`] as GrantClaim));
const fromGrants = (g: GrantClaim[]): Scope[] =>
  g.map((x) =>
    x[0] === '*catalog' ? { type: 'catalog' } : x[0] === '*admin' ? { type: 'admin' } : { type: 'repository', name: x[0], actions: x[1]!.split(',') as Action[] },
  );

/**
 * The bearer tokens buildcached issues: HS256 JWTs signed with a secret kept in the data directory, so that every
 * worker and every restart accepts them. Verified tokens are remembered until they expire, so a request pays a
 * map lookup, not a signature check.
 */
export class TokenIssuer {
  /** Bounded by the tokens' size too: a token carries up to 64 grants, and anyone may have one issued. */
  private readonly verified = new LRUCache<string, TokenContent>({ max: 50_000, maxSize: 32 * 1024 * 1024, sizeCalculation: (_v, k) => k.length * 4 });

  constructor(
    private readonly secret: Uint8Array,
    private readonly service: string,
  ) {}

  async issue(use: Use, principal: Principal, grants: Scope[], ttlSeconds: number, fingerprint?: string): Promise<{ token: string; issuedAt: Date; expiresIn: number }> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ use, p: toClaim(principal, fingerprint), ...(use === 'access' ? { g: toGrants(grants) } : {}) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setAudience(this.service)
      .setSubject(principal.kind === 'user' ? principal.name : principal.kind === 'oidc' ? principal.subject : 'anonymous')
      .setIssuedAt(now)
      .setExpirationTime(now + ttlSeconds)
      .sign(this.secret);
    return { token, issuedAt: new Date(now * 1000), expiresIn: ttlSeconds };
  }

  /** The token's content when it is ours, of this use, and not expired; undefined otherwise. */
  async verify(token: string, use: Use): Promise<TokenContent | undefined> {
    const key = `${use}:${createHash('sha256').update(token).digest('base64url')}`;
    const hit = this.verified.get(key);
    if (hit) return hit.expiresAt > Date.now() ? hit : undefined;
    try {
      const { payload } = await jwtVerify(token, this.secret, { issuer: ISSUER, audience: this.service, algorithms: ['HS256'] });
      if (payload.use !== use) return undefined;
      const p = payload.p as PrincipalClaim;
      const content: TokenContent = {
        principal: fromClaim(p),
        ...(p.k === 'u' && p.f ? { fingerprint: p.f } : {}),
        grants: use === 'access' ? fromGrants((payload.g ?? []) as GrantClaim[]) : [],
        expiresAt: payload.exp! * 1000,
      };
      this.verified.set(key, content, { ttl: Math.max(1, content.expiresAt - Date.now()) });
      return content;
    } catch {
      return undefined;
    }
  }
}
