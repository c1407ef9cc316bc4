import { describe, expect, it } from 'vitest';
import { RepositoryPattern, patternProblem } from '../../src/auth/patterns.js';
import { Policy, type RuleConfig } from '../../src/auth/policy.js';
import { parseScopes, formatScope } from '../../src/auth/scope.js';
import type { Principal } from '../../src/auth/principal.js';
import { parseHtpasswd } from '../../src/auth/htpasswd.js';
import { BlockList, LoginLimiter } from '../../src/auth/login-limiter.js';
import { parseAuthorization } from '../../src/auth/authenticator.js';

const GH = 'https://token.actions.githubusercontent.com';
const matches = (pattern: string, repo: string, claims = {}) => new RepositoryPattern(pattern).matches(repo, claims);

describe('repository patterns', () => {
  it('* matches within one segment, ** any number of segments (zero too)', () => {
    expect(matches('public/*', 'public/app')).toBe(true);
    expect(matches('public/*', 'public/app/cache')).toBe(false);
    expect(matches('public/*', 'public')).toBe(false);
    expect(matches('public/**', 'public/app/cache')).toBe(true);
    expect(matches('public/**', 'public')).toBe(true);
    expect(matches('public/**', 'publicity/app')).toBe(false);
    expect(matches('**', 'any/thing/at/all')).toBe(true);
    expect(matches('**/cache', 'a/b/cache')).toBe(true);
    expect(matches('**/cache', 'cache')).toBe(true);
    expect(matches('**/cache', 'a/b/cachex')).toBe(false);
    expect(matches('a/**/cache', 'a/cache')).toBe(true);
    expect(matches('a/**/cache', 'a/x/y/cache')).toBe(true);
    expect(matches('a/**/cache', 'b/x/cache')).toBe(false);
    expect(matches('team-*/app', 'team-web/app')).toBe(true);
    expect(matches('team-*/app', 'other/app')).toBe(false);
  });

  it('literal characters are literal: a dot is not a wildcard', () => {
    expect(matches('a.b/x', 'a.b/x')).toBe(true);
    expect(matches('a.b/x', 'axb/x')).toBe(false);
  });

  it('{claim} is replaced by the claim, lower-cased; a missing or name-invalid claim matches nothing', () => {
    expect(matches('{repository}/**', 'acme/web/cache', { repository: 'Acme/Web' })).toBe(true);
    expect(matches('{repository}/**', 'acme/webx/cache', { repository: 'acme/web' })).toBe(false);
    expect(matches('{repository}/**', 'acme/web', {})).toBe(false);
    // A claim cannot smuggle a wildcard or widen the pattern.
    expect(matches('{repository}/**', 'acme/web', { repository: '**' })).toBe(false);
    expect(matches('{repository}/x', 'a/b/x', { repository: 'a/.*' })).toBe(false);
    expect(matches('ci/{oidc.circleci.com/project-id}/*', 'ci/p1/c', { 'oidc.circleci.com/project-id': 'p1' })).toBe(true);
  });

  it('validates patterns', () => {
    expect(patternProblem('public/**')).toBeUndefined();
    expect(patternProblem('{repository}/**')).toBeUndefined();
    expect(patternProblem('')).toBeDefined();
    expect(patternProblem('a//b')).toBeDefined();
    expect(patternProblem('A/b')).toBeDefined();
    expect(patternProblem('a/b**')).toBeDefined();
    expect(patternProblem('a/(b)')).toBeDefined();
  });
});

