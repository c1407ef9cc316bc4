import express, { Router, type Request } from 'express';
import { OciError } from '../../core/errors.js';
import type { Authentication, Authenticator, Identity } from '../../auth/authenticator.js';
import { parseAuthorization } from '../../auth/authenticator.js';
import { ANONYMOUS, describe } from '../../auth/principal.js';
import { parseScopes } from '../../auth/scope.js';

export const TOKEN_PATH = '/token';

export interface TokenSettings {
  tokenTtlSeconds: number;
  refreshTokenTtlSeconds: number;
}

/** Every value of a query or form parameter that may repeat (`scope`). */
function values(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

const single = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function refused(result: Authentication & { ok: false }): OciError {
  return result.blockedFor
    ? new OciError('TOOMANYREQUESTS', 'too many failed logins from this address; retry later', { retryAfter: result.blockedFor })
    : new OciError('UNAUTHORIZED', 'authentication failed');
}

/**
 * The Docker token endpoint (the realm of the registry's challenge). GET with optional Basic credentials, as
 * docker, skopeo and crane call it; POST with an OAuth2 form (`grant_type=password` or `refresh_token`), as
 * containerd and BuildKit do. The grant is the asked scopes cut down to what the rules allow: a partial grant is an
 * answer, not an error. A refresh token comes back when asked for (offline_token / access_type=offline).
 */
export function tokenRoutes(auth: Authenticator, settings: TokenSettings): Router {
  const r = Router();
  const answer = async (id: Identity, scopes: string[], offline: boolean, refreshToken?: string) => {
    const grants = auth.policy.grant(id.principal, parseScopes(scopes));
    // An access token from a refresh token ends when that one does.
    const left = id.expiresAt === undefined ? Infinity : Math.floor((id.expiresAt - Date.now()) / 1000);
    const access = await auth.tokens.issue('access', id.principal, grants, Math.max(1, Math.min(settings.tokenTtlSeconds, left)), id.fingerprint);
    const body: Record<string, unknown> = {
      token: access.token,
      access_token: access.token,
      expires_in: access.expiresIn,
      issued_at: access.issuedAt.toISOString(),
    };
    if (offline && id.principal.kind !== 'anonymous') {
      // An OIDC job's refresh token lasts no longer than an access token: its JWT was meant to live minutes.
      const ttl = id.principal.kind === 'oidc' ? settings.tokenTtlSeconds : settings.refreshTokenTtlSeconds;
      body.refresh_token = refreshToken ?? (await auth.tokens.issue('refresh', id.principal, [], ttl, id.fingerprint)).token;
    }
    return body;
  };
  const address = (req: Request) => req.socket.remoteAddress ?? '';

  r.get(TOKEN_PATH, async (req, res) => {
    res.locals.route = TOKEN_PATH;
    const cred = parseAuthorization(req.headers.authorization);
    let id: Identity = { principal: ANONYMOUS };
    if (cred.kind === 'basic') {
      const result = await auth.login(cred.user, cred.password, address(req));
      if (!result.ok) throw refused(result);
      id = result.identity;
    } else if (cred.kind !== 'none') {
      throw new OciError('UNAUTHORIZED', 'the token endpoint takes Basic credentials, or none for anonymous access');
    }
    res.locals.user = describe(id.principal);
    res.set('Cache-Control', 'no-store').json(await answer(id, values(req.query.scope), single(req.query.offline_token) === 'true'));
  });

  r.post(TOKEN_PATH, express.urlencoded({ extended: false, limit: '64kb' }), async (req, res) => {
    res.locals.route = TOKEN_PATH;
    const form = (req.body ?? {}) as Record<string, unknown>;
    const grant = single(form.grant_type);
    const scopes = values(form.scope);
    const offline = single(form.access_type) === 'offline';
    if (grant === 'password') {
      const result = await auth.login(single(form.username) ?? '', single(form.password) ?? '', address(req));
      if (!result.ok) throw refused(result);
      res.locals.user = describe(result.identity.principal);
      return void res.set('Cache-Control', 'no-store').json(await answer(result.identity, scopes, offline));
    }
    if (grant === 'refresh_token') {
      const token = single(form.refresh_token) ?? '';
      const id = await auth.bearer(token, 'refresh');
      if (!id) throw new OciError('UNAUTHORIZED', 'the refresh token is invalid or expired');
      res.locals.user = describe(id.principal);
      return void res.set('Cache-Control', 'no-store').json(await answer(id, scopes, true, token));
    }
    throw new OciError('PARAMETER_INVALID', 'grant_type must be password or refresh_token');
  });
  return r;
}
