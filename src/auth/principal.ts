import type { Claims } from './patterns.js';

/** Who a request comes from, once its credentials (if any) are verified. */
export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'user'; name: string }
  /** A CI job, by the verified claims of its OIDC token (only those the rules read are kept). */
  | { kind: 'oidc'; issuer: string; subject: string; claims: Claims };

export const ANONYMOUS: Principal = { kind: 'anonymous' };

/** How the principal appears in logs: a name, never a credential. */
export function describe(p: Principal): string | undefined {
  if (p.kind === 'user') return p.name;
  if (p.kind === 'oidc') return `oidc:${p.subject}`;
  return undefined;
}
