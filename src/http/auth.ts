import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { OciError } from '../core/errors.js';
import type { Authenticator, Identity } from '../auth/authenticator.js';
import { parseAuthorization } from '../auth/authenticator.js';
import { describe } from '../auth/principal.js';
import { formatScope, type Action, type Scope } from '../auth/scope.js';
import { isValidName } from '../registry/names.js';
import type { Access } from './access.js';
import type { Exchange } from './exchange.js';
import { BASE_PATH } from './routes/base.js';
import { BLOB_PATH } from './routes/blobs.js';
import { CATALOG_PATH, REFERRERS_PATH, TAGS_LIST_PATH } from './routes/listing.js';
import { MANIFEST_PATH } from './routes/manifests.js';
import { UPLOAD_SESSION_PATH, UPLOAD_START_PATH } from './routes/uploads.js';

/** What a request needs of its caller before any route sees it. */
export type Need =
  | { kind: 'repository'; name: string; action: Action }
  | { kind: 'catalog' }
  /** The API root: any valid credential (`docker login` checks credentials against it). */
  | { kind: 'signed-in' }
  | { kind: 'admin' };

const REPO_ROUTES: ReadonlyArray<readonly [RegExp, (method: string) => Action]> = [
  [UPLOAD_SESSION_PATH, () => 'push'],
  [UPLOAD_START_PATH, () => 'push'],
  [BLOB_PATH, (m) => (m === 'DELETE' ? 'delete' : 'pull')],
  [MANIFEST_PATH, (m) => (m === 'DELETE' ? 'delete' : m === 'PUT' ? 'push' : 'pull')],
  [TAGS_LIST_PATH, () => 'pull'],
  [REFERRERS_PATH, () => 'pull'],
];

/** The need of a request by method and path; undefined for what is open to all (health, the token endpoint). */
export function needOf(method: string, path: string): Need | undefined {
  if (path === '/admin' || path.startsWith('/admin/') || path === '/metrics') return { kind: 'admin' };
  if (!path.startsWith('/v2')) return undefined;
  if (CATALOG_PATH.test(path)) return { kind: 'catalog' };
  if (BASE_PATH.test(path)) return { kind: 'signed-in' };
  for (const [re, action] of REPO_ROUTES) {
    const m = re.exec(path);
    // An invalid name is the route's to refuse (400), but only to a caller who signed in.
    if (m) return isValidName(m[1]!) ? { kind: 'repository', name: m[1]!, action: action(method) } : { kind: 'signed-in' };
  }
  return { kind: 'signed-in' };
}

/** The scope a client should ask a token for to do what it was refused. */
function scopeFor(need: Need): Scope | undefined {
  if (need.kind === 'catalog') return { type: 'catalog' };
  if (need.kind === 'admin') return { type: 'admin' };
  if (need.kind !== 'repository') return undefined;
  // Docker clients ask pull with push; a delete is asked on its own.
  const actions: Action[] = need.action === 'push' ? ['pull', 'push'] : [need.action];
  return { type: 'repository', name: need.name, actions };
}

export interface ChallengeOptions {
  /** The token endpoint's URL as clients must reach it; by default this listener's own /token. */
  realm: string | undefined;
  service: string;
}

/** Only a plain host[:port] goes into the challenge, so a hostile Host header cannot shape the header. */
function realmOf(req: IncomingMessage, opts: ChallengeOptions): string {
  if (opts.realm) return opts.realm;
  const host = req.headers.host ?? '';
  const local = req.socket.localAddress ?? '127.0.0.1';
  const fallback = `${local.includes(':') ? `[${local}]` : local}:${req.socket.localPort}`;
  const safe = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host) ? host : fallback;
  return `${(req.socket as TLSSocket).encrypted ? 'https' : 'http'}://${safe}/token`;
}

function challenge(req: IncomingMessage, res: Exchange, opts: ChallengeOptions, need: Need, error?: 'invalid_token' | 'insufficient_scope'): void {
  const scope = scopeFor(need);
  const parts = [`realm="${realmOf(req, opts)}"`, `service="${opts.service}"`];
  if (scope) parts.push(`scope="${formatScope(scope)}"`);
  if (error) parts.push(`error="${error}"`);
  res.setHeader('WWW-Authenticate', `Bearer ${parts.join(',')}`);
}

