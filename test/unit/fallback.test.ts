import { describe, expect, it } from 'vitest';
import { FallbackRules } from '../../src/registry/fallback.js';

describe('fallback rules', () => {
  const rules = new FallbackRules([
    { repositories: ['cache/**'], tags: ['pr-*', 'feature-*'], to: ['main', 'master', '@recent'] },
    { repositories: ['cache/**'], tags: ['*'], to: ['develop'] },
    { repositories: ['team/*'], tags: ['*'], to: ['@recent'] },
  ]);

  it('the first rule whose repositories and tags match gives the candidates, in order', () => {
    expect(rules.candidates('cache/app', 'pr-12')).toEqual(['main', 'master', '@recent']);
    expect(rules.candidates('cache/a/b', 'feature-x')).toEqual(['main', 'master', '@recent']);
    expect(rules.candidates('cache/app', 'release-1')).toEqual(['develop']);
    expect(rules.candidates('team/app', 'anything')).toEqual(['@recent']);
  });

  it('nothing for repositories and tags no rule names', () => {
    expect(rules.candidates('other/app', 'pr-1')).toEqual([]);
    expect(rules.candidates('team/a/b', 'pr-1')).toEqual([]);
    expect(new FallbackRules([]).candidates('cache/app', 'pr-1')).toEqual([]);
    expect(new FallbackRules([]).enabled).toBe(false);
  });

  it('a tag never falls back to itself, and glob characters are literal except *', () => {
    expect(new FallbackRules([{ repositories: ['**'], tags: ['*'], to: ['main', 'dev'] }]).candidates('a', 'main')).toEqual(['dev']);
    const dotted = new FallbackRules([{ repositories: ['**'], tags: ['v1.*'], to: ['main'] }]);
    expect(dotted.candidates('a', 'v1.2')).toEqual(['main']);
    expect(dotted.candidates('a', 'v1x2')).toEqual([]);
  });
});
