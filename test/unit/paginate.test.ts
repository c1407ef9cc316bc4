import { describe, expect, it } from 'vitest';
import { paginate } from '../../src/registry/registry.js';

const items = ['a', 'b', 'c', 'd', 'e'];

describe('paginate', () => {
  it('returns everything without n or last', () => {
    expect(paginate(items, undefined, undefined)).toEqual({ items });
  });

  it('returns the first n and where to continue', () => {
    expect(paginate(items, 2, undefined)).toEqual({ items: ['a', 'b'], next: 'b' });
  });

  it('continues after last', () => {
    expect(paginate(items, 2, 'b')).toEqual({ items: ['c', 'd'], next: 'd' });
    expect(paginate(items, 2, 'd')).toEqual({ items: ['e'] });
  });

  it('has no next on the exact last page', () => {
    expect(paginate(items, 5, undefined)).toEqual({ items });
    expect(paginate(items, 3, 'b')).toEqual({ items: ['c', 'd', 'e'] });
  });

  it('walks the whole list in pages without gaps or repeats', () => {
    const seen: string[] = [];
    let last: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = paginate(items, 2, last);
      seen.push(...page.items);
      if (page.next === undefined) break;
      last = page.next;
    }
    expect(seen).toEqual(items);
  });

  it('treats last as a position, even when it is not in the list', () => {
    expect(paginate(items, undefined, 'bb')).toEqual({ items: ['c', 'd', 'e'] });
    expect(paginate(items, 10, '0')).toEqual({ items });
    expect(paginate(items, 10, 'z')).toEqual({ items: [] });
    expect(paginate(items, undefined, '')).toEqual({ items });
  });

  it('returns nothing for n=0', () => {
    expect(paginate(items, 0, undefined).items).toEqual([]);
  });

  it('handles an empty list', () => {
    expect(paginate([], 3, undefined)).toEqual({ items: [] });
    expect(paginate([], undefined, 'a')).toEqual({ items: [] });
  });

  it('compares by code unit order, the order the listings are sorted in', () => {
    const sorted = ['A', 'B', 'a', 'b', 'v1.0', 'v1.10', 'v1.9'];
    expect([...sorted].sort()).toEqual(sorted);
    expect(paginate(sorted, 2, 'B')).toEqual({ items: ['a', 'b'], next: 'b' });
    expect(paginate(sorted, undefined, 'v1.10')).toEqual({ items: ['v1.9'] });
  });
});
