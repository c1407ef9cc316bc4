import type { Action } from '../auth/scope.js';

/** What the caller of this request may do, as the routes ask it (a mount's source, the catalog's entries). */
export interface Access {
  /** Whether this request's credential allows `action` on `repo` (a bearer token: exactly what it grants). */
  can(repo: string, action: Action): boolean;
  /** Whether the caller may see `repo` in the catalog (what its rules let it pull). */
  visible(repo: string): boolean;
}

/** Without auth every caller may do everything. */
const OPEN: Access = { can: () => true, visible: () => true };

export const accessOf = (res: { locals: Record<string, unknown> }): Access => (res.locals.access as Access | undefined) ?? OPEN;
