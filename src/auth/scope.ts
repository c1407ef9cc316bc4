import { isValidName } from '../registry/names.js';

/** What a caller may do to a repository. */
export type Action = 'pull' | 'push' | 'delete';
export const ACTIONS: readonly Action[] = ['pull', 'push', 'delete'];

/** A Docker token scope: `repository:<name>:<actions>`, the catalog (`registry:catalog:*`), or the admin API
 *  through the registry port (`registry:admin:*`). */
export type Scope = { type: 'repository'; name: string; actions: Action[] } | { type: 'catalog' } | { type: 'admin' };

const MAX_SCOPES = 64;

/** `*` (distribution's "everything") stands for every action; unknown actions are dropped, not errors. */
function parseActions(list: string): Action[] {
  const out = new Set<Action>();
  for (const a of list.split(',')) {
    if (a === '*') ACTIONS.forEach((x) => out.add(x));
    else if ((ACTIONS as readonly string[]).includes(a)) out.add(a as Action);
  }
  return [...out];
}

/**
 * The scopes a token request asks for: each `scope` parameter may hold several, space-separated. A scope that is
 * malformed, of an unknown type or names an invalid repository is skipped: the grant is what can be granted.
 */
export function parseScopes(values: readonly string[]): Scope[] {
  const out: Scope[] = [];
  for (const value of values) {
    for (const s of value.split(' ')) {
      // A token carries its grants: a few dozen is what any client asks; more would only bloat every request.
      if (out.length >= MAX_SCOPES) return out;
      if (s === 'registry:catalog:*' || s === 'registry:admin:*') {
        out.push({ type: s === 'registry:catalog:*' ? 'catalog' : 'admin' });
        continue;
      }
      // The name sits between the type and the last colon (a name never contains one; a host:port prefix would).
      const first = s.indexOf(':');
      const last = s.lastIndexOf(':');
      if (first < 0 || last === first || s.slice(0, first) !== 'repository') continue;
      const name = s.slice(first + 1, last);
      if (!isValidName(name)) continue;
      out.push({ type: 'repository', name, actions: parseActions(s.slice(last + 1)) });
    }
  }
  return out;
}

export function formatScope(s: Scope): string {
  return s.type === 'repository' ? `repository:${s.name}:${s.actions.join(',')}` : `registry:${s.type}:*`;
}