describe('scopes', () => {
  it('parses several per value, skips malformed ones, maps * to every action', () => {
    expect(parseScopes(['repository:a/b:pull,push repository:c:*', 'registry:catalog:*', 'repository:BAD:pull', 'junk', 'repository:x:frobnicate'])).toEqual([
      { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
      { type: 'repository', name: 'c', actions: ['pull', 'push', 'delete'] },
      { type: 'catalog' },
      { type: 'repository', name: 'x', actions: [] },
    ]);
    expect(formatScope({ type: 'repository', name: 'a', actions: ['pull', 'push'] })).toBe('repository:a:pull,push');
  });
});

describe('policy', () => {
  const rules: RuleConfig[] = [
    { anonymous: true, repositories: ['public/**'], actions: ['pull'] },
    { user: 'ci', repositories: ['**'], actions: ['pull', 'push', 'delete'] },
    { user: ['reader', 'other'], repositories: ['team/*'], actions: ['pull'] },
    { user: 'ops', admin: true },
    { oidc: { issuer: GH, claims: { repository_owner: 'acme' } }, repositories: ['{repository}/**', 'acme/shared/*'], actions: ['pull', 'push'] },
  ];
  const policy = new Policy(rules);
  const anon: Principal = { kind: 'anonymous' };
  const ci: Principal = { kind: 'user', name: 'ci' };
  const reader: Principal = { kind: 'user', name: 'reader' };
  const ops: Principal = { kind: 'user', name: 'ops' };
  const job = (repository: string, owner = 'acme'): Principal => ({ kind: 'oidc', issuer: GH, subject: 'repo:x', claims: { repository, repository_owner: owner } });

  it('rules add up; no rule, no access; anonymous rules apply to everyone', () => {
    expect([...policy.actions(anon, 'public/app')]).toEqual(['pull']);
    expect(policy.allows(anon, 'private/app', 'pull')).toBe(false);
    expect([...policy.actions(ci, 'private/app')].sort()).toEqual(['delete', 'pull', 'push']);
    expect(policy.allows(reader, 'team/x', 'pull')).toBe(true);
    expect(policy.allows(reader, 'team/x', 'push')).toBe(false);
    expect(policy.allows(reader, 'public/app', 'pull')).toBe(true);
    expect(policy.allows(ops, 'team/x', 'pull')).toBe(false);
    expect(policy.allows({ kind: 'user', name: 'nobody' }, 'team/x', 'pull')).toBe(false);
  });

  it('admin only by an admin rule, never anonymous', () => {
    expect(policy.isAdmin(ops)).toBe(true);
    expect(policy.isAdmin(ci)).toBe(false);
    expect(policy.isAdmin(anon)).toBe(false);
  });

  it('an OIDC job reaches its own repository and the shared one, not another owner or another repository', () => {
    expect(policy.allows(job('acme/web'), 'acme/web/cache', 'push')).toBe(true);
    expect(policy.allows(job('acme/web'), 'acme/api/cache', 'pull')).toBe(false);
    expect(policy.allows(job('acme/web'), 'acme/shared/base', 'pull')).toBe(true);
    expect(policy.allows(job('evil/web', 'evil'), 'evil/web/cache', 'push')).toBe(false);
    // Claim conditions ignore case, as placeholders do: GitHub keeps the owner's capitals.
    expect(policy.allows(job('Acme/Web', 'Acme'), 'acme/web/cache', 'push')).toBe(true);
    expect(policy.allows({ ...job('acme/web'), issuer: 'https://other' } as Principal, 'acme/web/cache', 'push')).toBe(false);
    expect(policy.claimNames.sort()).toEqual(['repository', 'repository_owner']);
  });

  it('grants the intersection of what was asked and what is allowed', () => {
    const asked = parseScopes(['repository:team/x:pull,push', 'repository:private/y:pull', 'registry:catalog:*']);
    expect(policy.grant(reader, asked)).toEqual([{ type: 'repository', name: 'team/x', actions: ['pull'] }, { type: 'catalog' }]);
    expect(policy.grant(anon, asked)).toEqual([{ type: 'catalog' }]);
    expect(new Policy([{ user: 'ci', repositories: ['**'], actions: ['pull'] }]).grant(anon, asked)).toEqual([]);
  });
});

describe('htpasswd', () => {
  it('keeps bcrypt entries only, and says which lines it ignored without repeating them', () => {
    const bcrypt = '$2y$05$' + 'a'.repeat(53);
    const { users, problems } = parseHtpasswd(`# comment\nci:${bcrypt}\n\nold:$apr1$xyz$abc\nbroken\n`);
    expect([...users.keys()]).toEqual(['ci']);
    expect(problems).toHaveLength(2);
    expect(problems.join(' ')).not.toContain('$apr1$xyz$abc');
  });
});

describe('Authorization header', () => {
  it('reads Basic (password may hold colons) and Bearer; anything else is malformed', () => {
    const b64 = Buffer.from('oidc:a:b:c').toString('base64');
    expect(parseAuthorization(`Basic ${b64}`)).toEqual({ kind: 'basic', user: 'oidc', password: 'a:b:c' });
    expect(parseAuthorization('bearer abc')).toEqual({ kind: 'bearer', token: 'abc' });
    expect(parseAuthorization(undefined)).toEqual({ kind: 'none' });
    expect(parseAuthorization('Basic !!!')).toEqual({ kind: 'malformed' });
    expect(parseAuthorization('Digest x')).toEqual({ kind: 'malformed' });
  });
});

describe('failed logins', () => {
  it('block an address for the rest of its window after max failures; others are untouched', () => {
    let now = 1_000_000;
    const limiter = new LoginLimiter({ maxFailures: 3, windowMs: 60_000 }, () => now);
    const blocked = new BlockList(() => now);
    expect(limiter.failed('1.1.1.1')).toBeUndefined();
    expect(limiter.failed('1.1.1.1')).toBeUndefined();
    const until = limiter.failed('1.1.1.1');
    expect(until).toBe(1_060_000);
    blocked.block('1.1.1.1', until!);
    now += 30_000;
    expect(blocked.retryAfter('1.1.1.1')).toBe(30);
    expect(blocked.retryAfter('2.2.2.2')).toBe(0);
    now += 30_001;
    expect(blocked.retryAfter('1.1.1.1')).toBe(0);
    expect(limiter.failed('1.1.1.1')).toBeUndefined(); // a new window
  });
});
