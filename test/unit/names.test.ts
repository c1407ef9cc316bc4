import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/core/errors.js';
import { isValidName, isValidTag, lookupReference, parseName, parseReference } from '../../src/registry/names.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof OciError ? e.code : `not an OciError: ${String(e)}`;
  }
  return undefined;
}

describe('repository names', () => {
  it.each([
    'a',
    'library/ubuntu',
    'org/app',
    'org/team/app/cache',
    'a.b',
    'a_b',
    'a__b',
    'a-b',
    'a--b',
    'a---b',
    'a.b-c_d__e',
    '0',
    '0abc/1def',
    'x'.repeat(255),
    `${'a'.repeat(127)}/${'b'.repeat(127)}`,
  ])('accepts %s', (name) => {
    expect(isValidName(name)).toBe(true);
    expect(parseName(name)).toBe(name);
  });

  it.each([
    ['empty', ''],
    ['256 characters', 'x'.repeat(256)],
    ['256 characters in components', `${'a'.repeat(128)}/${'b'.repeat(127)}`],
    ['upper case', 'Org/app'],
    ['upper case in a later component', 'org/App'],
    ['dot-dot component', '..'],
    ['dot-dot segment', 'org/../etc'],
    ['dot-dot inside a component', 'a..b'],
    ['single dot component', 'org/./app'],
    ['leading separator', '.a'],
    ['trailing separator', 'a-'],
    ['leading dash', '-a'],
    ['trailing underscore', 'a_'],
    ['triple underscore', 'a___b'],
    ['mixed separators', 'a-_b'],
    ['dot then dash', 'a.-b'],
    ['absolute path', '/etc/passwd'],
    ['trailing slash', 'org/'],
    ['empty component', 'org//app'],
    ['backslash', 'org\\app'],
    ['NUL', 'org\u0000app'],
    ['percent', 'org%2fapp'],
    ['colon', 'org:app'],
    ['space', 'org app'],
    ['non-ascii', 'orgé'],
    ['newline', 'org\napp'],
  ])('rejects %s', (_what, name) => {
    expect(isValidName(name)).toBe(false);
    expect(codeOf(() => parseName(name))).toBe('NAME_INVALID');
  });

  it('keeps hostile input out of the error at a bounded size', () => {
    const long = 'A'.repeat(10_000);
    try {
      parseName(long);
      expect.unreachable('parseName should throw');
    } catch (e) {
      expect((e as OciError).message.length).toBeLessThan(400);
    }
  });
});

describe('tags', () => {
  it.each(['latest', 'main', 'v1.2.3', 'V1', '_private', '0', 'a-b_c.d', 'x'.repeat(128), 'buildcache-main'])(
    'accepts %s',
    (tag) => {
      expect(isValidTag(tag)).toBe(true);
      expect(parseReference(tag)).toEqual({ kind: 'tag', tag });
    },
  );

  it.each([
    ['empty', ''],
    ['129 characters', 'x'.repeat(129)],
    ['leading dot', '.hidden'],
    ['dot-dot', '..'],
    ['leading dash', '-x'],
    ['slash', 'a/b'],
    ['space', 'a b'],
    ['NUL', 'a\u0000'],
    ['percent', '%2e%2e'],
    ['plus', 'a+b'],
  ])('rejects %s', (_what, tag) => {
    expect(isValidTag(tag)).toBe(false);
    expect(codeOf(() => parseReference(tag))).toBe('TAG_INVALID');
  });
});

describe('manifest references', () => {
  const hex = 'a'.repeat(64);
  it('treats a reference with a colon as a digest', () => {
    const ref = parseReference(`sha256:${hex}`);
    expect(ref.kind).toBe('digest');
    if (ref.kind === 'digest') expect(ref.digest).toEqual({ algorithm: 'sha256', hex, value: `sha256:${hex}` });
  });

  it.each([`sha256:${hex.slice(1)}`, `sha256:${hex.toUpperCase()}`, `md5:${hex}`, 'sha256:', ':', `latest:${hex}`])(
    'rejects the digest-like reference %s as DIGEST_INVALID',
    (ref) => {
      expect(codeOf(() => parseReference(ref))).toBe('DIGEST_INVALID');
    },
  );
});

describe('lookup references (GET/HEAD/DELETE)', () => {
  const hex = 'b'.repeat(64);
  it('resolves tags and digests like parseReference', () => {
    expect(lookupReference('latest')).toEqual({ kind: 'tag', tag: 'latest' });
    expect(lookupReference(`sha256:${hex}`).kind).toBe('digest');
  });

  it('reports a string that cannot be a tag as an unknown manifest (404), not a bad request', () => {
    for (const ref of ['.hidden', '-x', 'x'.repeat(129), 'a+b']) expect(codeOf(() => lookupReference(ref))).toBe('MANIFEST_UNKNOWN');
  });

  it('keeps a malformed digest DIGEST_INVALID', () => {
    expect(codeOf(() => lookupReference('sha256:abc'))).toBe('DIGEST_INVALID');
    expect(codeOf(() => lookupReference(`sha256:${hex.toUpperCase()}`))).toBe('DIGEST_INVALID');
  });
});
