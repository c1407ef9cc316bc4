import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { createFileOnce } from '../storage/fs-util.js';
import type { Layout } from '../storage/layout.js';
import { Authenticator } from './authenticator.js';
import { Htpasswd } from './htpasswd.js';
import type { LoginGuard, LoginLimits } from './login-limiter.js';
import { OidcVerifier } from './oidc.js';
import { Policy } from './policy.js';
import { TokenIssuer } from './tokens.js';

export type AuthConfig = NonNullable<Config['auth']>;

/**
 * The configured authentication, loaded: htpasswd and JWKS files read (missing ones stop start-up), the token
 * secret of the data directory read or created (once, whichever process comes first).
 */
export async function loadAuthenticator(auth: AuthConfig, layout: Layout, guard: LoginGuard, log: Logger): Promise<Authenticator> {
  const secret = await createFileOnce(layout.tokenKey, randomBytes(32), layout.tmp);
  const htpasswd = auth.htpasswd ? new Htpasswd(auth.htpasswd, log) : undefined;
  await htpasswd?.load();
  const oidc = auth.oidc ? new OidcVerifier(auth.oidc.issuers, log, Math.round(auth.oidc.clockSkew / 1000)) : undefined;
  await oidc?.load();
  return new Authenticator(new Policy(auth.rules), new TokenIssuer(secret, auth.service), guard, htpasswd, oidc);
}

/** Failed-login limits of the configuration (any, without auth: nothing logs in then). */
export function loginLimits(config: Config): LoginLimits {
  const f = config.auth?.failedLogins;
  return { maxFailures: f?.max ?? 10, windowMs: f?.window ?? 60_000 };
}
