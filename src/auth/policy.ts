import { ACTIONS, type Action, type Scope } from './scope.js';
import { RepositoryPattern } from './patterns.js';
import type { Principal } from './principal.js';

/** One access rule as configured (auth.rules). */
export interface RuleConfig {
  anonymous?: boolean;
  user?: string | string[];
  oidc?: { issuer: string; claims?: Record<string, string | string[]> };
  repositories?: string[];
  actions?: Array<Action | '*'>;
  admin?: boolean;
}

interface Rule {
  applies(p: Principal): boolean;
  patterns: RepositoryPattern[];
  actions: Action[];
  admin: boolean;
}

/**
 * A claim condition holds when the token's claim equals one of the allowed values, compared as text and without
 * regard to case, like the placeholders (GitHub keeps an owner's capitals in its claims; its names are unique
 * whatever their case).
 */
function claimsHold(want: Record<string, string | string[]>, have: Record<string, unknown>): boolean {
  return Object.entries(want).every(([k, v]) => {
    const got = have[k];
    if (typeof got !== 'string' && typeof got !== 'number' && typeof got !== 'boolean') return false;
    const text = String(got).toLowerCase();
    return (Array.isArray(v) ? v : [v]).some((x) => x.toLowerCase() === text);
  });
}

function compile(r: RuleConfig): Rule {
  const users = r.user === undefined ? [] : Array.isArray(r.user) ? r.user : [r.user];
  const oidc = r.oidc;
  const applies = (p: Principal): boolean => {
    // Anonymous rules are the floor: whatever anyone may do, a signed-in caller may do too.
    if (r.anonymous) return true;
    if (p.kind === 'user') return users.includes(p.name);
    if (p.kind === 'oidc' && oidc) return p.issuer === oidc.issuer && claimsHold(oidc.claims ?? {}, p.claims);
    return false;
  };
  const actions = new Set<Action>();
  for (const a of r.actions ?? []) (a === '*' ? ACTIONS : [a]).forEach((x) => actions.add(x));
  return { applies, patterns: (r.repositories ?? []).map((s) => new RepositoryPattern(s)), actions: [...actions], admin: r.admin === true };
}

/**
 * The configured rules, evaluated: rules add up, and nothing is allowed that no rule allows. Pure: who the caller
 * is comes in verified, and the answer is a set of actions.
 */
export class Policy {
  private readonly rules: Rule[];
  /** Claims any rule reads (conditions and placeholders): what a token must carry to be judged again later. */
  readonly claimNames: string[];

  constructor(rules: RuleConfig[]) {
    this.rules = rules.map(compile);
    const names = new Set<string>();
    for (const r of rules) Object.keys(r.oidc?.claims ?? {}).forEach((k) => names.add(k));
    for (const r of this.rules) r.patterns.forEach((p) => p.claims.forEach((c) => names.add(c)));
    this.claimNames = [...names];
  }

  actions(p: Principal, repo: string): Set<Action> {
    const out = new Set<Action>();
    const claims = p.kind === 'oidc' ? p.claims : {};
    for (const r of this.rules) {
      if (r.actions.length === 0 || !r.applies(p)) continue;
      if (r.patterns.some((pat) => pat.matches(repo, claims))) r.actions.forEach((a) => out.add(a));
    }
    return out;
  }

  allows(p: Principal, repo: string, action: Action): boolean {
    return this.actions(p, repo).has(action);
  }

  isAdmin(p: Principal): boolean {
    return p.kind !== 'anonymous' && this.rules.some((r) => r.admin && r.applies(p));
  }

  /** Whether callers without credentials may do anything at all (else they are always asked to sign in). */
  get anonymousAccess(): boolean {
    return this.rules.some((r) => r.applies({ kind: 'anonymous' }) && r.actions.length > 0);
  }

  /** What a token request gets: each asked scope cut down to what the rules allow; nothing allowed, nothing listed. */
  grant(p: Principal, asked: Scope[]): Scope[] {
    const out: Scope[] = [];
    for (const s of asked) {
      if (s.type === 'catalog') {
        if (p.kind !== 'anonymous' || this.anonymousAccess) out.push(s);
        continue;
      }
      if (s.type === 'admin') {
        if (this.isAdmin(p)) out.push(s);
        continue;
      }
      const allowed = this.actions(p, s.name);
      const actions = s.actions.filter((a) => allowed.has(a));
      if (actions.length > 0) out.push({ type: 'repository', name: s.name, actions });
    }
    return out;
  }
}
