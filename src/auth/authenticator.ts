import type { Htpasswd } from './htpasswd.js';
import type { LoginGuard } from './login-limiter.js';
import type { OidcVerifier, VerifiedJwt } from './oidc.js';
import type { Policy } from './policy.js';
import { ANONYMOUS, type Principal } from './principal.js';
import type { Scope } from './scope.js';
import { ISSUER, type TokenIssuer } from './tokens.js';
import { jwtIssuer } from './jwt-shape.js';

/** What an Authorization header carries. */
export type Credential =
  | { kind: 'none' }
  | { kind: 'basic'; user: string; password: string }
  | { kind: 'bearer'; token: string }
  | { kind: 'malformed' };

export function parseAuthorization(header: string | undefined): Credential {
  if (header === undefined || header === '') return { kind: 'none' };
  const space = header.indexOf(' ');
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (space > 0 && scheme === 'bearer' && value !== '') return { kind: 'bearer', token: value };
  if (space > 0 && scheme === 'basic') {
    const text = Buffer.from(value, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon > 0) return { kind: 'basic', user: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  return { kind: 'malformed' };
}

/** Who the caller is; `grants` only for a bearer token, which grants exactly what it lists; `expiresAt` for a
 *  token's identity (what was derived from it must not outlive it). */
export type Identity = { principal: Principal; fingerprint?: string; grants?: Scope[]; expiresAt?: number };

export type Authentication = { ok: true; identity: Identity } | { ok: false; blockedFor?: number };

/**
 * Turns credentials into an identity: a password from htpasswd (bcrypt), a CI provider's OIDC JWT or a refresh
 * token of ours given as the password (any user name), or a bearer token buildcached issued. Failed logins count against the client's address;
 * once it is blocked, credentials from it are not even looked at until the block ends.
 */
export class Authenticator {
  constructor(
    readonly policy: Policy,
    readonly tokens: TokenIssuer,
    private readonly guard: LoginGuard,
    private readonly htpasswd: Htpasswd | undefined,
    private readonly oidc: OidcVerifier | undefined,
  ) {}

  /** A user name and password (or JWT) as given to Basic auth or the token endpoint's password grant. */
  async login(user: string, password: string, address: string): Promise<Authentication> {
    // A blocked address is refused whatever it sends, the right password too.
    const blocked = this.guard.retryAfter(address);
    if (blocked > 0) return { ok: false, blockedFor: blocked };
    // Credentials verified a moment ago (Basic on every request) are no new attempt: nothing to count or wait for.
    const known = await this.known(user, password);
    if (known) return { ok: true, identity: known };
    const blockedFor = this.guard.admit(address);
    if (blockedFor > 0) return { ok: false, blockedFor };
    let identity: Identity | undefined;
    let failed = false;
    try {
      identity = await this.check(user, password);
      failed = identity === undefined;
    } finally {
      // A check that could not run (too busy) is no failed login.
      this.guard.settle(address, failed);
    }
    return identity ? { ok: true, identity } : { ok: false };
  }

  /** The identity of credentials whose check is cached (or, for our own tokens, costs one HMAC). */
  private async known(user: string, password: string): Promise<Identity | undefined> {
    const issuer = jwtIssuer(password);
    // A refresh token of ours (what `docker login` stores as its identity token, or what a CI job got for its
    // JWT) works as a password too, so clients that only know user:password outlive a five-minute JWT.
    if (issuer === ISSUER) return this.bearer(password, 'refresh');
    if (issuer !== undefined) {
      const jwt = this.oidc?.cached(password);
      return jwt && this.oidcIdentity(jwt);
    }
    const fingerprint = await this.htpasswd?.cached(user, password);
    return fingerprint === undefined ? undefined : { principal: { kind: 'user', name: user }, fingerprint };
  }

  private oidcIdentity(jwt: VerifiedJwt): Identity {
    const claims: Record<string, unknown> = {};
    for (const k of this.policy.claimNames) if (k in jwt.claims) claims[k] = jwt.claims[k];
    return { principal: { kind: 'oidc', issuer: jwt.issuer, subject: jwt.subject, claims } };
  }

  /** The full check of credentials `known` could not vouch for. */
  private async check(user: string, password: string): Promise<Identity | undefined> {
    const issuer = jwtIssuer(password);
    // A token of ours that `known` did not accept is invalid: there is nothing slower to try.
    if (issuer === ISSUER) return undefined;
    // Any other JWT is a CI job's, never tried as a password.
    if (issuer !== undefined) {
      if (!this.oidc) return undefined;
      const jwt = await this.oidc.verify(password);
      return jwt && this.oidcIdentity(jwt);
    }
    const fingerprint = await this.htpasswd?.verify(user, password);
    return fingerprint === undefined ? undefined : { principal: { kind: 'user', name: user }, fingerprint };
  }

  /** A token of ours, still valid, whose user (if a user's) still has the password it was issued under. */
  async bearer(token: string, use: 'access' | 'refresh'): Promise<Identity | undefined> {
    const t = await this.tokens.verify(token, use);
    if (!t) return undefined;
    if (t.principal.kind === 'user' && (await this.htpasswd?.fingerprint(t.principal.name)) !== t.fingerprint) return undefined;
    return {
      principal: t.principal,
      expiresAt: t.expiresAt,
      ...(t.fingerprint ? { fingerprint: t.fingerprint } : {}),
      ...(use === 'access' ? { grants: t.grants } : {}),
    };
  }

  /** Any Authorization header: none is the anonymous caller; bad or blocked credentials are a failure. */
  async authenticate(cred: Credential, address: string): Promise<Authentication> {
    switch (cred.kind) {
      case 'none':
        return { ok: true, identity: { principal: ANONYMOUS } };
      case 'basic':
        return this.login(cred.user, cred.password, address);
      case 'bearer': {
        const identity = await this.bearer(cred.token, 'access');
        return identity ? { ok: true, identity } : { ok: false };
      }
      case 'malformed':
        return { ok: false };
    }
  }
}