function accessFor(auth: Authenticator, id: Identity): Access {
  const { policy } = auth;
  const visible = (repo: string) => policy.allows(id.principal, repo, 'pull');
  const grants = id.grants;
  if (!grants) return { can: (repo, action) => policy.allows(id.principal, repo, action), visible };
  // A token grants what it lists, and only while the rules still allow it (rules change on a restart; tokens
  // outlive it, signed with the same key).
  return {
    can: (repo, action) => grants.some((g) => g.type === 'repository' && g.name === repo && g.actions.includes(action)) && policy.allows(id.principal, repo, action),
    visible,
  };
}

function satisfied(auth: Authenticator, id: Identity, access: Access, need: Need): boolean {
  const anonymous = id.principal.kind === 'anonymous';
  switch (need.kind) {
    case 'repository':
      return access.can(need.name, need.action);
    case 'catalog':
      if (id.grants) return id.grants.some((g) => g.type === 'catalog');
      return !anonymous || auth.policy.anonymousAccess;
    case 'signed-in':
      // A token of ours, even one issued to an anonymous caller, is a valid credential (distribution's rule).
      return !anonymous || id.grants !== undefined;
    case 'admin':
      // A token opens the admin API only when it was issued for it: an admin's pull token handed to a build must not.
      return auth.policy.isAdmin(id.principal) && (!id.grants || id.grants.some((g) => g.type === 'admin'));
  }
}

/** Whether the caller's rules would allow what its token does not: then it should fetch a wider token, not give up. */
function rulesAllow(auth: Authenticator, id: Identity, need: Need): boolean {
  if (need.kind === 'repository') return auth.policy.allows(id.principal, need.name, need.action);
  if (need.kind === 'catalog') return id.principal.kind !== 'anonymous' || auth.policy.anonymousAccess;
  if (need.kind === 'admin') return auth.policy.isAdmin(id.principal);
  return false;
}

/**
 * Authentication and authorization of every registry request, before any route runs: no or bad credentials →
 * 401 UNAUTHORIZED with the Docker token challenge; a token without the needed scope that its owner could get →
 * 401 insufficient_scope; signed in but not allowed → 403 DENIED. What the caller may do travels to the routes in
 * `res.locals.access` (mount sources, catalog filtering). Resolves when the request may go on; throws the refusal.
 */
export function authenticate(auth: Authenticator, opts: ChallengeOptions): (req: IncomingMessage, res: Exchange, path: string) => Promise<void> {
  return async (req, res, path) => {
    const need = needOf(req.method ?? '', path);
    if (!need) return;
    const cred = parseAuthorization(req.headers.authorization);
    const result = await auth.authenticate(cred, req.socket.remoteAddress ?? '');
    if (!result.ok) {
      if (result.blockedFor) throw new OciError('TOOMANYREQUESTS', 'too many failed logins from this address; retry later', { retryAfter: result.blockedFor });
      challenge(req, res, opts, need, cred.kind === 'bearer' ? 'invalid_token' : undefined);
      throw new OciError('UNAUTHORIZED', cred.kind === 'bearer' ? 'the token is invalid or expired' : 'authentication failed');
    }
    const id = result.identity;
    res.locals.user = describe(id.principal);
    const access = accessFor(auth, id);
    res.locals.access = access;
    if (satisfied(auth, id, access, need)) return;
    if (id.principal.kind === 'anonymous') {
      challenge(req, res, opts, need);
      throw new OciError('UNAUTHORIZED', 'authentication required');
    }
    if (id.grants && rulesAllow(auth, id, need)) {
      challenge(req, res, opts, need, 'insufficient_scope');
      throw new OciError('UNAUTHORIZED', 'the token does not grant this; ask for a token with the scope in the challenge');
    }
    throw new OciError('DENIED', need.kind === 'admin' ? 'this needs an admin rule' : 'not allowed by the access rules');
  };
}
