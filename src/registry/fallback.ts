import { RepositoryPattern } from '../auth/patterns.js';

/** One fallback rule as configured (registry.fallback). */
export interface FallbackRuleConfig {
  repositories: string[];
  /** Globs over the missing tag: `*` matches any run of characters. */
  tags: string[];
  /** Tags to serve instead, in order; `@recent` is the repository's most recently pushed other tag. */
  to: string[];
}

export const RECENT = '@recent';

const globRegex = (glob: string) => new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')).join('.*')}$`);

/**
 * Which tags a missing tag falls back to: the `to` list of the first rule whose repositories and tags match, or
 * nothing. Pure; what exists is the registry's to find out.
 */
export class FallbackRules {
  private readonly rules: Array<{ repos: RepositoryPattern[]; tags: RegExp[]; to: string[] }>;

  constructor(rules: FallbackRuleConfig[]) {
    this.rules = rules.map((r) => ({ repos: r.repositories.map((p) => new RepositoryPattern(p)), tags: r.tags.map(globRegex), to: r.to }));
  }

  get enabled(): boolean {
    return this.rules.length > 0;
  }

  candidates(repo: string, tag: string): readonly string[] {
    const rule = this.rules.find((r) => r.repos.some((p) => p.matches(repo)) && r.tags.some((t) => t.test(tag)));
    return rule ? rule.to.filter((t) => t !== tag) : [];
  }
}
