import { createHash } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { jwtIssuer } from './jwt-shape.js';
import { growingLru } from '../core/growing-lru.js';
import type { Logger } from '../observability/logger.js';
import { WatchedFile } from './watched-file.js';

export interface IssuerConfig {
  issuer: string;
  audience: string | string[];
  /** A JWKS document on disk, read again when it changes. */
  jwksFile?: string;
  jwksUrl?: string;
}

export interface VerifiedJwt {
  issuer: string;
  subject: string;
  claims: JWTPayload;
}

/** Verified tokens are remembered by a hash, never the token itself. */
const keyOf = (token: string) => createHash('sha256').update(token).digest('base64url');

/** Asymmetric algorithms only: a JWKS never holds an HMAC secret, and `none` is never a signature. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const FETCH_TIMEOUT_MS = 5_000;

/** The issuer's key set from its discovery document; fetched on first use and again after a failure. */
function discoveredKeys(issuer: string): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | undefined;
  const discover = async () => {
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`OIDC discovery ${url} answered ${res.status}`);
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    if (doc.issuer !== issuer || typeof doc.jwks_uri !== 'string') throw new Error(`OIDC discovery ${url}: no jwks_uri for issuer ${issuer}`);
    return createRemoteJWKSet(new URL(doc.jwks_uri), { timeoutDuration: FETCH_TIMEOUT_MS });
  };
  return async (header, token) => {
    keys ??= discover().catch((e: unknown) => {
      keys = undefined;
      throw e;
    });
    return (await keys)(header, token);
  };
}

function keySource(c: IssuerConfig, log: Logger): { keys: JWTVerifyGetKey; load(): Promise<void> } {
  if (c.jwksFile) {
    const file = new WatchedFile(c.jwksFile, (text) => createLocalJWKSet(JSON.parse(text)), log);
    return { keys: async (header, token) => (await file.current())(header, token), load: async () => void (await file.load()) };
  }
  const keys = c.jwksUrl ? createRemoteJWKSet(new URL(c.jwksUrl), { timeoutDuration: FETCH_TIMEOUT_MS }) : discoveredKeys(c.issuer);
  return { keys, load: async () => {} };
}

/**
 * CI providers' OIDC tokens, verified with jose against the issuer's keys: signature, `iss`, `aud`, `exp`/`nbf`
 * with a small clock skew. A verified token is remembered (by its hash) until it expires.
 */
export class OidcVerifier {
  private readonly issuers = new Map<string, { config: IssuerConfig; keys: JWTVerifyGetKey; load(): Promise<void> }>();
  private readonly verified = growingLru<string, VerifiedJwt>(10_000);

  constructor(
    configs: IssuerConfig[],
    private readonly log: Logger,
    private readonly skewSeconds: number,
  ) {
    for (const c of configs) this.issuers.set(c.issuer, { config: c, ...keySource(c, log) });
  }

  /** Reads JWKS files now, so that a missing one stops start-up. */
  async load(): Promise<void> {
    for (const i of this.issuers.values()) await i.load();
  }

  /** The token when it was verified a moment ago (no signature check), else undefined. */
  cached(token: string): VerifiedJwt | undefined {
    return this.verified.get(keyOf(token));
  }

  /** The verified token, or undefined: unknown issuer, bad signature, wrong audience, expired, not yet valid.
   *  Always checks the signature: `cached` is the cheap look first. */
  async verify(token: string): Promise<VerifiedJwt | undefined> {
    const iss = jwtIssuer(token);
    const issuer = iss === undefined ? undefined : this.issuers.get(iss);
    if (!issuer) return undefined;
    try {
      const { payload } = await jwtVerify(token, issuer.keys, {
        issuer: issuer.config.issuer,
        audience: issuer.config.audience,
        clockTolerance: this.skewSeconds,
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'sub'],
      });
      const out: VerifiedJwt = { issuer: issuer.config.issuer, subject: String(payload.sub), claims: payload };
      const ttl = (payload.exp! + this.skewSeconds) * 1000 - Date.now();
      if (ttl > 0) this.verified.set(keyOf(token), out, { ttl });
      return out;
    } catch (err) {
      // The reason helps the operator; the token itself is never logged.
      this.log.info({ issuer: iss, reason: (err as Error).message }, 'OIDC token refused');
      return undefined;
    }
  }
}
